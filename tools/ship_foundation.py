"""Ship a pre-training run as the package's phantom foundation model, with its manifest.

    python tools/ship_foundation.py runs/phantom_cpu --name phantom_cpu --command "fseft-lab pretrain ..."

Writes the run's final weights (from ``RUN/checkpoint.pt``, floats as float16, integer buffers as
they are) to ``fseft_lab/models/weights/NAME.pt``, its log to ``NAME_log.csv``, and ``NAME.json``: the
exact command, seed, software versions, hardware, wall time, sha256, and zero-shot Dice per
structure on held-out phantoms of every source and target domain (plus one check case that the
test suite recomputes).
"""
import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import monai
import numpy as np
import torch

from fseft_lab.models import zoo
from fseft_lab.data.phantom import GENERATOR_VERSION
from fseft_lab.pretrain import half_precision, zero_shot_phantoms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="phantom_cpu")
    parser.add_argument("--command", required=True, help="the exact command that produced the run")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--generator-version", type=int, default=GENERATOR_VERSION,
                        help="phantom generator version of the training data")
    args = parser.parse_args()
    run = json.loads((args.run / "run.json").read_text())
    target = zoo.WEIGHTS_DIR / f"{args.name}.pt"
    checkpoint = torch.load(args.run / "checkpoint.pt", map_location="cpu", weights_only=True)
    if checkpoint["step"] != int(run["steps"]):
        raise ValueError(f"{args.run} stopped at step {checkpoint['step']} of {run['steps']}")
    torch.save(half_precision(checkpoint["model"]), target)
    shutil.copyfile(args.run / "log.csv", zoo.WEIGHTS_DIR / f"{args.name}_log.csv")
    model = zoo.load_foundation(args.name)
    start = time.perf_counter()
    table = zero_shot_phantoms(model, run["profile"], cases=args.cases, progress=True)
    per_domain = table.groupby(["domain", "structure"]).dice.mean().unstack().round(4)
    check = table[(table.domain == "btcv_like") & (table.case == table[table.domain == "btcv_like"].case.iloc[0])]
    source = table[table.source].dice.mean()
    manifest = {
        "name": args.name, "file": target.name, "sha256": zoo.sha256(target), "size_bytes": target.stat().st_size,
        "command": args.command, "phantom_generator_version": args.generator_version,
        "evaluated_with_generator_version": GENERATOR_VERSION, "seed": int(run["seed"]), "profile": run["profile"], "steps": int(run["steps"]),
        "train_seconds": run["train_seconds"], "wall_time_note": "train_seconds counts optimiser steps only",
        "software": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                     "numpy": np.__version__},
        "hardware": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                     "device": run["device"]},
        "zero_shot_dice": {"held_out_cases_per_domain": args.cases, "population_seed": 900,
                           "per_domain": {d: row.dropna().to_dict() for d, row in per_domain.iterrows()},
                           "mean_base_organs_source_domains": round(float(source), 4),
                           "mean_base_organs_per_domain": table.groupby("domain").dice.mean().round(4).to_dict()},
        "check_case": {"domain": "btcv_like", "case": str(check.case.iloc[0]),
                       "dice": {r.structure: round(float(r.dice), 4) for r in check.itertuples()}, "tolerance": 0.02},
        "evaluation_seconds": round(time.perf_counter() - start, 1),
    }
    (zoo.WEIGHTS_DIR / f"{args.name}.json").write_text(json.dumps(manifest, indent=1))
    print(per_domain.to_string())
    print(f"mean base-organ Dice, source domains: {source:.3f}")


if __name__ == "__main__":
    main()
