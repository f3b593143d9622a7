"""Where a grid's time goes: one run of each class, its wall time split by phase (prints figures; asserts nothing).

    python benchmarks/run_costs.py [--grid grids/fseft_phantom_cpu.toml] [--only BLOCK] [--ks 1]
                                  [--out results/run_costs.csv]

A grid's runs fall into a few classes that cost alike: per block, the number of shots k, what
trains (nothing; the head alone, on the frozen trunk's features; the decoder, on the frozen
encoder's states; the trunk itself) and whether the test volumes join training (transductive
inference). This runs the first method of each class, on the first task and draw, with the
grid's data, profile and trunk-feature sharing, and splits its wall time into

* ``load``: reading and resampling the volumes (the pre-processed cache makes repeats cheap),
* ``trunk``: the frozen trunk's features of the test volumes, paid once per block and shared,
* ``adapt``: the training loop (with the support crops' cached features or states, when the class allows),
* ``evaluate``: sliding-window inference on the test volumes, post-processing and metrics.

Then the class's cost times its number of runs in the grid gives the grid's estimated wall time
and mean cost per run on this machine: the figures that decide what a CPU can re-make.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from fseft_lab import experiments
from fseft_lab.anatomy import task_structures
from fseft_lab.benchmark import block_dataset, read_grid, split_method
from fseft_lab.crop_bank import cache_level
from fseft_lab.data.phantom import GENERATOR_VERSION
from fseft_lab.experiments import RunOptions, write_csv, write_manifest
from fseft_lab.methods import build
from fseft_lab.models.zoo import ZOO, checkpoint_geometry, get_checkpoint, load_foundation, local_path, weights_sha256
from fseft_lab.profiles import get_profile

PHASES = {"load": "load_cases", "trunk": "_attach_trunk_features", "adapt": "adapt", "evaluate": "evaluate"}


def timing_phases() -> dict[str, float]:
    """Wrap the functions :func:`fseft_lab.experiments.run` calls for each phase with timers; returns
    the seconds spent in each since the last reset (the caller zeroes them between runs)."""
    spent = defaultdict(float)
    for phase, name in PHASES.items():
        inner = getattr(experiments, name)

        def timed(*args, _inner=inner, _phase=phase, **kwargs):
            start = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                spent[_phase] += time.perf_counter() - start
        setattr(experiments, name, timed)
    return spent


def what_trains(foundation, method: str, task: str, decoder: str) -> str:
    """``nothing``, ``head`` (on the trunk's features), ``decoder`` (on the encoder's states) or ``trunk``."""
    if method == "zero_shot":
        return "nothing"
    structures, multiclass = task_structures(task)
    level = cache_level(build(foundation, method, structures, multiclass, decoder=decoder))
    return {"trunk": "head", "encoder": "decoder"}.get(level, "trunk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="grids/fseft_phantom_cpu.toml")
    parser.add_argument("--only", help="run the classes of blocks whose name contains this only")
    parser.add_argument("--ks", type=int, nargs="+", help="measure these shots only (the estimate then covers their runs only)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--checkpoint", default="phantom_cpu")
    parser.add_argument("--data", type=Path, default=Path("data/benchmark"), help="where the grid's exports are kept")
    parser.add_argument("--out", type=Path, help="CSV of the classes and their phases (and a JSON manifest beside it)")
    args = parser.parse_args()
    blocks = [b for b in read_grid(args.grid) if args.only is None or args.only in b.name]
    if not blocks:
        raise SystemExit(f"no block of {args.grid} has {args.only!r} in its name")
    profile, foundation = get_profile(args.profile), load_foundation(args.checkpoint)
    spent, rows = timing_phases(), []
    for block in blocks:
        start = time.perf_counter()
        dataset = block_dataset(block, args.data, profile, checkpoint_geometry(args.checkpoint).spacing_mm)
        export_seconds = time.perf_counter() - start
        classes = defaultdict(list)   # (k, what trains, transductive) -> the block's methods of that class
        for spec in block.methods:
            method, ti = split_method(spec)
            trains = what_trains(foundation, method, block.tasks[0], block.decoder)
            for k in (k for k in block.ks if args.ks is None or k in args.ks):
                classes[(k, trains, ti.label if ti else "none")].append(spec)
        trunk_cache = {}              # shared by the block's runs, as in a grid
        for (k, trains, ti), specs in sorted(classes.items(), key=lambda kv: (kv[0][1] != "head", kv[0])):
            method, transductive = split_method(specs[0])
            spent.clear()
            start = time.perf_counter()
            experiments.run(foundation, dataset, block.tasks[0], method, k, block.seeds[0],
                            RunOptions(decoder=block.decoder, profile=profile.name, config=block.config(), transductive=transductive,
                                       trunk_cache=trunk_cache, cache_dir=args.data / "cache", progress=False))
            rows.append({"block": block.name, "k": k, "trains": trains, "transductive": ti, "method": specs[0],
                         "runs_in_grid": len(specs) * len(block.tasks) * len(block.seeds),
                         **{phase: round(spent[phase], 1) for phase in PHASES},
                         "run_seconds": round(time.perf_counter() - start, 1), "export_seconds": round(export_seconds)})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    # the trunk features are paid once per block (the first class pays them here): count them once
    table["grid_seconds"] = (table.run_seconds - table.trunk) * table.runs_in_grid + table.trunk
    total, runs = table.grid_seconds.sum(), table.runs_in_grid.sum()
    print(f"\n{args.grid}: {runs} runs, estimated {total / 3600:.1f} h on this machine, a mean of {total / runs:.0f} s per run")
    print(table.groupby("trains")[["runs_in_grid", "grid_seconds"]].sum().assign(
        mean_seconds=lambda t: (t.grid_seconds / t.runs_in_grid).round()).to_string())
    if args.out:   # the figures, and beside them the model, phantom and machine they were measured with
        write_csv(table, args.out)
        weights = local_path(get_checkpoint(args.checkpoint)) if args.checkpoint in ZOO else Path(args.checkpoint)
        write_manifest(args.out.with_suffix(".json"), grid=args.grid, profile=profile.name, checkpoint=args.checkpoint,
                       weights_sha256=weights_sha256(weights), phantom_generator=GENERATOR_VERSION,
                       estimated_grid_hours=round(total / 3600, 2), mean_seconds_per_run=round(total / runs))


if __name__ == "__main__":
    main()
