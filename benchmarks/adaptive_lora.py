"""Adaptive-rank LoRA against LoRA on a novel structure, over seeds; writes results/.

    python benchmarks/adaptive_lora.py [--profile cpu] [--task heart] [--k 1] [--seeds 0 1 2]

Both methods adapt the encoder's attention with the decoder fine-tuned and a new head row (the
paper's set-up for novel structures), on the same few-shot draws of the TotalSegmentator-like
phantom target: LoRA at rank 4 and adaptive-rank LoRA starting from rank 8 with its L1
soft-thresholding. Rows go to ``--out`` (resumable: delete it to re-run with other settings), the learned ranks per layer to
``<out>_ranks.csv``, and a manifest beside them. Prints mean Dice +- std and the ranks.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from fseft_lab.adapt import AdaptConfig
from fseft_lab.data.layouts import export_phantom
from fseft_lab.data.phantom import GENERATOR_VERSION
from fseft_lab.experiments import RUN_KEY, RunOptions, append_rows, check_post_processing, run, summary, write_manifest
from fseft_lab.methods.adaptive_lora import AdaptiveLoRAConfig, learned_ranks
from fseft_lab.models.zoo import WEIGHTS_DIR, checkpoint_geometry, load_foundation, sha256
from fseft_lab.profiles import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--task", default="heart", help="a novel task (new head rows), e.g. heart, gluteus")
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3, help="1e-4 (the paper's rate with the decoder "
                        "training) leaves a new head row where it started in the epochs a CPU affords")
    parser.add_argument("--num-test", type=int, default=2, help="test volumes scored per run")
    parser.add_argument("--checkpoint", default="phantom_cpu")
    parser.add_argument("--data", type=Path, default=Path("data/benchmark_lora"))
    parser.add_argument("--out", type=Path, default=Path("results/adaptive_lora.csv"))
    args = parser.parse_args()
    prof = get_profile(args.profile)
    start = time.perf_counter()
    ds = export_phantom(args.data / f"totalseg_like_{prof.name}", "totalsegmentator", cases=prof.target_cases, seed=0,
                        spacing=checkpoint_geometry(args.checkpoint).spacing_mm, overwrite=True, progress=False)
    foundation = load_foundation(args.checkpoint)
    ranks_csv = args.out.with_name(f"{args.out.stem}_ranks.csv")
    table = pd.read_csv(args.out) if args.out.is_file() else pd.DataFrame(columns=RUN_KEY)
    check_post_processing(table, True, args.out)   # rows scored before the default changed are raw: no mixing
    for seed in args.seeds:
        for method in ("lora", "adaptive_lora"):
            if ((table.method == method) & (table.seed == seed)).any():
                continue
            options = RunOptions(decoder="fine-tuned", profile=prof.name, config=AdaptConfig(epochs=args.epochs, lr=args.lr),
                                 test=ds.test_ids[:args.num_test], progress=False)
            rows, result = run(foundation, ds, args.task, method, args.k, seed, options)
            if method == "adaptive_lora":
                ranks = pd.DataFrame({"layer": list(learned_ranks(result.model)), "rank": list(learned_ranks(result.model).values())})
                append_rows(ranks.assign(seed=seed, max_rank=3 * AdaptiveLoRAConfig().rank), ranks_csv)
            table = append_rows(rows, args.out)
            print(f"seed {seed} {method:13s} Dice {rows.dice.mean():.3f} | {result.epochs_run} epochs, "
                  f"{result.train_seconds:.0f} s  [{time.perf_counter() - start:.0f} s]", flush=True)
    checkpoint = Path(args.checkpoint) if Path(args.checkpoint).is_file() else WEIGHTS_DIR / f"{args.checkpoint}.pt"
    write_manifest(args.out.with_suffix(".json"), command="python " + " ".join(sys.argv), profile=prof.name,
                   task=args.task, k=args.k, decoder="fine-tuned", num_test=args.num_test, epochs=args.epochs, lr=args.lr,
                   checkpoint=args.checkpoint, checkpoint_sha256=sha256(checkpoint), phantom_generator=GENERATOR_VERSION,
                   adaptive_lora=AdaptiveLoRAConfig().__dict__, wall_seconds=round(time.perf_counter() - start),
                   note="wall_seconds covers this invocation only")
    print(summary(table).round(3).to_string())
    print(pd.read_csv(ranks_csv).groupby("seed")["rank"].describe().round(1).to_string())


if __name__ == "__main__":
    main()
