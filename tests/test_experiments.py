"""`fseft-lab adapt` end to end on an exported phantom dataset, adapter files, grids, bad input."""
import pandas as pd
import pytest
import torch

from fseft_lab.adapt import AdaptConfig
from fseft_lab.anatomy import task_structures
from fseft_lab.cli import main
from fseft_lab.data.layouts import open_dataset
from fseft_lab.experiments import RUN_KEY, RunOptions, done_runs, load_cases, run_grid, run_key
from fseft_lab.methods import build, load_adapter_file
from fseft_lab.models.zoo import load_foundation
from fseft_lab.profiles import get_profile


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Exported the way a user would: ``fseft-lab phantom export``."""
    root = tmp_path_factory.mktemp("flare") / "flare_like"
    assert main(["phantom", "export", str(root), "--layout", "msd", "--cases", "3", "--seed", "5", "--domain", "flare_like",
                 "--spacing", "3", "--template", "flare22", "--num-test", "1"]) == 0
    return open_dataset(root)


@pytest.mark.slow
def test_cli_adapts_an_exported_dataset_and_saves_a_small_adapter(dataset, tmp_path, capsys):
    out, adapter = tmp_path / "results.csv", tmp_path / "liver.pt"
    assert main(["adapt", "--data", str(dataset.root), "--layout", "msd", "--task", "liver", "--method", "linear_probe",
                 "--k", "1", "--seeds", "0", "--epochs", "2", "--profile", "cpu", "--out", str(out),
                 "--save-adapter", str(adapter)]) == 0
    assert "linear_probe liver k=1 seed=0: Dice" in capsys.readouterr().out
    rows = pd.read_csv(out)
    assert list(rows.case) == dataset.test_ids
    assert rows.dice.iloc[0] > 0.6                 # the shipped model's liver, barely moved by 2 epochs
    assert rows.dice.iloc[0] <= _dice_bound(rows.iloc[0])
    assert rows.trainable_params.iloc[0] == 13 and rows.cached.iloc[0] and rows.epochs.iloc[0] == 2
    assert adapter.stat().st_size < 10_000
    foundation = load_foundation("phantom_cpu")
    model = load_adapter_file(foundation, adapter).eval()
    assert model.task_structures == ("liver",)
    assert not torch.equal(model.classifier.weight, build(foundation, "linear_probe", ["liver"]).classifier.weight)


def _dice_bound(row) -> float:
    """The largest Dice the row's predicted and true volumes allow: 2 min(P, T) / (P + T)."""
    return 2 * min(row.truth_ml, row.predicted_ml) / (row.truth_ml + row.predicted_ml) + 1e-6


def test_cli_rejects_bad_input_with_the_valid_choices(dataset, tmp_path, capsys):
    base = ["adapt", "--data", str(dataset.root), "--out", str(tmp_path / "r.csv"), "--profile", "cpu"]
    assert main(base + ["--task", "livr", "--method", "linear_probe"]) == 2
    assert "unknown task 'livr'" in capsys.readouterr().err
    assert main(base + ["--task", "liver", "--method", "prompt_tuning"]) == 2
    assert "valid methods: zero_shot, linear_probe" in capsys.readouterr().err
    assert main(base + ["--task", "liver", "--method", "linear_probe", "--k", "0"]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err
    assert main(base + ["--task", "heart", "--method", "linear_probe"]) == 2  # FLARE22 labels no heart
    assert "does not label ['heart_myocardium'" in capsys.readouterr().err
    assert main(base + ["--task", "liver", "--method", "linear_probe", "--layout", "totalsegmentator"]) == 2
    assert "is a msd folder" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_run_refuses_test_cases_from_the_support_set(dataset):
    from fseft_lab.experiments import run

    with pytest.raises(ValueError, match=r"test cases \[.+\] are in the support set of draw seed=0, k=1"):
        run(load_foundation("phantom_cpu"), dataset, "liver", "linear_probe", 1, 0,
            RunOptions(profile="cpu", test=list(dataset.case_ids), progress=False))


@pytest.mark.slow
def test_zero_shot_asks_nothing_of_a_support_and_rows_flag_cut_structures(tmp_path):
    from fseft_lab.data.layouts import export_phantom
    from fseft_lab.experiments import run, split_for

    # population seed 0: s0002 is a thorax scan with a 14 mL sliver of liver and no spleen
    ts = export_phantom(tmp_path / "ts", "totalsegmentator", cases=4, num_test=1, seed=0, spacing=6.0, progress=False)
    seed = next(s for s in range(20) if split_for(ts, "liver,spleen", 1, s, whole=False).support == ("s0002",))
    rows, result = run(load_foundation("phantom_cpu"), ts, "liver,spleen", "zero_shot", 1, seed,
                       RunOptions(profile="cpu", test_split=["s0002", "s0003"], progress=False))
    assert result.trainable == 0
    cut = rows.set_index(["case", "structure"]).cut
    assert cut["s0002", "liver"] and not cut["s0003", "liver"] and not cut["s0003", "spleen"]
    assert rows.run_seconds.nunique() == 1 and rows.run_seconds.iloc[0] > 0   # the whole run's wall time, on each row


@pytest.mark.slow
def test_grid_resumes_without_repeating_runs(dataset, tmp_path):
    foundation = load_foundation("phantom_cpu")
    out = tmp_path / "grid.csv"
    first = run_grid(foundation, dataset, out, ["liver"], ["zero_shot"], [1], [0, 1], RunOptions(profile="cpu", progress=False))
    assert len(first) == 2 and set(first.seed) == {0, 1}
    pd.read_csv(out).iloc[:1].to_csv(out, index=False)        # as if the grid stopped after one run
    again = run_grid(foundation, dataset, out, ["liver"], ["zero_shot"], [1], [0, 1], RunOptions(profile="cpu", progress=False))
    assert sorted(again.seed) == [0, 1] and len(again[RUN_KEY].drop_duplicates()) == 2


def test_tasks_and_missing_head_rows(dataset):
    assert task_structures("liver") == (("liver",), False)
    assert task_structures("base_organs")[1] and len(task_structures("base_organs")[0]) == 9
    foundation = load_foundation("phantom_cpu")
    foundation.load_report.head_rows = [r for r in foundation.load_report.head_rows if r != "liver"]
    with pytest.warns(UserWarning, match=r"no head row for \['liver'\]"):
        model = build(foundation, "linear_probe", ["liver"])
    assert not torch.equal(model.classifier.weight[0], foundation.classifier.weight[5])
    case = load_cases(dataset, dataset.test_ids, ["liver"], get_profile("cpu").geometry)[0]
    assert case["image"].shape[1:] == case["label"].shape[1:] and int(case["label"].max()) == 1


def test_summary_and_plots_read_the_tidy_table():
    import matplotlib

    matplotlib.use("Agg")
    from fseft_lab import viz
    from fseft_lab.experiments import summary

    rows = [{"method": m, "k": k, "seed": s, "case": c, "dice": d + 0.01 * s, "trainable_params": p, "train_seconds": 1.0}
            for m, d, p in (("zero_shot", 0.5, 0), ("linear_probe", 0.6, 13)) for k in (1, 5) for s in (0, 1)
            for c in ("a", "b")]
    table = pd.DataFrame(rows)
    stats = summary(table)
    assert stats.loc[("linear_probe", 5), "dice"] == pytest.approx(0.605)
    assert stats.loc[("linear_probe", 5), "dice_std"] == pytest.approx(0.01 / 2 ** 0.5)
    assert stats.loc[("zero_shot", 1), "params"] == 0
    failed = table.assign(hd95=5.0, missed=False)
    failed.loc[0, ["dice", "hd95", "missed"]] = 0.0, 100.0, True   # zero_shot, k = 1, seed 0 missed case a
    counted = summary(failed)
    assert counted.loc[("zero_shot", 1), "missed"] == 1 and counted.loc[("linear_probe", 1), "missed"] == 0
    assert counted.loc[("zero_shot", 1), "hd95"] == pytest.approx((52.5 + 5.0) / 2)
    ax = viz.plot_dice_vs_k(table)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["linear_probe", "zero_shot"]
    ax = viz.plot_params_vs_dice(table)
    offsets = [c.get_offsets()[0].tolist() for c in ax.collections]
    assert offsets == [[1.0, pytest.approx(0.505)], [13.0, pytest.approx(0.605)]]


@pytest.mark.slow
def test_cli_transductive_inference_and_method_options(dataset, tmp_path, capsys):
    out = tmp_path / "ti.csv"
    # 4 epochs: query steps at epochs 2 and 3 (the last one's rate has decayed to 0 by then)
    base = ["adapt", "--data", str(dataset.root), "--task", "liver", "--k", "1", "--epochs", "4", "--profile", "cpu",
            "--out", str(out)]
    plain, ti = tmp_path / "plain.pt", tmp_path / "ti.pt"
    assert main(base + ["--method", "linear_probe", "--save-adapter", str(plain)]) == 0
    # entropy: a query term with a gradient whatever the prediction (a penalty is 0 inside its band)
    assert main(base + ["--method", "linear_probe", "--transductive", "entropy", "--ti-margin", "0.4",
                        "--save-adapter", str(ti)]) == 0
    rows = pd.read_csv(out)
    assert rows.transductive.tolist() == ["none", "entropy"] and rows.dice.iloc[1] <= _dice_bound(rows.iloc[1])
    assert rows.ti_protocol.tolist() == ["none", "per_volume"]
    # the same draw and seed: only the query term can make the heads differ (a run ignoring
    # --transductive trains the same head, bit for bit)
    heads = [torch.load(p, weights_only=True)["state"]["classifier.weight"] for p in (plain, ti)]
    again = tmp_path / "again.pt"
    assert main(base + ["--method", "linear_probe", "--save-adapter", str(again)]) == 0
    assert torch.equal(heads[0], torch.load(again, weights_only=True)["state"]["classifier.weight"])
    assert not torch.equal(heads[0], heads[1])
    assert main(base + ["--method", "lora", "--transductive", "barrier"]) == 2
    assert "only the adapter and head" in capsys.readouterr().err
    assert main(base + ["--method", "linear_probe", "--transductive", "penalty", "--ti-margin", "1.5"]) == 2
    assert "margin=1.5: a size margin must lie in (0, 1)" in capsys.readouterr().err
    assert main(base + ["--method", "adapter_1x1", "--option", "kernel_size"]) == 2
    assert "write NAME=VALUE" in capsys.readouterr().err
    assert main(base + ["--method", "adapter_1x1", "--option", "rank=3"]) == 2
    assert "adapter_1x1 has no option ['rank']" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == 3  # refused runs wrote nothing


@pytest.mark.slow
def test_per_volume_transductive_inference_adapts_once_per_test_volume(dataset, tmp_path):
    """The reference's protocol: each test volume gets a model adapted on the support plus itself;
    pooled: one model for all. Two test volumes (the split's validation and test cases)."""
    from fseft_lab.data.fewshot import few_shot_split
    from fseft_lab.experiments import run
    from fseft_lab.transductive import TransductiveConfig

    split = few_shot_split(dataset.case_ids, 1, 0, test=dataset.test_ids)
    test = list(split.validation) + list(split.test)
    foundation = load_foundation("phantom_cpu")
    kw = dict(profile="cpu", config=AdaptConfig(epochs=4), test=test, progress=False)   # query steps at epochs 2, 3
    # entropy: a query term with a gradient whatever the prediction (a penalty is 0 inside its band)
    rows, result = run(foundation, dataset, "liver", "linear_probe", 1, 0,
                       RunOptions(transductive=TransductiveConfig("entropy"), **kw))
    assert rows.case.tolist() == test and set(rows.ti_protocol) == {"per_volume"}
    assert sorted(result.per_volume) == sorted(test) and sorted(result.test_masks) == sorted(test)
    heads = [r.model.classifier.weight for r in result.per_volume.values()]
    assert not torch.equal(*heads)                      # each model saw its own query volume
    pooled, pooled_result = run(foundation, dataset, "liver", "linear_probe", 1, 0,
                                RunOptions(transductive=TransductiveConfig("entropy", protocol="pooled"), **kw))
    assert set(pooled.ti_protocol) == {"pooled"} and not pooled_result.per_volume
    # lambda = 0, TI's schedule without the query term: one adaptation scores every test volume
    same, same_result = run(foundation, dataset, "liver", "linear_probe", 1, 0,
                            RunOptions(transductive=TransductiveConfig(weight=0.0), **kw))
    assert set(same.transductive) == {"none, TI schedule"} and same.case.tolist() == test
    assert sorted(same_result.per_volume) == sorted(test) and len({id(r) for r in same_result.per_volume.values()}) == 1


def _intensity_model():
    from fseft_lab.models.foundation import FoundationModel
    from fseft_lab.profiles import Geometry

    class IntensityTrunk(FoundationModel):
        def features(self, x):                              # (B, 1, X, Y, Z) in [0, 1] -> (B, F, X, Y, Z)
            return ((x - 0.75) * 40).repeat(1, self.feature_size, 1, 1, 1)

    torch.manual_seed(0)
    return IntensityTrunk(12, geometry=Geometry(3.0, 32, 12)).eval()


def _cube_scans(root, tissue_hu: dict):
    """An MSD folder of 40^3 scans at 3 mm: a body of soft tissue (``tissue_hu[case]`` +- 10 HU) holding
    one 12^3 'liver' cube at 240 +- 10 HU (47 mL in every scan, so the support's size is the truth)."""
    import json

    import numpy as np

    from fseft_lab.data.layouts import open_dataset, save_nifti

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i, (case, hu) in enumerate(tissue_hu.items()):
        rng = np.random.default_rng(i)
        image, label = np.full((40, 40, 40), -1000.0), np.zeros((40, 40, 40), np.uint8)
        image[2:38, 2:38, 2:38] = rng.normal(hu, 10, (36, 36, 36))
        label[14:26, 14:26, 14:26] = 1
        image[label == 1] = rng.normal(240, 10, 12**3)
        save_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image.astype(np.int16), np.diag([3.0, 3.0, 3.0, 1.0]))
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label, np.diag([3.0, 3.0, 3.0, 1.0]))
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "training": [
        {"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in tissue_hu]}))
    return open_dataset(root)


def test_a_true_size_prior_brings_an_oversized_query_mask_back_to_the_prior(tmp_path):
    """The query's tissue is brighter (170 HU) than the support's (0 HU): a probe trained on the support
    alone marks the query's whole body, 27 times the liver. With the support's size as prior (here the
    truth), the penalty must bring the predicted volume back to it; a query step that did nothing or
    pushed the wrong way leaves the mask as large or larger."""
    import math

    from fseft_lab.experiments import run
    from fseft_lab.transductive import TransductiveConfig

    data = _cube_scans(tmp_path / "cubes", {"support": 0.0, "query": 170.0})
    options = dict(profile="cpu", config=AdaptConfig(epochs=30, crops_per_volume=2, crop_bank=2, lr=0.1),
                   test_split=["query"], progress=False)
    rows = {w: run(_intensity_model(), data, "liver", "linear_probe", 1, 0, RunOptions(
        transductive=TransductiveConfig("penalty", weight=w, start=0.0), **options))[0].iloc[0] for w in (0.0, 1.0)}
    plain, steered = rows[0.0], rows[1.0]
    prior_ml = plain.truth_ml                                   # the support's cube: the query's own size
    assert plain.predicted_ml > 10 * prior_ml, plain            # the set-up: far too large without the prior
    assert abs(math.log(steered.predicted_ml / prior_ml)) <= math.log(1.3), (
        f"with the size prior the query's mask is {steered.predicted_ml:.0f} mL, without it {plain.predicted_ml:.0f} mL; "
        f"the prior is {prior_ml:.0f} mL (margin 0.3)")
    assert steered.dice > 0.9 > plain.dice


@pytest.mark.slow
def test_grid_resumes_a_table_written_before_transductive_inference(dataset, tmp_path):
    foundation = load_foundation("phantom_cpu")
    out = tmp_path / "grid.csv"
    run_grid(foundation, dataset, out, ["liver"], ["zero_shot"], [1], [0], RunOptions(profile="cpu", progress=False))
    pd.read_csv(out).drop(columns="transductive").to_csv(out, index=False)  # an older table
    again = run_grid(foundation, dataset, out, ["liver"], ["zero_shot"], [1], [0], RunOptions(profile="cpu", progress=False))
    assert len(again) == 1 and again.transductive.tolist() == ["none"]


def test_grid_refuses_to_mix_raw_and_post_processed_rows(tmp_path):
    """A table scored without post-processing (written before the column existed) accepts only raw
    rows; the refusal comes before any data is read (no foundation model, no dataset needed)."""
    out = tmp_path / "grid.csv"
    old = pd.DataFrame({"task": ["liver", "liver_tumor"], "method": "zero_shot", "decoder": "frozen", "k": 1, "seed": 0,
                        "case": "c", "structure": ["liver", "liver_tumor"], "dice": 0.8})
    old.to_csv(out, index=False)
    with pytest.raises(ValueError, match=r"grid.csv holds 1 rows post-processed otherwise \(liver: 'none'\).*"
                                         r"--no-largest-component"):
        run_grid(None, None, out, ["liver"], ["zero_shot"], [1], [0], RunOptions(progress=False))
    again = run_grid(None, None, out, ["liver"], ["zero_shot"], [1], [0], RunOptions(progress=False, largest_component=False))
    assert len(again) == 2   # the raw table resumes: its one run is done, nothing runs


def test_rows_record_the_settings_a_run_changed_and_rows_from_before_count_as_the_defaults():
    assert AdaptConfig().label() == "default" and AdaptConfig(seed=4).label() == "default"   # the seed is the draw's
    assert AdaptConfig(epochs=200, lr=1e-3).label() == "epochs=200, lr=0.001"
    before = pd.DataFrame([{"task": "liver", "method": "full_ft", "decoder": "frozen", "transductive": "none", "k": 1, "seed": 0}])
    assert done_runs(before) == {run_key("liver", "full_ft", "frozen", "none", 1, 0)}
    assert run_key("liver", "full_ft", "frozen", "none", 1, 0, "epochs=200") not in done_runs(before)
    assert done_runs(before.assign(config="epochs=200")) == {run_key("liver", "full_ft", "frozen", "none", 1, 0, "epochs=200")}


def test_a_claim_says_whether_it_holds_with_its_figures():
    from fseft_lab.experiments import claim

    scores = pd.Series({"lora": 0.556, "zero_shot": 0.431})
    assert claim(scores, "lora", "zero_shot", "the spleen") == "lora > zero_shot on the spleen: True (0.56 vs 0.43)"
    assert claim(scores, "zero_shot", "lora", "the spleen").split(": ")[1].startswith("False")
    assert "by more than 0.2 on the spleen: False" in claim(scores, "lora", "zero_shot", "the spleen", margin=0.2)
    # a gain that the two printed decimals cannot show is no gain
    assert claim({"penalty": 0.9334, "no TI": 0.9301}, "penalty", "no TI", "the spleen").endswith("False (0.93 vs 0.93)")
    assert claim({"penalty": 0.9349, "no TI": 0.9251}, "penalty", "no TI", "the spleen").endswith("False (0.93 vs 0.93)")
    assert claim({"penalty": 0.9351, "no TI": 0.9349}, "penalty", "no TI", "the spleen").endswith("True (0.94 vs 0.93)")
