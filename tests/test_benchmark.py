"""`fseft-lab benchmark`: grid files are checked before anything runs, and grids resume."""
import json
import os

import pandas as pd
import pytest
import torch

from fseft_lab.benchmark import fold_shards, grid_run_key, parse_shard, read_grid, shard_csv, split_method, writing_to
from fseft_lab.cli import main
from fseft_lab.data.phantom import GENERATOR_VERSION
from fseft_lab.models import zoo

TINY = """
[[block]]
name = "tiny"
dataset = { layout = "msd", domain = "flare_like", seed = 5, template = "flare22", cases = 3, num_test = 1 }
tasks = ["liver"]
methods = ["zero_shot"]
ks = [1]
seeds = [0, 1]
"""


def test_the_committed_grid_is_valid_and_sized_like_the_paper():
    blocks = read_grid("grids/fseft_phantom.toml")
    assert [b.runs for b in blocks] == [9 * 9 * 3 * 3, 9 * 3 * 3, 3 * 7 * 3 * 3]
    assert "spatial_adapter+penalty" in blocks[0].methods and blocks[2].decoder == "fine-tuned"
    assert split_method("spatial_adapter+barrier")[1].mode == "barrier" and split_method("lora")[1] is None
    assert split_method("spatial_adapter+penalty")[1].protocol == "per_volume"
    assert split_method("spatial_adapter+penalty/pooled")[1].protocol == "pooled"
    assert split_method("spatial_adapter+none")[1].label == "none, TI schedule"      # lambda = 0: TI's schedule only
    assert grid_run_key("liver", "spatial_adapter+none", "frozen", 1, 0) != grid_run_key("liver", "spatial_adapter", "frozen", 1, 0)
    cpu = read_grid("grids/fseft_phantom_cpu.toml")   # the course's CPU benchmark: 3 draws in every cell
    assert all(len(b.seeds) >= 3 for b in cpu) and sum(b.runs for b in cpu) == 261


def test_a_block_sets_the_adaptation_of_its_runs(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY + "adapt = { lr = 1e-3, epochs = 40 }\n")
    config = read_grid(grid)[0].config()
    assert (config.lr, config.epochs, config.crops_per_volume) == (1e-3, 40, None)   # the rest stays the default
    # the same method on other settings is another run: its key, and its rows' config column, say which
    assert read_grid(grid)[0].label() == "epochs=40, lr=0.001"
    assert grid_run_key("liver", "full_ft", "frozen", 1, 0, "epochs=40, lr=0.001") != grid_run_key("liver", "full_ft", "frozen", 1, 0)
    grid.write_text(TINY)
    assert read_grid(grid)[0].config() is None and read_grid(grid)[0].label() == "default"


@pytest.mark.parametrize("edit, message", [
    (("methods = [\"zero_shot\"]", "methods = [\"prompt_tuning\"]"), "unknown method 'prompt_tuning'"),
    (("methods = [\"zero_shot\"]", "methods = [\"zero_shot+hinge\"]"), "transductive mode 'hinge'"),
    (("tasks = [\"liver\"]", "tasks = [\"livr\"]"), "unknown task 'livr'"),
    (("ks = [1]", "ks = [0]"), r"ks \[0\] must be positive"),
    (("seeds = [0, 1]", "seeds = [0, 1]\nshots = 3"), r"unknown keys \['shots'\]"),
    (("layout = \"msd\"", "layout = \"nnunet\""), "needs a layout in"),
    (("[[block]]", "[[block]"), "is not valid TOML"),
    (("seeds = [0, 1]", "seeds = [0, 1]\nadapt = { learning_rate = 1e-3 }"), r"adapt settings \['learning_rate'\] are not AdaptConfig"),
    (("seeds = [0, 1]", "seeds = [0, 1]\nadapt = { seed = 3 }"), r"adapt settings \['seed'\]"),
])
def test_bad_grids_are_refused_before_anything_runs(tmp_path, edit, message):
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY.replace(*edit))
    with pytest.raises(ValueError, match=message):
        read_grid(grid)


@pytest.mark.slow
def test_benchmark_runs_a_grid_resumes_it_and_writes_a_manifest(tmp_path, capsys):
    grid, out = tmp_path / "grid.toml", tmp_path / "results" / "bench.csv"
    grid.write_text(TINY)
    args = ["benchmark", "--grid", str(grid), "--out", str(out), "--profile", "cpu", "--data", str(tmp_path / "data")]
    assert main(args + ["--list"]) == 0
    assert "tiny: 2 runs" in capsys.readouterr().out and not out.exists()
    assert main(args) == 0
    table = pd.read_csv(out)
    assert sorted(table.seed) == [0, 1] and set(table.transductive) == {"none"}
    # zero-shot does not depend on the draw: both seeds score the same test volume alike, and the
    # shipped model segments the liver
    assert table.dice.max() - table.dice.min() < 1e-4 and table.dice.iloc[0] > 0.6
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["invocations"][-1]["command"].startswith("fseft-lab benchmark") and "tiny" in manifest["grid_text"]
    assert len(manifest["checkpoint_sha256"]) == len(manifest["weights_sha256"]) == 64
    assert manifest["phantom_generator"] == GENERATOR_VERSION
    assert manifest["invocations"][-1]["software"]["torch"]
    assert manifest["runs_done"] == manifest["runs_in_grid"] == 2 and set(table.device) == {"cpu"}
    modified = out.stat().st_mtime_ns
    assert main(args) == 0                                   # everything done: nothing runs again
    assert out.stat().st_mtime_ns == modified and len(pd.read_csv(out)) == 2
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert len(manifest["invocations"]) == 2 and manifest["invocations"][-1]["runs_done_after"] == 2
    assert manifest["invocations"][-1]["post_processing"] == "largest component of one-piece structures"
    assert set(table.post_processing) == {"largest component"}   # the liver is one piece
    assert main(args + ["--no-largest-component"]) == 2          # raw rows into a post-processed table: refused
    assert "one table, one post-processing" in capsys.readouterr().err
    assert main(args + ["--only", "other"]) == 2
    assert "no block named 'other'" in capsys.readouterr().err
    resaved = tmp_path / "same_weights_saved_again.pt"       # another file, the same weights: accepted
    torch.save(torch.load(zoo.local_path(zoo.get_checkpoint("phantom_cpu")), weights_only=True), resaved)
    assert zoo.sha256(resaved) != manifest["checkpoint_sha256"]
    assert main(args + ["--checkpoint", str(resaved)]) == 0
    manifest["weights_sha256"] = "0" * 64                      # the table was measured with another model
    out.with_suffix(".json").write_text(json.dumps(manifest))
    assert main(args) == 2
    assert "one table, one model" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_workers_share_the_grid_and_fold_their_rows_into_one_table(tmp_path):
    grid, out = tmp_path / "grid.toml", tmp_path / "bench.csv"
    grid.write_text(TINY)
    args = ["benchmark", "--grid", str(grid), "--profile", "cpu", "--data", str(tmp_path / "data")]
    assert main(args + ["--out", str(tmp_path / "one.csv")]) == 0
    assert main(args + ["--out", str(out), "--workers", "2"]) == 0
    one, two = (pd.read_csv(f).sort_values(["seed", "case"]).reset_index(drop=True) for f in (tmp_path / "one.csv", out))
    assert list(two.seed.unique()) == [0, 1] and not list(tmp_path.glob("bench.shard-*"))
    pd.testing.assert_series_equal(one.dice, two.dice)     # same runs, whichever process ran them
    assert json.loads(out.with_suffix(".json").read_text())["invocations"][-1]["workers"] == 2
    # a worker's rows left behind by an interrupted run are folded in, and not run again
    out.unlink()
    one[one.seed == 1].to_csv(shard_csv(out, (1, 2)), index=False)
    assert main(args + ["--out", str(out), "--only", "tiny"]) == 0
    assert sorted(pd.read_csv(out).seed) == [0, 1] and not shard_csv(out, (1, 2)).exists()


@pytest.mark.slow
def test_workers_are_dealt_the_runs_left_so_none_idles(tmp_path):
    """Worker i of n takes every n-th run of those not done yet, counted across blocks and methods:
    with seeds 0 and 2 done, worker 0 of 2 runs seed 1 (and worker 1 seed 3), not nothing."""
    grid, out = tmp_path / "grid.toml", tmp_path / "bench.csv"
    grid.write_text(TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]"))
    args = ["benchmark", "--grid", str(grid), "--profile", "cpu", "--data", str(tmp_path / "data")]
    assert main(args + ["--out", str(tmp_path / "all.csv")]) == 0
    every = pd.read_csv(tmp_path / "all.csv")
    every[every.seed.isin([0, 2])].to_csv(out, index=False)
    assert main(args + ["--out", str(out), "--shard", "0/2"]) == 0
    assert set(pd.read_csv(shard_csv(out, (0, 2))).seed) == {1}


def test_a_second_benchmark_on_a_table_in_use_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    """Two benchmarks writing one table would fold each other's shard files mid-run."""
    import subprocess
    import sys

    grid, out = tmp_path / "grid.toml", tmp_path / "bench.csv"
    grid.write_text(TINY)
    args = ["benchmark", "--grid", str(grid), "--out", str(out), "--profile", "cpu", "--data", str(tmp_path / "data")]
    lock = tmp_path / ".bench.csv.lock"
    lock.write_text(str(os.getpid()))                     # a live process holds the table
    assert main(args) == 2
    assert f"{out} is being written by another benchmark (pid {os.getpid()}" in capsys.readouterr().err
    assert not out.exists() and lock.read_text() == str(os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(str(dead.pid))                        # its holder was killed: the lock is stale
    with writing_to(out):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_folding_a_shard_twice_adds_its_rows_once(tmp_path):
    """A worker whose shard was folded mid-run writes its rows again with its next run's: no duplicates."""
    out = tmp_path / "bench.csv"
    rows = pd.DataFrame({"task": ["liver"] * 3, "seed": [0, 1, 2], "dice": [0.5, 0.6, 0.7]})
    rows[:2].to_csv(out, index=False)
    rows.to_csv(shard_csv(out, (0, 2)), index=False)       # seeds 0 and 1 again, and seed 2
    folded = rows.assign(config="default")                 # rows written before runs recorded their settings
    pd.testing.assert_frame_equal(fold_shards(out), folded)
    pd.testing.assert_frame_equal(pd.read_csv(out), folded)
    assert not shard_csv(out, (0, 2)).exists()


@pytest.mark.parametrize("text", ["2/2", "1", "a/3", "-1/2"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="must be I/N"):
        parse_shard(text)


@pytest.mark.slow
def test_methods_ks_and_tasks_pick_part_of_a_grid_and_unknown_ones_are_refused(tmp_path, capsys):
    grid, out = tmp_path / "grid.toml", tmp_path / "bench.csv"
    grid.write_text(TINY.replace('methods = ["zero_shot"]', 'methods = ["zero_shot", "linear_probe"]')
                    .replace('tasks = ["liver"]', 'tasks = ["liver", "spleen"]'))
    args = ["benchmark", "--grid", str(grid), "--out", str(out), "--profile", "cpu", "--data", str(tmp_path / "data")]
    assert main(args + ["--methods", "lora"]) == 2
    assert "methods ['lora'] are not in the grid" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--ks", "1", "5"]) == 2
    assert "ks [5] are not in the grid" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--tasks", "heart"]) == 2
    assert "tasks ['heart'] are not in the grid" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--methods", "zero_shot", "--tasks", "spleen"]) == 0
    table = pd.read_csv(out)
    assert set(table.method) == {"zero_shot"} and set(table.task) == {"spleen"}
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["runs_done"] == 2 and manifest["runs_in_grid"] == 8     # the whole grid, not the part run


@pytest.mark.slow
def test_a_terminated_benchmark_keeps_its_rows_and_says_so_in_its_manifest(tmp_path):
    """SIGTERM (kill, a scheduler's limit) stops it like Ctrl-C: rows kept, manifest written, exit 130."""
    import signal
    import subprocess
    import sys
    import time

    grid, out = tmp_path / "grid.toml", tmp_path / "bench.csv"
    # linear-probe runs: each trains for seconds, so the signal lands with runs left (zero-shot runs
    # only evaluate: on a clean clone all eight once finished before the signal, exit 0)
    grid.write_text(TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3, 4, 5, 6, 7]")
                    .replace('methods = ["zero_shot"]', 'methods = ["linear_probe"]'))
    proc = subprocess.Popen([sys.executable, "-m", "fseft_lab.cli", "benchmark", "--grid", str(grid), "--out", str(out),
                             "--profile", "cpu", "--data", str(tmp_path / "data")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not out.exists() and time.time() < deadline and proc.poll() is None:   # until the first run is in
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130 and "interrupted" in proc.stderr.read()
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["invocations"][-1]["finished"] is False
    assert 1 <= manifest["runs_done"] == pd.read_csv(out).seed.nunique() < 8
