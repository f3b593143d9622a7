"""`fseft-lab predict`: a label map on the input's own grid, for awkward real-world NIfTI files."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fseft_lab.cli import main
from fseft_lab.methods import build, save_adapter
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.predict import label_map

BODY = (slice(10, 30), slice(6, 22), slice(4, 14))  # an off-centre box: a flipped axis would move it


def _ct(path, affine, shape=(40, 30, 20), slope=None, fourth_axis=False):
    """Air (-1000 HU) with a soft-tissue box; optionally int16 with a scale/slope, or (X, Y, Z, 1)."""
    hu = np.full(shape, -1000.0)
    hu[BODY] = 40.0
    if slope:
        img = nib.Nifti1Image(np.round((hu + 1024) / slope).astype(np.int16), affine)
        img.header.set_slope_inter(slope, -1024)
    else:
        img = nib.Nifti1Image((hu[..., None] if fourth_axis else hu).astype(np.float32), affine)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A foundation checkpoint and a linear-probe adapter whose head says 'liver' everywhere."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    foundation = FoundationModel(12)
    torch.save(foundation.state_dict(), root / "foundation.pt")
    model = build(foundation, "linear_probe", ["liver"])
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(10.0)
    save_adapter(model, root / "liver.pt", profile="cpu", checkpoint=str(root / "foundation.pt"))
    return root


AFFINES = {
    "RAS, anisotropic": np.diag([2.5, 3.2, 4.0, 1.0]),
    "LPS (DICOM-like)": np.diag([-2.5, -3.2, 4.0, 1.0]),
    "oblique": np.array([[2.4, 0.5, 0.0, -40.0], [-0.5, 2.4, 0.0, 20.0], [0.0, 0.0, 4.0, 7.0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.slow
def test_the_label_map_has_the_inputs_grid_and_the_models_labels(files, tmp_path, name, capsys):
    ct = _ct(tmp_path / "ct scan é.nii.gz", AFFINES[name])
    out = tmp_path / "out dir" / "seg.nii.gz"
    assert main(["predict", "--adapter", str(files / "liver.pt"), "--input", str(ct), "--out", str(out)]) == 0
    assert "1 = liver" in capsys.readouterr().out
    seg = nib.load(str(out))
    assert np.allclose(seg.affine, nib.load(str(ct)).affine) and seg.shape == (40, 30, 20)
    labels = np.asarray(seg.dataobj)
    assert set(np.unique(labels)) == {0, 1}
    assert labels[BODY].all()                                     # the model says "liver" on the whole body
    outside = np.ones(labels.shape, bool)
    outside[8:32, 4:24, 2:16] = False                             # beyond the body crop's margin
    assert not labels[outside].any()
    assert not list(out.parent.glob(".*tmp*"))


@pytest.mark.slow
def test_scaled_integers_nii_and_a_singleton_fourth_axis(files, tmp_path):
    for ct in (_ct(tmp_path / "int.nii", AFFINES["RAS, anisotropic"], slope=2.0),
               _ct(tmp_path / "four.nii.gz", AFFINES["RAS, anisotropic"], fourth_axis=True)):
        out = tmp_path / f"{ct.name.split('.')[0]}_seg.nii.gz"
        assert main(["predict", "--adapter", str(files / "liver.pt"), "--input", str(ct), "--out", str(out)]) == 0
        labels = np.asarray(nib.load(str(out)).dataobj)
        assert labels.shape == (40, 30, 20) and labels[BODY].all() and labels.sum() < labels.size / 2


def test_bad_inputs_name_the_file(files, tmp_path, capsys):
    base = ["predict", "--adapter", str(files / "liver.pt"), "--out", str(tmp_path / "seg.nii.gz")]
    assert main(base + ["--input", str(tmp_path / "missing.nii.gz")]) == 2
    assert "no such image" in capsys.readouterr().err
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    assert main(base + ["--input", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "broken.nii.gz" in err
    assert main(["predict", "--adapter", str(broken), "--input", str(broken), "--out", str(tmp_path / "s.nii.gz")]) == 2
    assert "cannot read adapter file" in capsys.readouterr().err
    assert not (tmp_path / "seg.nii.gz").exists()


def test_an_unwritable_output_fails_early_and_a_full_disk_leaves_nothing(files, tmp_path, capsys, monkeypatch):
    import errno

    import fseft_lab.predict

    ct = _ct(tmp_path / "ct.nii.gz", AFFINES["RAS, anisotropic"])
    (tmp_path / "a file").write_text("not a folder")
    calls = []

    def inference(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the inference ran before the output folder was checked")
    monkeypatch.setattr(fseft_lab.predict, "segment", inference)
    assert main(["predict", "--adapter", str(files / "liver.pt"), "--input", str(ct),
                 "--out", str(tmp_path / "a file" / "seg.nii.gz")]) == 2
    assert "cannot write to" in capsys.readouterr().err and calls == []
    monkeypatch.undo()

    def full_disk(path, *args, **kwargs):
        Path(path).write_bytes(b"\x1f\x8b")                                    # a few bytes, then no space
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fseft_lab.predict, "save_nifti", full_disk)
    out = tmp_path / "out" / "seg.nii.gz"
    assert main(["predict", "--adapter", str(files / "liver.pt"), "--input", str(ct), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out}: No space left on device" in err
    assert list(out.parent.iterdir()) == []


def test_label_values_follow_the_structures():
    masks = torch.zeros(1, 2, 2, 1, 1)
    masks[0, 0, 0], masks[0, 1, 1] = 1, 1
    assert label_map(masks, False).flatten().tolist() == [1, 2]
    assert label_map(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]).view(1, 2, 2, 1, 1), True).flatten().tolist() == [1, 0]


@pytest.mark.slow
def test_round_trip_adapt_save_adapter_then_predict_on_a_test_scan(tmp_path, capsys):
    """A user's path end to end: adapt on a folder, save the adapter, segment a scan with it. The
    written map lies on the scan's grid and scores what the adaptation's own evaluation scored."""
    import pandas as pd

    data = tmp_path / "my data"
    assert main(["phantom", "export", str(data), "--cases", "2", "--num-test", "1", "--spacing", "3",
                 "--domain", "totalseg_like"]) == 0
    adapter, rows = tmp_path / "spleen.pt", tmp_path / "rows.csv"
    assert main(["adapt", "--data", str(data), "--task", "spleen", "--method", "linear_probe", "--k", "1",
                 "--seeds", "0", "--epochs", "30", "--profile", "cpu", "--out", str(rows), "--save-adapter", str(adapter),
                 "--cache", str(tmp_path / "cache")]) == 0
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2       # the support and the test scan
    row = pd.read_csv(rows).iloc[0]
    ct, truth = data / row.case / "ct.nii.gz", data / row.case / "segmentations" / "spleen.nii.gz"
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", "--adapter", str(adapter), "--input", str(ct), "--out", str(out)]) == 0
    seg, reference = nib.load(str(out)), nib.load(str(ct))
    assert np.allclose(seg.affine, reference.affine) and seg.shape == reference.shape
    predicted, expected = np.asarray(seg.dataobj) == 1, np.asarray(nib.load(str(truth)).dataobj) > 0
    dice = 2 * (predicted & expected).sum() / (predicted.sum() + expected.sum())
    assert row.dice > 0.3                      # the adapter learned something worth comparing
    assert dice == pytest.approx(row.dice, abs=0.02)


@pytest.mark.slow
def test_a_folder_of_scans_gives_one_label_map_each_named_as_its_scan(files, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("case_a_0000.nii.gz", "case_b.nii"):
        _ct(scans / name, AFFINES["RAS, anisotropic"])
    (scans / "notes.txt").write_text("not a scan")
    out = tmp_path / "segs"
    assert main(["predict", "--adapter", str(files / "liver.pt"), "-i", str(scans), "-o", str(out)]) == 0
    assert "wrote 2 label maps to" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["case_a.nii.gz", "case_b.nii"]
    assert main(["predict", "--adapter", str(files / "liver.pt"), "-i", str(scans), "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "is a folder of 2 scans: -o must be a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--adapter", str(files / "liver.pt"), "-i", str(tmp_path / "empty"), "-o", str(out)]) == 2
    assert "holds no scan" in capsys.readouterr().err
