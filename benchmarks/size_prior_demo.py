"""The masks behind notebook 08's demonstration: one run of the CPU grid, with and without a size prior.

    python benchmarks/size_prior_demo.py [--task spleen] [--seed 0] [--queries s0012 s0013]

Re-runs one draw of the first block of ``grids/fseft_phantom_cpu.toml`` that holds both
``spatial_adapter+none`` and ``spatial_adapter+penalty`` at k = 1, exactly as the grid runs it
(same dataset, profile, schedule and per-volume protocol), on the chosen query volumes only, and
keeps what the grid's CSV cannot: the masks and the predicted size per epoch. Writes, under
``--out`` (default ``results/size_prior_demo``):

- ``.npz``: for each query, the CT, the true mask and both predicted masks (as scored), cropped to
  the organ's neighbourhood;
- ``.csv``: the rows (Dice, sizes), as the grid writes them;
- ``_curves.csv``: the predicted size of each query per epoch, and the prior;
- ``.json``: the manifest (command, model sha256, generator version, machine, wall time).

Notebook 08 draws the masks and checks the Dice against the grid's own rows for the same draw.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fseft_lab.benchmark import block_dataset, read_grid, split_method
from fseft_lab.data.phantom import GENERATOR_VERSION
from fseft_lab.experiments import RunOptions, load_cases, run, write_manifest
from fseft_lab.models.foundation import resolve_geometry
from fseft_lab.models.zoo import WEIGHTS_DIR, load_foundation, sha256
from fseft_lab.outputs import atomic_write
from fseft_lab.profiles import get_profile

VARIANTS = ("spatial_adapter+none", "spatial_adapter+penalty")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=Path("grids/fseft_phantom_cpu.toml"))
    parser.add_argument("--task", default="spleen")
    parser.add_argument("--seed", type=int, default=0, help="the grid's draw")
    parser.add_argument("--queries", nargs="+", default=["s0012", "s0013"], help="test volumes of that draw")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--checkpoint", default="phantom_cpu")
    parser.add_argument("--data", type=Path, default=Path("data/benchmark"))
    parser.add_argument("--margin", type=int, default=6, help="voxels kept around the masks in the crops")
    parser.add_argument("--block", default=None, help="the grid block's name (default: the first that runs both variants "
                        "at k = 1 on --task)")
    parser.add_argument("--out", type=Path, default=Path("results/size_prior_demo"))
    args = parser.parse_args()
    block = next((b for b in read_grid(args.grid) if args.task in b.tasks and 1 in b.ks and set(VARIANTS) <= set(b.methods)
                  and args.block in (None, b.name)), None)
    if block is None:
        sys.exit(f"error: no block of {args.grid}{f' named {args.block!r}' if args.block else ''} runs {args.task!r} at "
                 f"k = 1 with both {' and '.join(VARIANTS)}")
    start, profile = time.perf_counter(), get_profile(args.profile)
    foundation = load_foundation(args.checkpoint)
    geometry = resolve_geometry(foundation, profile.name)
    ds = block_dataset(block, args.data, profile, geometry.spacing_mm)
    unknown = sorted(set(args.queries) - set(ds.test_ids))
    if unknown:
        sys.exit(f"error: queries {unknown} are not test volumes of {ds.root} (those are {', '.join(ds.test_ids)})")

    tables, masks, curves, trunk_cache = [], {}, [], {}
    for spec in VARIANTS:
        method, ti = split_method(spec)
        # lambda = 0 adapts once for all queries and logs their mean size: one query at a time keeps each one's
        for queries in ([[q] for q in args.queries] if ti.weight == 0 else [args.queries]):
            options = RunOptions(decoder=block.decoder, profile=profile.name, config=block.config(), transductive=ti,
                                 test=queries, trunk_cache=trunk_cache, progress=True)
            table, result = run(foundation, ds, args.task, method, 1, args.seed, options)
            tables.append(table.assign(spec=spec))
            for case in queries:
                masks[case, spec] = result.test_masks[case][0]
                curve = (result.per_volume or {}).get(case, result).curve
                column = curve.dropna(subset=[f"query_size/{args.task}"])
                curves.append(pd.DataFrame({"case": case, "spec": spec, "epoch": column["epoch"],
                                            "predicted_voxels": column[f"query_size/{args.task}"],
                                            "prior_voxels": curve.attrs["size_prior"][args.task]}))
            print(f"{spec}: " + ", ".join(f"{r.case} Dice {r.dice:.3f}" for r in table.itertuples()), flush=True)

    arrays = {}
    for case in load_cases(ds, args.queries, [args.task], geometry):
        truth = np.asarray(case["label"][0] == 1)
        union = truth | np.logical_or.reduce([np.asarray(masks[case["case"], s]) for s in VARIANTS])
        box = tuple(slice(max(0, lo - args.margin), hi + 1 + args.margin)
                    for lo, hi in zip(np.argwhere(union).min(0), np.argwhere(union).max(0)))
        arrays[f"{case['case']}/image"] = np.asarray(case["image"][0])[box].astype(np.float16)
        arrays[f"{case['case']}/truth"] = truth[box]
        for spec in VARIANTS:
            arrays[f"{case['case']}/{spec}"] = np.asarray(masks[case["case"], spec])[box].astype(bool)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out.with_suffix(".npz")) as tmp:
        np.savez_compressed(tmp, **arrays)
    with atomic_write(args.out.with_suffix(".csv")) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, index=False)
    with atomic_write(args.out.with_name(args.out.name + "_curves.csv")) as tmp:
        pd.concat(curves, ignore_index=True).to_csv(tmp, index=False)
    checkpoint = Path(args.checkpoint) if Path(args.checkpoint).is_file() else WEIGHTS_DIR / f"{args.checkpoint}.pt"
    write_manifest(args.out.with_suffix(".json"), command="python " + " ".join(sys.argv), grid=str(args.grid),
                   block=block.name, task=args.task, k=1, seed=args.seed, queries=args.queries, variants=list(VARIANTS),
                   profile=profile.name, checkpoint=args.checkpoint, checkpoint_sha256=sha256(checkpoint),
                   phantom_generator=GENERATOR_VERSION, transductive=split_method(VARIANTS[-1])[1].__dict__,
                   spacing_mm=geometry.spacing_mm, wall_seconds=round(time.perf_counter() - start))
    print(f"wrote {args.out}.npz, .csv, _curves.csv, .json in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
