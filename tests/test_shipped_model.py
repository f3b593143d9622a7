"""The shipped phantom foundation model: it loads, its file is the one the manifest describes,
and it still segments the manifest's check case as well as the manifest says."""
import pytest
import torch

from fseft_lab.models import zoo
from fseft_lab.pretrain import zero_shot_phantoms


@pytest.fixture(scope="module")
def manifest():
    return zoo.manifest("phantom_cpu")


def test_checksum_matches_the_manifest(manifest):
    path = zoo.local_path(zoo.get_checkpoint("phantom_cpu"))
    assert zoo.sha256(path) == manifest["sha256"]
    assert path.stat().st_size == manifest["size_bytes"] < 20e6


def test_manifest_records_how_it_was_made(manifest):
    assert manifest["command"].startswith("fseft-lab pretrain")
    for key in ("seed", "steps", "train_seconds", "software", "hardware", "zero_shot_dice"):
        assert key in manifest
    assert set(manifest["zero_shot_dice"]["per_domain"]) >= {"btcv_like", "totalseg_like", "flare_like"}


def test_lineage_and_log_tell_the_same_history(manifest):
    """Every run back to the first: each started from the weights the previous one shipped, and
    the log holds exactly their steps, numbered on."""
    import pandas as pd

    lineage = manifest["lineage"]
    assert lineage[-1]["sha256"] == manifest["sha256"] and lineage[-1]["steps"] == manifest["steps"]
    if len(lineage) > 1:
        assert manifest["init"]["sha256"] == lineage[-2]["sha256"]
    assert all(r["command"].startswith("fseft-lab pretrain") for r in lineage)
    log = pd.read_csv(zoo.WEIGHTS_DIR / "phantom_cpu_log.csv")
    assert log.groupby("run").size().tolist() == [r["steps"] for r in lineage]
    assert log.step.tolist() == list(range(len(log)))


def test_loads_without_missing_keys():
    model = zoo.load_foundation("phantom_cpu")
    assert model.load_report.missing == [] and model.load_report.unexpected == []
    assert model.feature_size == 12


def test_check_case_dice_matches_the_manifest(manifest, tmp_path):
    check = manifest["check_case"]
    model = zoo.load_foundation("phantom_cpu").eval()
    torch.manual_seed(0)
    table = zero_shot_phantoms(model, "cpu", domains=(check["domain"],), cases=1, data_dir=tmp_path,
                               seed=manifest["zero_shot_dice"]["population_seed"])
    measured = table.set_index("structure").dice
    for structure, expected in check["dice"].items():
        assert measured[structure] == pytest.approx(expected, abs=check["tolerance"]), structure
