"""Ship a pre-training run as the package's phantom foundation model, with its manifest.

    python tools/ship_foundation.py runs/phantom_cpu --name phantom_cpu --command "fseft-lab pretrain ..."

Writes the run's final weights (from ``RUN/checkpoint.pt``, floats as float16, integer buffers as
they are) to ``fseft_lab/models/weights/NAME.pt``, its log to ``NAME_log.csv``, and ``NAME.json``: the
exact command, seed, software versions, hardware, wall time, sha256, and zero-shot Dice per
structure on held-out phantoms of every source and target domain (plus one check case that the
test suite recomputes). A run that started (``--init``) from the weights shipped under NAME
continues their history: the manifest's ``lineage`` lists every run back to the first, and the
log holds all their steps, numbered on, with a ``run`` column.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import monai
import numpy as np
import pandas as pd
import torch

from fseft_lab.models import zoo
from fseft_lab.data.phantom import GENERATOR_VERSION
from fseft_lab.pretrain import half_precision, zero_shot_phantoms


def summary(manifest: dict) -> dict:
    """One run of a model's history, as its lineage lists it."""
    keys = ("command", "driver", "steps", "train_seconds", "sha256")
    return {**{k: manifest.get(k) for k in keys},
            "hardware": manifest.get("trained_on") or f"{manifest['hardware']['cpus']} CPU cores",
            "mean_base_organs_source_domains": manifest["zero_shot_dice"]["mean_base_organs_source_domains"]}


def previous_runs(name: str, init: dict | None) -> list[dict]:
    """The lineage of the weights shipped as ``name`` if this run started from them, else []."""
    path = zoo.WEIGHTS_DIR / f"{name}.json"
    if init is None or not path.is_file():
        return []
    old = json.loads(path.read_text())
    if old["sha256"] != init["sha256"]:
        return []
    return old.get("lineage") or [summary(old)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="phantom_cpu")
    parser.add_argument("--command", default=None, help="the exact command that produced the run (default: RUN/command.txt)")
    parser.add_argument("--driver", default=None, help="what launched that command, if not a person (e.g. a script on a lent GPU)")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--generator-version", type=int, default=GENERATOR_VERSION,
                        help="phantom generator version of the training data")
    args = parser.parse_args()
    run = json.loads((args.run / "run.json").read_text())
    command = args.command or (args.run / "command.txt").read_text().strip()
    target = zoo.WEIGHTS_DIR / f"{args.name}.pt"
    init = None  # provenance of the weights the run started from, read before they may be overwritten
    if run.get("init") not in (None, "None"):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        init = {"file": run["init"], "sha256": zoo.sha256(Path(run["init"])), "at_commit": commit}
    if (args.run / "checkpoint.pt").is_file():
        checkpoint = torch.load(args.run / "checkpoint.pt", map_location="cpu", weights_only=True)
        if checkpoint["step"] != int(run["steps"]):
            raise ValueError(f"{args.run} stopped at step {checkpoint['step']} of {run['steps']}")
        weights = checkpoint["model"]
    else:  # a run brought back from a lent GPU: model.pt only (written once the last step is done)
        weights = torch.load(args.run / "model.pt", map_location="cpu", weights_only=True)
    torch.save(half_precision(weights), target)
    history = previous_runs(args.name, init)
    log = pd.read_csv(args.run / "log.csv")
    if history:
        old = pd.read_csv(zoo.WEIGHTS_DIR / f"{args.name}_log.csv")
        old = old if "run" in old else old.assign(run=0)[["run", *old.columns]]
        log = pd.concat([old, log.assign(run=len(history), step=log.step + len(old))[old.columns]], ignore_index=True)
    else:
        log.insert(0, "run", 0)
    shutil.copyfile(args.run / "log.csv", args.run / "log_of_this_run.csv")
    log.to_csv(zoo.WEIGHTS_DIR / f"{args.name}_log.csv", index=False)
    model = zoo.load_foundation(args.name)
    start = time.perf_counter()
    table = zero_shot_phantoms(model, run["profile"], cases=args.cases, progress=True)
    per_domain = table.groupby(["domain", "structure"]).dice.mean().unstack().round(4)
    check = table[(table.domain == "btcv_like") & (table.case == table[table.domain == "btcv_like"].case.iloc[0])]
    source = table[table.source].dice.mean()
    manifest = {
        "name": args.name, "file": target.name, "sha256": zoo.sha256(target), "size_bytes": target.stat().st_size,
        "command": command, "driver": args.driver, "phantom_generator_version": args.generator_version,
        "evaluated_with_generator_version": GENERATOR_VERSION, "seed": int(run["seed"]), "profile": run["profile"], "steps": int(run["steps"]),
        "train_seconds": run["train_seconds"], "wall_time_note": "train_seconds counts optimiser steps only",
        "software": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                     "numpy": np.__version__},
        "hardware": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                     "device": run["device"]},
        "software_hardware_note": "software and hardware above are the evaluating machine's; trained_on, where "
                                  "present, is the machine the run trained on (RUN/device.txt)",
        "trained_on": (args.run / "device.txt").read_text().splitlines() if (args.run / "device.txt").is_file() else None,
        "init": init,
        "zero_shot_dice": {"held_out_cases_per_domain": args.cases, "population_seed": 900,
                           "per_domain": {d: row.dropna().to_dict() for d, row in per_domain.iterrows()},
                           "mean_base_organs_source_domains": round(float(source), 4),
                           "mean_base_organs_per_domain": table.groupby("domain").dice.mean().round(4).to_dict()},
        "check_case": {"domain": "btcv_like", "case": str(check.case.iloc[0]),
                       "dice": {r.structure: round(float(r.dice), 4) for r in check.itertuples()}, "tolerance": 0.02},
        "evaluation_seconds": round(time.perf_counter() - start, 1),
    }
    manifest["lineage"] = history + [summary(manifest)]
    (zoo.WEIGHTS_DIR / f"{args.name}.json").write_text(json.dumps(manifest, indent=1))
    print(per_domain.to_string())
    print(f"mean base-organ Dice, source domains: {source:.3f}")


if __name__ == "__main__":
    main()
