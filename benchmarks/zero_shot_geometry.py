"""Zero-shot Dice of the shipped model per profile, and at a geometry it was not trained for
(prints figures; asserts nothing).

    python benchmarks/zero_shot_geometry.py [--tasks liver pancreas spleen stomach] [--seed 5]

A profile changes budgets, not the model's geometry, so ``--profile cpu`` and ``--profile gpu``
must give the same zero-shot Dice on the same subjects. The last column forces the geometry the
``gpu`` profile used before models carried theirs (2 mm voxels, 96^3 patches), to show what
running a model away from its own geometry costs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import RunOptions, run
from fseft_lab.models.zoo import load_foundation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["liver", "pancreas", "spleen", "stomach"])
    parser.add_argument("--seed", type=int, default=5, help="phantom population seed")
    parser.add_argument("--cases", type=int, default=4, help="subjects exported; the last two are the test cases")
    parser.add_argument("--checkpoint", default="phantom_cpu")
    args = parser.parse_args()
    foundation = load_foundation(args.checkpoint)
    print(f"{args.checkpoint}: {foundation.geometry}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = export_phantom(Path(tmp) / "ts", "totalsegmentator", cases=args.cases, seed=args.seed, num_test=2,
                            spacing=foundation.geometry.spacing_mm, progress=False)
        for task in args.tasks:
            for label, options in (("--profile cpu", RunOptions(profile="cpu", progress=False)),
                                   ("--profile gpu", RunOptions(profile="gpu", progress=False)),
                                   ("forced 2 mm, 96^3", RunOptions(profile="gpu", spacing_mm=2.0, patch_size=96, progress=False))):
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    table, _ = run(foundation, ds, task, "zero_shot", k=1, seed=0, options=options)
                rows.append({"task": task, "run": label, "dice": table.dice.mean(), "test cases": table.case.nunique(),
                             "seconds": time.perf_counter() - start, "warned": any("geometry" in str(w.message) for w in caught)})
    table = pd.DataFrame(rows)
    print(table.pivot(index="task", columns="run", values="dice").round(3).to_string())
    print(f"warned only when forced: {table.groupby('run').warned.all().to_dict()}")


if __name__ == "__main__":
    main()
