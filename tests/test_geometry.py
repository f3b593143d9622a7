"""A model has one geometry: every path runs a foundation model at the spacing and patch it was
trained at, whatever the profile; forcing another one warns, naming both."""
import warnings
from pathlib import Path

import pytest
import torch

from fseft_lab import experiments
from fseft_lab.data.layouts import export_phantom
from fseft_lab.models.foundation import FoundationModel, resolve_geometry
from fseft_lab.models.zoo import checkpoint_geometry, geometry_state, load_foundation
from fseft_lab.pretrain import PretrainConfig, pretrain
from fseft_lab.profiles import PHANTOM, Geometry, get_profile

COARSE = Geometry(8.0, 64, 12)   # a tiny model's own geometry, unlike every profile's


def test_profiles_change_budgets_not_the_shipped_models_geometry():
    assert get_profile("gpu").geometry == get_profile("cpu").geometry == PHANTOM
    assert get_profile("gpu").num_epochs > get_profile("cpu").num_epochs
    assert load_foundation("phantom_cpu").geometry == PHANTOM
    assert checkpoint_geometry("phantom_cpu") == PHANTOM


def test_a_model_runs_at_its_own_geometry_under_any_profile():
    model = FoundationModel(12, geometry=COARSE)
    for profile in ("cpu", "gpu", "paper"):
        assert resolve_geometry(model, profile) == COARSE
    assert resolve_geometry(FoundationModel(12), "paper") == Geometry(1.5, 96, 12)  # no geometry of its own: the profile's


def test_forcing_another_geometry_warns_once_naming_both():
    model = FoundationModel(12, geometry=COARSE)
    with pytest.warns(UserWarning) as caught:
        forced = resolve_geometry(model, "cpu", spacing_mm=2.0, patch_size=96)
    assert forced == Geometry(2.0, 96, 12)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "8 mm voxels, 64^3" in text and "2 mm voxels, 96^3" in text and "\n" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_geometry(model, "cpu", spacing_mm=8.0) == COARSE  # the same geometry: no warning


def test_geometry_round_trips_through_a_checkpoint_file(tmp_path):
    model = FoundationModel(12, geometry=COARSE)
    torch.save({**model.state_dict(), **geometry_state(COARSE)}, tmp_path / "model.pt")
    assert checkpoint_geometry(tmp_path / "model.pt") == COARSE
    loaded = load_foundation(tmp_path / "model.pt")
    assert loaded.geometry == COARSE
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)


def test_pretraining_refuses_init_weights_of_another_geometry(tmp_path):
    other = Geometry(1.5, 96, 12)
    torch.save({**FoundationModel(12).state_dict(), **geometry_state(other)}, tmp_path / "init.pt")
    with pytest.raises(ValueError, match="1.5 mm voxels, 96\\^3.*3 mm voxels, 64\\^3"):
        pretrain(PretrainConfig(out=tmp_path / "run", profile="cpu", steps=1, init=tmp_path / "init.pt"), data=[[]],
                 progress=False)


@pytest.mark.slow
def test_run_resamples_to_the_models_geometry_not_the_profiles(tmp_path, monkeypatch):
    ds = export_phantom(tmp_path / "ts", "totalsegmentator", cases=3, num_test=1, spacing=8.0, progress=False)
    seen = []

    def spy(dataset, case_ids, structures, geometry, cache_dir=None):
        seen.append(geometry)
        return loaded(dataset, case_ids, structures, geometry, cache_dir)

    loaded = experiments.load_cases
    monkeypatch.setattr(experiments, "load_cases", spy)
    model = FoundationModel(12, geometry=COARSE)
    table, _ = experiments.run(model, ds, "liver", "zero_shot", k=1, seed=0,
                               options=experiments.RunOptions(profile="paper", progress=False))
    assert seen and all(g == COARSE for g in seen)
    assert len(table) == 1 and Path(ds.root).is_dir()
