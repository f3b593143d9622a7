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


def _option(command: str, name: str) -> str:
    """The value given to ``--name`` in a recorded command line."""
    words = command.split()
    return words[words.index(f"--{name}") + 1]


def test_manifest_records_how_it_was_made_and_agrees_with_the_weights(manifest):
    """The manifest's fields are the ones its command line set, its geometry is the one stored in
    the weights file, and its last lineage entry is this run."""
    from fseft_lab.pretrain import SOURCES
    from fseft_lab.profiles import Geometry

    command = manifest["command"]
    assert command.startswith("fseft-lab pretrain")
    assert int(_option(command, "seed")) == manifest["seed"] and int(_option(command, "steps")) == manifest["steps"]
    assert _option(command, "profile") == manifest["profile"]
    this_run = manifest["lineage"][-1]
    assert this_run["command"] == command and this_run["train_seconds"] == manifest["train_seconds"]
    stored = zoo.read_state_dict(zoo.local_path(zoo.get_checkpoint("phantom_cpu")))[zoo.GEOMETRY_KEY]
    assert manifest["geometry"] == stored
    assert Geometry(**stored) == zoo.get_checkpoint("phantom_cpu").geometry     # the zoo entry says the same
    # the training device and the evaluating machine's software are recorded apart, never mixed
    assert set(manifest["trained_on"]) == {"device", "machine"} and "device" not in manifest["evaluated_on"]["hardware"]
    assert manifest["evaluated_on"]["software"]["torch"]
    dice = manifest["zero_shot_dice"]
    assert set(dice["per_domain"]) >= {*SOURCES, "totalseg_like", "flare_like"}
    assert set(dice["mean_base_organs_per_domain"]) == set(dice["per_domain"])
    assert all(0 <= d <= 1 for organs in dice["per_domain"].values() for d in organs.values())
    assert this_run["mean_base_organs_source_domains"] == dice["mean_base_organs_source_domains"]
    check = manifest["check_case"]
    assert check["domain"] in dice["per_domain"] and check["case"].startswith(check["domain"])


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


@pytest.mark.slow
def test_check_case_dice_matches_the_manifest(manifest, tmp_path):
    check = manifest["check_case"]
    model = zoo.load_foundation("phantom_cpu").eval()
    torch.manual_seed(0)
    table = zero_shot_phantoms(model, "cpu", domains=(check["domain"],), cases=1, data_dir=tmp_path,
                               seed=manifest["zero_shot_dice"]["population_seed"])
    measured = table.set_index("structure").dice
    for structure, expected in check["dice"].items():
        assert measured[structure] == pytest.approx(expected, abs=check["tolerance"]), structure


#: Fresh subjects: a population seed that neither the manifest (900), the pre-training sources
#: (100-104) nor the course's targets (0-1) use, in two source domains, two cases each.
HELD_OUT_SEED, HELD_OUT_DOMAINS, HELD_OUT_CASES = 950, ("btcv_like", "lits_like"), 2
#: How far below the manifest's claim the fresh subjects' mean Dice may fall. Two draws of the
#: population differ: on these domains the shipped model scores 0.76 on the manifest's three subjects
#: per domain and 0.81 on these two. A claim holds if fresh subjects do not fall short of it by more
#: than that spread; a model that overfitted its evaluation subjects, or a generator changed under
#: it, falls far more.
HELD_OUT_TOLERANCE = 0.05


@pytest.mark.slow
def test_fresh_held_out_subjects_reach_the_manifests_zero_shot_dice(manifest, tmp_path):
    """The manifest's claim for these domains (``mean_base_organs_per_domain``, organs wholly in
    the scan) holds on subjects the model and the manifest never saw; about 1-2 minutes on 2 cores."""
    from fseft_lab.data.phantom import GENERATOR_VERSION
    from fseft_lab.pretrain import SOURCES

    claims = manifest["zero_shot_dice"]
    assert HELD_OUT_SEED != claims["population_seed"] and set(HELD_OUT_DOMAINS) <= set(SOURCES)
    claimed = sum(claims["mean_base_organs_per_domain"][d] for d in HELD_OUT_DOMAINS) / len(HELD_OUT_DOMAINS)
    model = zoo.load_foundation("phantom_cpu").eval()
    torch.manual_seed(0)
    table = zero_shot_phantoms(model, "cpu", domains=HELD_OUT_DOMAINS, cases=HELD_OUT_CASES, data_dir=tmp_path,
                               seed=HELD_OUT_SEED)
    whole = table[table.visible & ~table.cut]      # the manifest's rule: organs the scan holds entirely
    per_domain = whole.groupby("domain").dice.mean()
    measured = per_domain.mean()                   # domains weighted equally, as the claim
    assert measured >= claimed - HELD_OUT_TOLERANCE, (
        f"held-out mean Dice {measured:.3f} ({per_domain.round(3).to_dict()}, {len(whole)} organs) against the "
        f"manifest's {claimed:.3f}, tolerance {HELD_OUT_TOLERANCE}; the manifest was scored on phantom generator "
        f"version {manifest.get('evaluated_with_generator_version')}, this is version {GENERATOR_VERSION}")
