"""Ship a pre-training run as the package's phantom foundation model, with its manifest.

    python tools/ship_foundation.py runs/phantom_cpu --name phantom_cpu --command "fseft-lab pretrain ..."

Writes the run's final weights (from ``RUN/checkpoint.pt``, floats as float16, integer buffers as
they are) to ``fseft_lab/models/weights/NAME.pt``, its log to ``NAME_log.csv``, and ``NAME.json``: the
exact command, seed, software versions, hardware, wall time, sha256, and zero-shot Dice per
structure on held-out phantoms of every source and target domain (plus one check case that the
test suite recomputes), at the model's voxel size and again at each domain's own, as downloads come,
with the worst whole organs listed. A run that started (``--init``) from the weights shipped under NAME
continues their history: the manifest's ``lineage`` lists every run back to the first, and the
log holds all their steps, numbered on, with a ``run`` column. The weights file carries the run's
geometry (spacing, patch, feature size), and so does the manifest.

    python tools/ship_foundation.py --reevaluate --name phantom_cpu

scores the shipped weights again on the current phantom generator (after the phantom changed).
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import monai
import numpy as np
import pandas as pd
import torch

from fseft_lab.data.phantom import DOMAINS, GENERATOR_VERSION, VolumeTooLarge
from fseft_lab.evaluate import OVERLAP
from fseft_lab.models import zoo
from fseft_lab.outputs import atomic_write
from fseft_lab.pretrain import half_precision, zero_shot_phantoms
from fseft_lab.profiles import get_profile


def _mean(values) -> float | None:
    return round(float(values.mean()), 4) if len(values) else None


def evaluating_machine() -> dict:
    """This machine's software and hardware: the manifest's ``evaluated_on`` (the zero-shot Dice's)."""
    return {"software": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                         "numpy": np.__version__},
            "hardware": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()}}


def summary(manifest: dict) -> dict:
    """One run of a model's history, as its lineage lists it."""
    keys = ("command", "driver", "steps", "train_seconds", "sha256")
    return {**{k: manifest.get(k) for k in keys},
            "hardware": manifest["trained_on"]["machine"] or f"{manifest['evaluated_on']['hardware']['cpus']} CPU cores",
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


def evaluate(model, cases: int, table_csv: Path) -> tuple[dict, dict, pd.DataFrame, float]:
    """Zero-shot Dice on held-out phantoms of every domain, at the model's geometry: the manifest's
    ``zero_shot_dice`` and ``check_case`` sections, the per-domain table, the seconds it took.
    Raw masks, and again as the course scores every method (largest component of one-piece organs)."""
    start = time.perf_counter()
    both = zero_shot_phantoms(model, cases=cases, progress=True, largest_component=(False, True))
    table, cleaned = both[~both.largest_component], both[both.largest_component]
    table.to_csv(table_csv, index=False)
    cleaned.to_csv(table_csv.with_name(table_csv.stem + "_largest_component.csv"), index=False)
    cleaned = cleaned[cleaned.visible & ~cleaned.cut]
    shown = table[table.visible]                       # absent organs and organs outside the field of view have no Dice
    whole = shown[~shown.cut]                          # organs the scan holds entirely
    per_domain = whole.groupby(["domain", "structure"]).dice.mean().unstack().round(4)
    first = table[table.domain == "btcv_like"].case.iloc[0]
    check = table[(table.domain == "btcv_like") & (table.case == first)]
    section = {"held_out_cases_per_domain": cases, "population_seed": 900, "sliding_window_overlap": list(OVERLAP),
               "rule": "mean Dice over (case, base organ) pairs whose organ the scan holds entirely; organs cut by "
                       "the field of view are reported apart, absent ones (removed, or outside the scan) not scored",
               "per_domain": {d: row.dropna().to_dict() for d, row in per_domain.iterrows()},
               "mean_base_organs_source_domains": _mean(whole[whole.source].dice),
               "mean_base_organs_target_domains": _mean(whole[~whole.source].dice),
               "mean_base_organs_per_domain": whole.groupby("domain").dice.mean().round(4).to_dict(),
               "cut_by_field_of_view": {"pairs": int(shown.cut.sum()),
                                        "mean_source_domains": _mean(shown[shown.cut & shown.source].dice),
                                        "mean_per_domain": shown[shown.cut].groupby("domain").dice.mean().round(4).to_dict()},
               "not_visible_pairs": int((~table.visible).sum()),
               # the same pairs as the course scores every method (evaluate's default post-processing)
               "largest_component": {"rule": "each one-piece organ's largest connected component, as the course's "
                                             "evaluation scores every method; same pairs",
                                     "mean_base_organs_source_domains": _mean(cleaned[cleaned.source].dice),
                                     "mean_base_organs_target_domains": _mean(cleaned[~cleaned.source].dice),
                                     "mean_base_organs_per_domain": cleaned.groupby("domain").dice.mean().round(4).to_dict()}}
    section["native_voxel_size"] = native(model, cases, table_csv.with_name(table_csv.stem + "_native.csv"))
    check = {"domain": "btcv_like", "case": str(first),
             "dice": {r.structure: round(float(r.dice), 4) for r in check.itertuples() if np.isfinite(r.dice)}, "tolerance": 0.02}
    return section, check, per_domain, round(time.perf_counter() - start, 1)


def native(model, cases: int, table_csv: Path, worst: int = 8) -> dict:
    """Zero-shot Dice as users meet the model: the same held-out subjects exported at their domains'
    own voxel sizes (resampled to the model's, scored there), each one-piece organ's largest component
    as the course scores; organs cut by the field of view apart; the worst whole organs listed."""
    tables, too_large = [], {}
    for domain in DOMAINS:   # one domain at a time: a domain whose scans the renderer refuses at their own voxels is named
        try:
            tables.append(zero_shot_phantoms(model, domains=(domain,), cases=cases, progress=True, largest_component=True,
                                             spacing="native"))
        except VolumeTooLarge as error:
            too_large[domain] = str(error)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(table_csv, index=False)
    shown = table[table.visible]
    whole = shown[~shown.cut]
    rows = whole.nsmallest(worst, "dice")
    return {"rule": "the held-out subjects exported at each domain's own voxel size (e.g. 0.8 x 0.8 x 2.5 mm), "
                    "resampled to the model's and scored there, largest component of one-piece organs; mean over "
                    "(case, base organ) pairs the scan holds entirely",
            "mean_base_organs_source_domains": _mean(whole[whole.source].dice),
            "mean_base_organs_target_domains": _mean(whole[~whole.source].dice),
            "mean_base_organs_per_domain": whole.groupby("domain").dice.mean().round(4).to_dict(),
            "cut_by_field_of_view": {"pairs": int(shown.cut.sum()), "mean": _mean(shown[shown.cut].dice)},
            "whole_pairs": len(whole), "whole_pairs_below_half": int((whole.dice < 0.5).sum()),
            "not_scored": {d: f"the phantom renderer refuses its scans at their own voxel size: {e}" for d, e in too_large.items()},
            "worst_whole_pairs": [{"domain": r.domain, "case": str(r.case), "structure": r.structure,
                                   "dice": round(float(r.dice), 3), "truth_ml": round(float(r.truth_ml)),
                                   "predicted_ml": round(float(r.predicted_ml))} for r in rows.itertuples()]}


def report(per_domain: pd.DataFrame, section: dict) -> None:
    print(per_domain.to_string())
    print(f"mean base-organ Dice, organs wholly in the scan: source domains {section['mean_base_organs_source_domains']}, "
          f"target domains {section['mean_base_organs_target_domains']}; cut by the field of view: {section['cut_by_field_of_view']}")
    cleaned = section["largest_component"]
    print(f"the same pairs, each one-piece organ's largest component (as the course scores): source domains "
          f"{cleaned['mean_base_organs_source_domains']}, target domains {cleaned['mean_base_organs_target_domains']}")
    at = section["native_voxel_size"]
    print(f"at the domains' own voxel sizes (largest component): source domains {at['mean_base_organs_source_domains']}, "
          f"target domains {at['mean_base_organs_target_domains']}; the worst whole organs:")
    print(pd.DataFrame(at["worst_whole_pairs"]).to_string(index=False))


def reevaluate(name: str, cases: int) -> None:
    """Score the weights shipped as ``name`` again on the current phantom generator (the manifest's
    zero-shot sections and ``evaluated_with_generator_version``); the file gains its geometry."""
    path = zoo.WEIGHTS_DIR / f"{name}.json"
    manifest = json.loads(path.read_text())
    target = zoo.WEIGHTS_DIR / manifest["file"]
    weights = zoo.read_state_dict(target, "shipped weights")
    geometry = zoo.get_checkpoint(name).geometry if name in zoo.ZOO else get_profile(manifest["profile"]).geometry
    weights.pop(zoo.GEOMETRY_KEY, None)
    with atomic_write(target) as tmp:
        torch.save({**weights, **zoo.geometry_state(geometry)}, tmp)
    section, check, per_domain, seconds = evaluate(zoo.load_foundation(name), cases, Path(f"/tmp/{name}_zero_shot.csv"))
    sha = zoo.sha256(target)                       # the same weights, the file now with their geometry
    if manifest.get("lineage"):
        manifest["lineage"][-1]["sha256"] = sha
    manifest.update({"sha256": sha, "size_bytes": target.stat().st_size, "geometry": asdict(geometry),
                     "evaluated_with_generator_version": GENERATOR_VERSION, "evaluated_on": evaluating_machine(),
                     "zero_shot_dice": section, "check_case": check,
                     "evaluation_seconds": seconds})
    path.write_text(json.dumps(manifest, indent=1))
    report(per_domain, section)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, nargs="?", help="pre-training run folder (not with --reevaluate)")
    parser.add_argument("--reevaluate", action="store_true",
                        help="score the shipped NAME again on the current phantom generator, ship nothing new")
    parser.add_argument("--name", default="phantom_cpu")
    parser.add_argument("--command", default=None, help="the exact command that produced the run (default: RUN/command.txt)")
    parser.add_argument("--driver", default=None,
                        help="what launched that command, if not a person (e.g. a script on an offline GPU machine)")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--generator-version", type=int, default=GENERATOR_VERSION,
                        help="phantom generator version of the training data")
    args = parser.parse_args()
    if args.reevaluate:
        return reevaluate(args.name, args.cases)
    run = json.loads((args.run / "run.json").read_text())
    command = args.command or (args.run / "command.txt").read_text().strip()
    target = zoo.WEIGHTS_DIR / f"{args.name}.pt"
    init = None  # provenance of the weights the run started from, read before they may be overwritten
    if run.get("init") not in (None, "None"):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        init = {"file": run["init"], "sha256": zoo.sha256(Path(run["init"])), "at_commit": commit}
    if (args.run / "checkpoint.pt").is_file():
        checkpoint = zoo.read_state_dict(args.run / "checkpoint.pt", "pre-training checkpoint")
        if checkpoint["step"] != int(run["steps"]):
            raise ValueError(f"{args.run} stopped at step {checkpoint['step']} of {run['steps']}")
        weights = checkpoint["model"]
    else:  # a run brought back from an offline GPU machine: model.pt only (written once the last step is done)
        weights = zoo.read_state_dict(args.run / "model.pt", "pre-trained model")
        weights.pop(zoo.GEOMETRY_KEY, None)
    geometry = get_profile(run["profile"]).geometry                 # the run pre-trained at its profile's geometry
    with atomic_write(target) as tmp:
        torch.save({**half_precision(weights), **zoo.geometry_state(geometry)}, tmp)
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
    zero_shot, check, per_domain, seconds = evaluate(zoo.load_foundation(args.name), args.cases, args.run / "zero_shot.csv")
    manifest = {
        "name": args.name, "file": target.name, "sha256": zoo.sha256(target), "size_bytes": target.stat().st_size,
        "command": command, "driver": args.driver, "phantom_generator_version": args.generator_version,
        "evaluated_with_generator_version": GENERATOR_VERSION, "seed": int(run["seed"]), "profile": run["profile"],
        "steps": int(run["steps"]),
        "train_seconds": run["train_seconds"], "wall_time_note": "train_seconds counts optimiser steps only",
        # two machines: the one the run trained on (its torch device; RUN/device.txt, where the run
        # wrote one, names the machine and its software) and this one, which scored the zero-shot Dice
        "trained_on": {"device": run["device"],
                       "machine": (args.run / "device.txt").read_text().splitlines()
                       if (args.run / "device.txt").is_file() else None},
        "evaluated_on": evaluating_machine(),
        "init": init,
        "geometry": asdict(geometry),
        "zero_shot_dice": zero_shot,
        "check_case": check,
        "evaluation_seconds": seconds,
    }
    manifest["lineage"] = history + [summary(manifest)]
    (zoo.WEIGHTS_DIR / f"{args.name}.json").write_text(json.dumps(manifest, indent=1))
    report(per_domain, zero_shot)


if __name__ == "__main__":
    main()
