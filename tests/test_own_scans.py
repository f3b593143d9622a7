"""A user's own few scans: `adapt` with any number of labelled volumes, outputs checked before work."""
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import fseft_lab.data.layouts
import fseft_lab.models.zoo
from fseft_lab.anatomy import NOVEL_GROUPS, UNIVERSAL_TEMPLATE, is_novel, task_structures
from fseft_lab.cli import main
from fseft_lab.data.layouts import export_phantom, open_dataset, save_nifti
from fseft_lab.methods import build, save_adapter
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.outputs import OutputError, atomic_write, writable_file


@pytest.fixture(scope="module")
def three_scans(tmp_path_factory):
    """Three labelled scans that mark no test case, as a user's own folder would."""
    root = tmp_path_factory.mktemp("own") / "msd"
    return export_phantom(root, "msd", cases=3, seed=5, spacing=6.0, template="flare22", num_test=0, progress=False)


@pytest.fixture
def no_training(monkeypatch):
    """Loading the foundation model is the first step of training: here it fails the test."""
    def load(*args, **kwargs):
        raise AssertionError("the foundation model was loaded: the request should have failed before any training")

    monkeypatch.setattr(fseft_lab.models.zoo, "load_foundation", load)


def _adapt(dataset, tmp_path, *extra):
    return main(["adapt", "--data", str(dataset.root), "--task", "liver", "--method", "linear_probe", "--profile", "cpu",
                 "--epochs", "1", *extra])


@pytest.mark.parametrize("extra, message", [
    (["--num-test", "5"], "num_test=5 and k=1 need 6 labelled volumes (5 test + 1 support); the task has 3"),
    (["--k", "3"], "num_test=1 and k=3 need 4 labelled volumes (1 test + 3 support); the task has 3"),
    (["--test-cases", "FLARE22_Tr_0009"], "test cases ['FLARE22_Tr_0009'] are not among the task's 3 labelled volumes"),
    (["--leave-one-out", "--k", "3"], "--leave-one-out with k=3 needs 4 labelled volumes that show liver"),
    (["--deploy"], "--deploy scores nothing, so its adapter is all it makes: give --save-adapter FILE"),
    (["--deploy", "--save-adapter", "a.pt", "--k", "2"], "--deploy trains on every labelled volume that shows liver (3)"),
    (["--num-test", "0"], "k=1 leaves no test volume to score among the 3 that show liver"),
])
def test_a_split_the_scans_cannot_give_fails_in_one_line_before_training(three_scans, tmp_path, capsys, no_training,
                                                                          extra, message):
    out = ["--out", str(tmp_path / "rows.csv")]
    assert _adapt(three_scans, tmp_path, *out, *[str(tmp_path / e) if e == "a.pt" else e for e in extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "rows.csv").exists()


@pytest.mark.parametrize("option", ["--out", "--save-adapter"])
def test_an_unwritable_output_fails_before_any_data_is_read(three_scans, tmp_path, capsys, monkeypatch, no_training, option):
    def never(*args, **kwargs):
        raise AssertionError("the dataset was read before the outputs were checked")

    monkeypatch.setattr(fseft_lab.data.layouts, "open_dataset", never)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    paths = {"--out": tmp_path / "rows.csv", "--save-adapter": tmp_path / "a.pt", option: blocker / "sub" / "x"}
    assert _adapt(three_scans, tmp_path, *[str(v) for kv in paths.items() for v in kv]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the file {blocker / 'sub' / 'x'}: cannot write to the folder {blocker / 'sub'}: {blocker} is a file" in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_a_few_scans_save_an_adapter_on_all_of_them_then_predict(three_scans, tmp_path, capsys):
    adapter = tmp_path / "liver.pt"
    assert _adapt(three_scans, tmp_path, "--deploy", "--save-adapter", str(adapter)) == 0
    out = capsys.readouterr().out
    assert "k=3 seed=0: trained on 3 volume(s), none left to score" in out
    assert torch.load(adapter, weights_only=True)["meta"]["support"] == three_scans.case_ids
    seg = tmp_path / "seg.nii.gz"
    assert main(["predict", "--adapter", str(adapter), "-i", str(three_scans.cases[0].image), "-o", str(seg)]) == 0
    assert seg.is_file() and "1 = liver" in capsys.readouterr().out


@pytest.mark.slow
def test_leave_one_out_scores_every_scan_once(three_scans, tmp_path, capsys):
    out = tmp_path / "loo.csv"
    assert _adapt(three_scans, tmp_path, "--leave-one-out", "--out", str(out)) == 0
    rows = pd.read_csv(out)
    assert sorted(rows.case) == three_scans.case_ids
    assert "leave-one-out: Dice" in capsys.readouterr().out


def test_phantom_export_of_two_cases_keeps_one_for_testing(tmp_path, capsys):
    assert main(["phantom", "export", str(tmp_path / "two"), "--cases", "2", "--spacing", "8"]) == 0
    assert "wrote 2 cases (1 test)" in capsys.readouterr().out


def test_a_write_that_fails_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "rows.csv"
    with pytest.raises(OutputError, match=f"cannot write {target}: enforce fail"):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("enforce fail at inline_container.cc:603")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match=f"cannot write the file {tmp_path}: it is a folder"):
        writable_file(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    model = build(FoundationModel(12), "linear_probe", ["liver"])
    with pytest.raises(OutputError, match=f"cannot write {blocker / 'liver.pt'}"):
        save_adapter(model, blocker / "liver.pt")


def test_the_command_prints_a_warning_as_one_line():
    """Outside pytest (which records warnings itself): a command whose work warns."""
    script = ("import warnings, fseft_lab.cli.course as course\n"
              "course._domains = lambda args: warnings.warn('the scan is oblique')\n"
              "from fseft_lab.cli import main\n"
              "main(['phantom', 'domains'])\n")
    done = subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "UserWarning: the scan is oblique\n"


def test_any_structure_the_data_names_is_a_task():
    named = ("liver", "heart", "colon", "right kidney")
    assert task_structures("heart", named) == (("heart",), False)            # TotalSegmentator v2: the whole heart
    assert task_structures("heart") == (NOVEL_GROUPS["heart"], True)          # without it: the paper's chambers
    assert task_structures("colon", named) == (("colon",), False) and is_novel("colon")
    assert task_structures("liver,colon", named) == (("liver", "colon"), True)
    assert task_structures("all", named) == (named, True)
    with pytest.raises(ValueError, match=r"unknown task 'colon'.*several names joined by commas"):
        task_structures("colon")
    with pytest.raises(ValueError, match="names a structure twice"):
        task_structures("liver,liver", named)


def test_a_novel_structure_gets_a_new_head_row_and_a_known_one_its_pretrained_row():
    foundation = FoundationModel(12)
    model = build(foundation, "linear_probe", ["liver", "colon"], multiclass=True)
    assert model.task_structures == ("background", "liver", "colon")
    liver = UNIVERSAL_TEMPLATE.index("liver")
    assert torch.equal(model.classifier.weight[1], foundation.classifier.weight[liver])
    assert not torch.equal(model.classifier.weight[2], foundation.classifier.weight[liver])


@pytest.fixture(scope="module")
def v2_and_task03(tmp_path_factory):
    """A TotalSegmentator v2-like folder (a whole-heart mask and colon beside the template's organs) and an
    MSD-like one whose dataset.json names its labels in its own words ('Liver', 'cancer')."""
    root = tmp_path_factory.mktemp("names")
    ts = export_phantom(root / "ts", "totalsegmentator", cases=2, seed=1, spacing=8.0, num_test=0, progress=False)
    for case in ts.cases:
        chambers = [nib.load(str(case.labels[s])) for s in NOVEL_GROUPS["heart"]]
        heart = np.any([np.asarray(c.dataobj) > 0 for c in chambers], axis=0).astype(np.uint8)
        save_nifti(case.labels["liver"].with_name("heart.nii.gz"), heart, chambers[0].affine)
        save_nifti(case.labels["liver"].with_name("colon.nii.gz"), np.zeros_like(heart), chambers[0].affine)
        for s in NOVEL_GROUPS["heart"]:
            case.labels[s].unlink()                       # v2 keeps the chambers in another sub-task
    msd = export_phantom(root / "task03", "msd", cases=2, seed=1, spacing=8.0, template="lits", num_test=0, progress=False)
    info = json.loads((msd.root / "dataset.json").read_text())
    info["labels"] = {"0": "background", "1": "Liver", "2": "cancer"}      # as MSD names its own (Vessel, cancer)
    (msd.root / "dataset.json").write_text(json.dumps(info))
    return open_dataset(ts.root), open_dataset(msd.root)


def test_totalsegmentator_v2_heart_is_one_structure_and_colon_a_novel_one(v2_and_task03):
    ts, _ = v2_and_task03
    assert {"heart", "colon"} <= set(ts.structures) and "heart_myocardium" not in ts.structures
    assert task_structures("heart", ts.structures) == (("heart",), False)
    cases = [ts.load(c, ("heart", "colon")) for c in ts.cases]
    assert all(c["structures"] == ("heart", "colon") and not (c["label"] == 2).any() for c in cases)
    assert any((c["label"] == 1).any() for c in cases)


def test_msd_names_that_differ_from_the_template_point_to_a_label_map(v2_and_task03, tmp_path):
    _, msd = v2_and_task03
    assert task_structures("Liver", msd.structures) == (("Liver",), False) and is_novel("Liver")
    assert (msd.load(msd.cases[0], ("Liver",))["label"] == 1).any()              # a novel structure under its own name
    with pytest.raises(ValueError, match=r"does not label \['liver'\]; its labels are \['Liver', 'cancer'\].*"
                                         r"map it through a label map \(--template map.json"):
        msd.load(msd.cases[0], ("liver",))
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"liver": 1, "liver_tumor": 2}))
    mapped = open_dataset(msd.root, label_map)
    assert (mapped.load(mapped.cases[0], ("liver",))["label"] == 1).any()       # the template's liver: its pre-trained row
