"""Dice with and without constrained transductive inference (TI), over seeds; writes results/.

    python benchmarks/transductive.py [--profile cpu] [--tasks spleen pancreas] [--ks 1 5] [--seeds 0 1 2]
                                      [--protocol per_volume|pooled]

The spatial adapter on the TotalSegmentator-like phantom target, one binary task per organ as in
the paper, adapted with each TI variant (``none``, ``penalty``, ``barrier``, ``entropy``) on the
same few-shot draws; the 5 test volumes are the unlabelled queries. ``--protocol per_volume`` (the
default, the reference code's) adapts once per test volume, on the support plus that volume;
``pooled`` adapts one model while the 5 volumes take turns, one per TI step (the committed
``results/transductive.csv`` was measured so; per-volume rows go to
``results/transductive_per_volume.csv`` by default). Every variant runs the same schedule: 200
optimiser steps (200 epochs at k = 1, 40 at k = 5), no early stop, TI switched on half-way (the
reference code's second half), learning rate 1e-3: the reference code trains the adapter with TI at
1e-2, which notebook 03 found unstable on the phantom, and the paper's 1e-4 barely moves the adapter
in 200 steps. Every run's rows go to ``--out`` (resumable: finished runs are skipped), and a
manifest beside it records the command, checkpoint, software, hardware and wall time. Prints the
mean Dice +- std over seeds per (k, variant); notebook 08 reads the CSV.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import torch

from fseft_lab.adapt import AdaptConfig
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import RunOptions, run_grid, summary, write_manifest
from fseft_lab.models.zoo import WEIGHTS_DIR, checkpoint_geometry, load_foundation, sha256
from fseft_lab.profiles import get_profile
from fseft_lab.transductive import TransductiveConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--tasks", nargs="+", default=["spleen", "pancreas"], help="binary tasks")
    parser.add_argument("--method", default="spatial_adapter")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["none", "penalty", "barrier", "entropy"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps: epochs = steps / k")
    parser.add_argument("--checkpoint", default="phantom_cpu")
    parser.add_argument("--data", type=Path, default=Path("data/benchmark"))
    parser.add_argument("--protocol", choices=["per_volume", "pooled"], default="per_volume",
                        help="per_volume: one adaptation per test volume (the reference); pooled: one for all")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/transductive.csv (pooled), results/transductive_per_volume.csv (per_volume)")
    args = parser.parse_args()
    args.out = args.out or Path("results/transductive.csv" if args.protocol == "pooled" else "results/transductive_per_volume.csv")
    prof = get_profile(args.profile)
    start = time.perf_counter()
    ds = export_phantom(args.data / f"totalseg_like_{prof.name}", "totalsegmentator", cases=prof.target_cases, seed=0,
                        spacing=checkpoint_geometry(args.checkpoint).spacing_mm, overwrite=True, progress=False)
    foundation = load_foundation(args.checkpoint)
    trunk_cache: dict = {}  # banks and test-volume features, shared by every variant of a draw
    signal.signal(signal.SIGTERM, _interrupt)  # kill / a time limit stops as Ctrl-C does: the manifest is still written
    finished, table = False, None
    try:
        for k in args.ks:
            config = AdaptConfig(epochs=max(1, args.steps // k), lr=args.lr, stop_patience=0)  # one schedule for all variants
            for seed in args.seeds:
                for task in args.tasks:
                    for mode in args.modes:
                        ti = None if mode == "none" else TransductiveConfig(mode, protocol=args.protocol)
                        options = RunOptions(profile=prof.name, config=config, transductive=ti, trunk_cache=trunk_cache, progress=False)
                        table = run_grid(foundation, ds, args.out, [task], [args.method], [k], [seed], options)
                        done = table[(table.task == task) & (table.k == k) & (table.seed == seed) & (table.transductive == mode)]
                        print(f"k={k} seed={seed} {task:12s} {mode:8s} Dice {done.dice.mean():.3f}  "
                              f"[{time.perf_counter() - start:.0f} s]", flush=True)
                trunk_cache.pop(("banks", str(ds.root)), None)  # the next draw has other support volumes
        finished = True
    except KeyboardInterrupt:
        print("interrupted: the finished runs are in", args.out, "(the same command resumes)", flush=True)
    finally:  # also when stopped part-way: say what ran, with what, for how long
        checkpoint = Path(args.checkpoint) if Path(args.checkpoint).is_file() else WEIGHTS_DIR / f"{args.checkpoint}.pt"
        write_manifest(args.out.with_suffix(".json"), command="python " + " ".join(sys.argv), profile=prof.name,
                       dataset=f"totalsegmentator-layout phantom, {prof.target_cases} cases, seed 0, {len(ds.test_ids)} test",
                       checkpoint=args.checkpoint, lr=args.lr, steps=args.steps, early_stopping=False,
                       checkpoint_sha256=sha256(checkpoint), ti_protocol=args.protocol,
                       transductive_defaults=TransductiveConfig(protocol=args.protocol).__dict__,
                       wall_seconds=round(time.perf_counter() - start), finished=finished,
                       note="wall_seconds covers this invocation only; an interrupted run resumed adds its own")
    if table is None:
        return
    print(summary(table, by=("k", "transductive")).round(3).to_string())
    print(f"{torch.get_num_threads()} threads; rows in {args.out}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    main()
