"""Dataset folder layouts (fseft_lab.data.layouts): phantom export, loading and input checks."""
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Orientationd

from fseft_lab.anatomy import dataset_template
from fseft_lab.data import phantom
from fseft_lab.data.layouts import MANIFEST, export_phantom, open_dataset, read_nifti, save_nifti
from fseft_lab.data.transforms import preprocess

SPACING = 6.0


# ----------------------------------------------------------------------------- helpers
def write_ts_case(root: Path, case: str, image, masks: dict, affine, mask_affine=None, ext=".nii.gz"):
    """A TotalSegmentator case: ct.nii.gz and segmentations/<name>.nii.gz (or .nii)."""
    (root / case / "segmentations").mkdir(parents=True, exist_ok=True)
    save_nifti(root / case / f"ct{ext}", image, affine)
    for name, mask in masks.items():
        save_nifti(root / case / "segmentations" / f"{name}{ext}", mask, affine if mask_affine is None else mask_affine)


def write_msd(root: Path, cases: dict, labels: dict, affine, label_affine=None, training=True):
    """An MSD folder: cases maps id -> (image, label map); labels is dataset.json's label block."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for case, (image, label) in cases.items():
        save_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image, affine)
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label, affine if label_affine is None else label_affine)
    info = {"labels": labels}
    if training:
        info["training"] = [{"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]
    (root / "dataset.json").write_text(json.dumps(info))


def small_case(shape=(20, 24, 12), seed=0):
    """A small CT-like volume with two box-shaped structures (values 1 and 2)."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000, np.int16)
    image[2:-2, 3:-3, 1:-1] = rng.normal(40, 30, (shape[0] - 4, shape[1] - 6, shape[2] - 2)).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[4:9, 5:12, 2:7] = 1
    label[11:17, 8:20, 4:10] = 2
    return image, label


def affine_of(spacing, origin):
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


# ----------------------------------------------------------------------------- export round trip
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ts = export_phantom(root / "ts", "totalsegmentator", cases=3, num_test=1, spacing=SPACING, progress=False)
    msd = export_phantom(root / "msd", "msd", cases=3, num_test=1, spacing=SPACING, progress=False)
    return ts, msd


def test_totalsegmentator_export_round_trip(exported):
    ts, _ = exported
    ds = open_dataset(ts.root)
    assert ds.layout == "totalsegmentator"
    assert ds.case_ids == ["s0000", "s0001", "s0002"]
    assert ds.test_ids == ["s0002"]
    labelled = {s for _, s, _ in phantom.ATOMS if s}
    assert set(ds.structures) == labelled
    for i, case_id in enumerate(ds.case_ids):
        vol = phantom.generate(0, i, "totalseg_like", SPACING)
        d = ds.load(case_id, ["liver", "aorta"])
        assert d["case"] == case_id and d["structures"] == ("liver", "aorta")
        assert d["image"].shape == (1, *vol.image.shape) and d["label"].shape == d["image"].shape
        assert d["image"].dtype == torch.float32
        assert np.array_equal(d["image"][0].numpy(), vol.image.astype(np.float32))
        assert np.allclose(d["image"].affine.numpy(), vol.affine)
        assert np.allclose(d["label"].affine.numpy(), vol.affine)
        expected = 1 * vol.mask("liver") + 2 * vol.mask("aorta")
        assert np.array_equal(d["label"][0].numpy(), expected)


def test_totalsegmentator_export_all_masks(exported):
    ts, _ = exported
    vol = phantom.generate(0, 1, "totalseg_like", SPACING)
    d = ts.load("s0001")  # every structure
    label = d["label"][0].numpy()
    for value, s in enumerate(d["structures"], start=1):
        assert np.array_equal(label == value, vol.mask(s)), s


def test_msd_export_round_trip(exported):
    _, msd = exported
    ds = open_dataset(msd.root)
    flare = dataset_template("flare22")
    assert ds.layout == "msd"
    assert ds.case_ids == ["FLARE22_Tr_0001", "FLARE22_Tr_0002", "FLARE22_Tr_0003"]
    assert ds.test_ids == ["FLARE22_Tr_0003"]
    assert ds.template == flare
    for i, case_id in enumerate(ds.case_ids):
        vol = phantom.generate(0, i, "flare_like", SPACING)
        raw, affine = read_nifti(msd.root / "labelsTr" / f"{case_id}.nii.gz")
        assert np.allclose(affine, vol.affine)
        for value, s in flare.items():
            assert np.array_equal(raw == value, vol.mask(s)), (case_id, s)
        d = ds.load(case_id)
        assert d["structures"] == tuple(flare.values())
        assert np.array_equal(d["image"][0].numpy(), vol.image.astype(np.float32))
        assert np.allclose(d["image"].affine.numpy(), vol.affine)
        label = d["label"][0].numpy()
        for value, s in enumerate(d["structures"], start=1):
            assert np.array_equal(label == value, vol.mask(s)), (case_id, s)
        # a subset, renumbered in the order asked for
        sub = ds.load(case_id, ["spleen", "liver"])["label"][0].numpy()
        assert np.array_equal(sub, 1 * vol.mask("spleen") + 2 * vol.mask("liver"))


def test_msd_template_override(exported):
    _, msd = exported
    assert open_dataset(msd.root, "flare22").template == dataset_template("flare22")
    custom = open_dataset(msd.root, {1: "liver"})
    assert custom.template == {1: "liver"}
    with pytest.warns(UserWarning, match="outside its template"):  # values 2..13 are not in it
        d = custom.load(custom.cases[0])
    assert d["structures"] == ("liver",) and set(np.unique(d["label"].numpy())) == {0, 1}
    assert torch.equal(d["label"], open_dataset(msd.root, "flare22").load(msd.cases[0], ["liver"])["label"])


def test_msd_refuses_a_structure_its_template_does_not_label(exported):
    _, msd = exported
    ds = open_dataset(msd.root)
    with pytest.raises(ValueError, match="does not label \\['heart_myocardium'\\]"):
        ds.load(ds.cases[0], ["liver", "heart_myocardium"])


# ----------------------------------------------------------------------------- reuse / refuse / atomic
def _export(out, **kw):
    args = dict(layout="msd", cases=2, num_test=1, spacing=SPACING, progress=False)
    args.update(kw)
    return export_phantom(out, **args)


def test_export_reuses_an_identical_dataset(tmp_path):
    out = tmp_path / "data"
    first = _export(out)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = _export(out)
    assert again.case_ids == first.case_ids
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes


def test_export_refuses_a_different_dataset_unless_overwrite(tmp_path):
    out = tmp_path / "data"
    _export(out)
    manifest = (out / MANIFEST).read_text()
    with pytest.raises(FileExistsError, match="different phantom dataset.*overwrite"):
        _export(out, cases=3)
    assert (out / MANIFEST).read_text() == manifest  # untouched
    ds = _export(out, cases=3, overwrite=True)
    assert len(ds.cases) == 3
    assert json.loads((out / MANIFEST).read_text())["cases"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary or old folder left


def test_export_refuses_a_folder_of_unrelated_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="files that are not this dataset"):
        _export(out)
    assert (out / "notes.txt").read_text() == "precious"
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_export_into_an_empty_folder(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    ds = _export(out)
    assert len(ds.cases) == 2 and json.loads((out / MANIFEST).read_text())["cases"] == 2
    # the files themselves, read with nibabel alone: each subject's CT and label map on its own grid
    flare = dataset_template("flare22")
    for i, case_id in enumerate(ds.case_ids):
        vol = phantom.generate(0, i, "flare_like", SPACING)
        ct = nib.load(str(out / "imagesTr" / f"{case_id}_0000.nii.gz"))
        label = nib.load(str(out / "labelsTr" / f"{case_id}.nii.gz"))
        for img in (ct, label):
            assert img.shape == vol.image.shape and np.allclose(img.affine, vol.affine), case_id
            assert np.allclose(nib.affines.voxel_sizes(img.affine), SPACING)
        assert np.array_equal(np.asarray(ct.dataobj), vol.image)
        values = np.asarray(label.dataobj)
        assert set(np.unique(values)) <= {0, *flare} and (values == 1).any()   # FLARE22's 0-13, the liver shown
        for value, s in flare.items():
            assert np.array_equal(values == value, vol.mask(s)), (case_id, s)


def _failing_generate(monkeypatch, fail_on: int):
    real, calls = phantom.generate, []

    def generate(*args, **kwargs):
        calls.append(args)
        if len(calls) == fail_on:
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(phantom, "generate", generate)
    return calls


@pytest.mark.parametrize("layout", ["totalsegmentator", "msd"])
def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch, layout):
    calls = _failing_generate(monkeypatch, fail_on=2)
    out = tmp_path / "data"
    with pytest.raises(RuntimeError, match="interrupted"):
        _export(out, layout=layout, cases=3, workers=1)  # in this process, where the stand-in counts its calls
    assert len(calls) == 2  # the first case was written before the failure
    assert not out.exists()
    assert not list(tmp_path.glob(".data.tmp-*"))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "data"
    _export(out, cases=2)
    manifest = (out / MANIFEST).read_text()
    _failing_generate(monkeypatch, fail_on=2)
    with pytest.raises(RuntimeError):
        _export(out, cases=3, overwrite=True, workers=1)
    assert (out / MANIFEST).read_text() == manifest
    assert len(open_dataset(out).cases) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


# ----------------------------------------------------------------------------- orientation
ANISO = (1.5, 2.0, 3.0)


def _ras_and_lps(shape=(20, 24, 12)):
    image, label = small_case(shape)
    ras = affine_of(ANISO, (-10.0, 20.0, 5.0))
    flip = np.array([[-1, 0, 0, shape[0] - 1], [0, -1, 0, shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    lps = ras @ flip  # voxel (i, j, k) of the flipped arrays is voxel (X-1-i, Y-1-j, k) of the RAS ones
    return (image, label, ras), (image[::-1, ::-1].copy(), label[::-1, ::-1].copy(), lps)


def _write(root: Path, layout: str, image, label, affine):
    if layout == "totalsegmentator":
        write_ts_case(root, "c0", image, {"liver": (label == 1).astype(np.uint8), "spleen": (label == 2).astype(np.uint8)}, affine)
    else:
        write_msd(root, {"c0": (image, label)}, {"0": "background", "1": "liver", "2": "spleen"}, affine)
    return open_dataset(root).load("c0", ["liver", "spleen"])


@pytest.mark.parametrize("layout", ["totalsegmentator", "msd"])
def test_lps_and_ras_files_load_alike(tmp_path, layout):
    (ri, rl, ra), (li, ll, la) = _ras_and_lps()
    # the same world point under both affines holds the same value
    world = ra @ np.array([3, 5, 7, 1.0])
    i, j, k, _ = np.rint(np.linalg.inv(la) @ world).astype(int)
    assert li[i, j, k] == ri[3, 5, 7]
    d_ras = _write(tmp_path / "ras", layout, ri, rl, ra)
    d_lps = _write(tmp_path / "lps", layout, li, ll, la)
    assert nib.aff2axcodes(d_lps["image"].affine.numpy()) == ("L", "P", "S")
    assert nib.aff2axcodes(d_ras["image"].affine.numpy()) == ("R", "A", "S")
    assert not np.array_equal(d_ras["image"].numpy(), d_lps["image"].numpy())  # as stored, they differ

    orient = Orientationd(keys=["image", "label"], axcodes="RAS", labels=None)
    o_ras, o_lps = orient(dict(d_ras)), orient(dict(d_lps))
    for key in ("image", "label"):
        assert np.array_equal(o_ras[key].numpy(), o_lps[key].numpy()), key
        assert np.allclose(o_ras[key].affine.numpy(), o_lps[key].affine.numpy()), key
    assert np.array_equal(o_ras["label"][0].numpy(), rl)

    chain = preprocess(spacing_mm=2.5)
    p_ras, p_lps = chain(dict(d_ras)), chain(dict(d_lps))
    for key in ("image", "label"):
        assert p_ras[key].shape == p_lps[key].shape
        assert torch.equal(p_ras[key].as_tensor(), p_lps[key].as_tensor()), key
        assert np.allclose(p_ras[key].affine.numpy(), p_lps[key].affine.numpy()), key
    assert set(torch.unique(p_ras["label"]).tolist()) == {0, 1, 2}


# ----------------------------------------------------------------------------- bad input
def test_label_shape_mismatch(tmp_path):
    image, label = small_case()
    write_ts_case(tmp_path, "c0", image, {"liver": (label == 1)[:, :, :-1].astype(np.uint8)}, np.eye(4))
    with pytest.raises(ValueError, match=r"liver\.nii\.gz has shape \(20, 24, 11\) but its image has \(20, 24, 12\)"):
        open_dataset(tmp_path).load("c0")


def test_label_affine_mismatch(tmp_path):
    image, label = small_case()
    shifted = affine_of((1, 1, 1), (0, 0, 5.0))
    write_msd(tmp_path, {"c0": (image, label)}, {"0": "background", "1": "liver", "2": "spleen"}, np.eye(4), label_affine=shifted)
    with pytest.raises(ValueError, match=r"labelsTr/c0\.nii\.gz has affine"):
        open_dataset(tmp_path).load("c0")


def test_msd_label_values_outside_the_template_are_background_with_a_warning(tmp_path):
    image, label = small_case()
    label[0, 0, 0] = 7
    write_msd(tmp_path, {"c0": (image, label)}, {"0": "background", "1": "liver", "2": "spleen"}, np.eye(4))
    with pytest.warns(UserWarning, match=r"c0\.nii\.gz holds values \[7\] outside its template \[0, 1, 2\]"):
        d = open_dataset(tmp_path).load("c0")
    assert d["label"][0, 0, 0, 0] == 0
    expected = label.copy()
    expected[0, 0, 0] = 0
    assert np.array_equal(d["label"][0].numpy(), expected)


def test_non_binary_totalsegmentator_mask(tmp_path):
    image, label = small_case()
    write_ts_case(tmp_path, "c0", image, {"liver": (label == 1).astype(np.uint8), "spleen": label}, np.eye(4))
    with pytest.raises(ValueError, match=r"spleen\.nii\.gz holds values \[2\]"):
        open_dataset(tmp_path).load("c0")


def test_non_integer_label(tmp_path):
    image, label = small_case()
    write_msd(tmp_path, {"c0": (image, label.astype(np.float32) * 0.5)}, {"0": "background", "1": "liver"}, np.eye(4))
    with pytest.raises(ValueError, match=r"c0\.nii\.gz holds non-integer values"):
        open_dataset(tmp_path).load("c0")


def test_missing_mask_for_a_requested_structure(tmp_path):
    image, label = small_case()
    write_ts_case(tmp_path, "c0", image, {"liver": (label == 1).astype(np.uint8)}, np.eye(4))
    ds = open_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="no mask for 'aorta'"):
        ds.load("c0", ["liver", "aorta"])
    with pytest.raises(FileNotFoundError, match="no mask for 'livr'"):    # any name may be a structure: a missing file
        ds.load("c0", ["livr"])
    with pytest.raises(KeyError, match="'c9'"):
        ds.load("c9")


def test_missing_ct_in_a_case_folder(tmp_path):
    image, label = small_case()
    write_ts_case(tmp_path, "c0", image, {"liver": (label == 1).astype(np.uint8)}, np.eye(4))
    write_ts_case(tmp_path, "c1", image, {"liver": (label == 1).astype(np.uint8)}, np.eye(4))
    (tmp_path / "c1" / "ct.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "c1")) + " has no ct.nii.gz"):
        open_dataset(tmp_path)


def test_msd_json_lists_a_missing_file(tmp_path):
    image, label = small_case()
    write_msd(tmp_path, {"c0": (image, label)}, {"0": "background", "1": "liver", "2": "spleen"}, np.eye(4))
    (tmp_path / "labelsTr" / "c0.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"labelsTr/c0\.nii\.gz, which does not exist"):
        open_dataset(tmp_path)


def test_nonexistent_or_unrecognised_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nothing_here"))):
        open_dataset(tmp_path / "nothing_here")
    (tmp_path / "random.txt").write_text("x")
    with pytest.raises(ValueError, match="neither a TotalSegmentator folder"):
        open_dataset(tmp_path)


def test_four_d_image(tmp_path):
    image, label = small_case()
    label = (label == 1).astype(np.uint8)
    write_msd(tmp_path / "ok", {"c0": (image[..., None], label)}, {"0": "background", "1": "liver"}, np.eye(4))
    assert open_dataset(tmp_path / "ok").load("c0")["image"].shape == (1, *image.shape)  # (X, Y, Z, 1) is squeezed
    write_msd(tmp_path / "bad", {"c0": (np.stack([image, image], -1), label)}, {"0": "background", "1": "liver"}, np.eye(4))
    with pytest.raises(ValueError, match=r"c0_0000\.nii\.gz is 4-D"):
        open_dataset(tmp_path / "bad").load("c0")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(layout="nnunet"), ValueError, "unknown layout 'nnunet'"),
    (dict(cases=0), ValueError, "cases must be >= 1, got 0"),
    (dict(cases=-2), ValueError, "cases must be >= 1, got -2"),
    (dict(cases=2, num_test=2), ValueError, r"num_test=2 must be in \[0, cases=2\)"),
    (dict(domain="hospital_x"), ValueError, "'hospital_x'"),
    (dict(spacing=0.0), ValueError, "spacing must be > 0 mm, got 0.0"),
    (dict(layout="msd", template="nosuchdata"), ValueError, "'nosuchdata'"),
])
def test_export_bad_arguments(tmp_path, kwargs, error, message):
    args = dict(cases=2, num_test=1, spacing=SPACING, progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        export_phantom(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- MSD label-name formats
def test_msd_without_training_list_and_with_nnunet_v2_labels(tmp_path):
    image, label = small_case()
    write_msd(tmp_path, {"c1": (image, label), "c0": (image, label)}, {"background": 0, "liver": 1, "spleen": 2},
              np.eye(4), training=False)
    ds = open_dataset(tmp_path)
    assert ds.template == {1: "liver", 2: "spleen"}
    assert ds.case_ids == ["c0", "c1"]
    assert np.array_equal(ds.load("c1")["label"][0].numpy(), label)


# ----------------------------------------------------------------------------- unsided kidney
@pytest.mark.parametrize("axis_signs", [(1, 1), (-1, -1), (-1, 1)], ids=["RAS", "LPS", "LAS"])
def test_unsided_kidney_is_split_at_the_image_centre(tmp_path, axis_signs):
    shape = (20, 10, 6)
    image = np.zeros(shape, np.int16)
    label = np.zeros(shape, np.uint8)
    label[2:5, 3:6, 2:4] = 1     # low voxel index
    label[14:17, 3:6, 2:4] = 1   # high voxel index
    affine = affine_of((2.0 * axis_signs[0], 2.0 * axis_signs[1], 2.0), (0.0, 0.0, 0.0))
    write_msd(tmp_path, {"k": (image, label)}, {"0": "background", "1": "kidney"}, affine)
    ds = open_dataset(tmp_path)
    assert ds.template == {1: "kidney"}
    out = ds.load("k", ["kidney_right", "kidney_left"])["label"][0].numpy()
    low, high = out[2:5, 3:6, 2:4], out[14:17, 3:6, 2:4]
    # RAS: +x is the patient's right, so the blob at larger world x is the right kidney
    right, left = (high, low) if axis_signs[0] > 0 else (low, high)
    assert (right == 1).all() and (left == 2).all()
    assert (out > 0).sum() == (label > 0).sum()
    # one side only: the other blob stays background
    only_left = ds.load("k", ["kidney_left"])["label"][0].numpy()
    assert (only_left == 1).sum() == left.size and (only_left > 0).sum() == left.size
    # default structures: an unsided name is loaded as its two sides
    default = ds.load("k")
    assert default["structures"] == ("kidney_right", "kidney_left")
    assert np.array_equal(default["label"][0].numpy(), out)


@pytest.mark.slow
def test_cases_missing_a_mask_are_reported_and_left_out_of_the_task(tmp_path):
    from fseft_lab.experiments import RunOptions, run
    from fseft_lab.models.zoo import load_foundation

    ts = export_phantom(tmp_path / "ts", "totalsegmentator", cases=4, num_test=1, spacing=6.0, progress=False)
    ds = open_dataset(ts.root)
    (ds.case(ds.case_ids[0]).labels["liver"]).unlink()     # a training case without its liver mask
    ds = open_dataset(ts.root)
    assert ds.lacking(["liver", "spleen"]) == {ds.case_ids[0]: ["liver"]}
    with pytest.raises(FileNotFoundError, match=f"case '{ds.case_ids[0]}' has no mask for 'liver'"):
        ds.load(ds.case_ids[0], ["liver"])
    # k = 2 takes the whole pool once the case without a mask is out; with it, loading would fail
    with pytest.warns(UserWarning, match=rf"1 case\(s\) .* left out: {ds.case_ids[0]} \(no liver\)"):
        rows, _ = run(load_foundation("phantom_cpu"), ds, "liver", "zero_shot", 2, 0, RunOptions(profile="cpu", progress=False))
    assert list(rows.case) == ds.test_ids


@pytest.mark.parametrize("name, text", [("map.json", '{"liver": 1, "spleen": 2}'), ("map.yaml", "1: liver\n2: spleen\n"),
                                        ("map.yml", "background: 0\nliver: 1\nspleen: 2\n")])
def test_msd_folder_with_a_user_label_map_file(tmp_path, name, text):
    image, label = small_case()
    write_msd(tmp_path / "data", {"c0": (image, label)}, {"0": "background", "1": "thing_a", "2": "thing_b"}, np.eye(4))
    (tmp_path / name).write_text(text)
    ds = open_dataset(tmp_path / "data", tmp_path / name)
    assert ds.template == {1: "liver", 2: "spleen"}
    d = ds.load("c0", ["spleen"])
    assert np.array_equal(d["label"][0].numpy(), (label == 2).astype(np.uint8))


@pytest.mark.parametrize("text, message", [
    ('{"liver": 0}', r"'liver' has value 0; label values are integers >= 1"),
    ('{"liver": 1, "spleen": 1}', r"value 1 names both 'liver' and 'spleen'"),
    ('{"liver/left": 1}', r"structure name 'liver/left' must be a word without ',' or '/'"),
    ('["liver"]', r"must map structure names to label values"),
    ('{"liver": 1', r"cannot be read"),
])
def test_bad_label_map_files_are_refused_with_the_entry(tmp_path, text, message):
    image, label = small_case()
    write_msd(tmp_path / "data", {"c0": (image, label)}, {"0": "background", "1": "liver"}, np.eye(4))
    (tmp_path / "map.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        open_dataset(tmp_path / "data", tmp_path / "map.json")


def test_totalsegmentator_case_stored_as_uncompressed_nii(tmp_path):
    image, label = small_case()
    write_ts_case(tmp_path, "c0", image, {"liver": (label == 1).astype(np.uint8), "spleen": (label == 2).astype(np.uint8)},
                  np.eye(4), ext=".nii")
    ds = open_dataset(tmp_path)
    assert ds.case("c0").image.name == "ct.nii" and set(ds.case("c0").labels) == {"liver", "spleen"}
    d = ds.load("c0", ["spleen", "liver"])
    assert np.array_equal(d["label"][0].numpy(), np.where(label == 2, 1, np.where(label == 1, 2, 0)))


def test_a_label_map_value_that_never_occurs_is_refused_before_training(tmp_path):
    from fseft_lab.experiments import RunOptions, run
    from fseft_lab.models.zoo import load_foundation

    image, label = small_case(shape=(64, 64, 64))
    label[label == 2] = 1                                        # the files hold value 1 only
    write_msd(tmp_path / "data", {f"c{i}": (image, label) for i in range(7)}, {"0": "background", "1": "a", "2": "b"}, np.eye(4))
    (tmp_path / "map.json").write_text('{"liver": 1, "spleen": 2}')
    ds = open_dataset(tmp_path / "data", tmp_path / "map.json")
    with pytest.raises(ValueError, match=r"'spleen' \(label value 2 in its label map\) has no voxel in any of the 7 cases"):
        run(load_foundation("phantom_cpu"), ds, "spleen", "zero_shot", 1, 0, RunOptions(profile="cpu", progress=False))
