"""Zero-shot Dice subject by subject: the worst rows, not only the means (prints figures; asserts nothing).

    python benchmarks/zero_shot_subjects.py [--domains totalseg_like flare_like btcv_like] [--cases 10]
                                            [--seed 900] [--out results/zero_shot_subjects.csv]

Held-out subjects of each domain are exported twice, at the domain's own voxel size (as real
downloads come: 1.5 mm, or 0.7-0.8 mm in plane with 2-2.5 mm slices) and at the model's; both are
resampled to the model's voxel size and scored there, each one-piece organ cut to its largest
component as the course scores every method. Prints, per organ, the mean over subjects that hold it
wholly at both voxel sizes and their difference; every (subject, organ) below Dice 0.5 with its
true and predicted volumes; organs cut by the field of view apart. A domain whose scans the
phantom renderer refuses at their own voxel size (``VolumeTooLarge``: a large subject at
AMOS-like 0.7 x 0.7 x 2 mm or KiTS-like 0.8 x 0.8 x 1 mm) is left out, with a line that says so. ``--out`` keeps the table
with a manifest that names the model (sha256) and the phantom generator.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from fseft_lab.data.phantom import GENERATOR_VERSION, VolumeTooLarge
from fseft_lab.experiments import write_csv, write_manifest
from fseft_lab.models.zoo import load_foundation, manifest, sha256
from fseft_lab.pretrain import zero_shot_phantoms

FAILURE = 0.5   # a whole organ below this Dice counts as a failure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["totalseg_like", "flare_like", "btcv_like"],
                        help="the two targets and a source whose scans the renderer makes at their own voxel size")
    parser.add_argument("--cases", type=int, default=10, help="held-out subjects per domain")
    parser.add_argument("--seed", type=int, default=900, help="population seed (the sources use 100-104)")
    parser.add_argument("--checkpoint", default="phantom_cpu", help="a zoo name or a weights file (e.g. a pre-training run's model.pt)")
    parser.add_argument("--data", type=Path, default=Path("data/heldout"), help="where the exports are kept")
    parser.add_argument("--out", type=Path, help="CSV of every row (and a .json manifest beside it)")
    args = parser.parse_args()
    model = load_foundation(args.checkpoint)
    start = time.perf_counter()
    tables = []
    for domain in args.domains:
        try:
            tables += [zero_shot_phantoms(model, domains=(domain,), cases=args.cases, seed=args.seed, data_dir=args.data,
                                          progress=True, largest_component=True, spacing=spacing)
                       for spacing in ("native", "model")]
        except VolumeTooLarge as error:
            print(f"{domain} left out: the phantom renderer refuses its scans at their own voxel size ({error})")
    table = pd.concat(tables, ignore_index=True)
    seconds = time.perf_counter() - start
    table = table[table.visible]
    wide = table.pivot_table(index=["domain", "case", "structure"], columns="spacing",
                             values=["dice", "truth_ml", "predicted_ml", "cut"], aggfunc="first")
    wide.columns = [f"{v}_{s}" for v, s in wide.columns]
    wide = wide.reset_index()
    whole = wide[(wide.cut_native == False) & (wide.cut_model == False)]  # noqa: E712 (NaN: not in that export)
    print(f"{args.checkpoint} ({model.geometry}), population seed {args.seed}, {args.cases} subjects x "
          f"{table.domain.nunique()} domains ({', '.join(sorted(table.domain.unique()))}), generator v{GENERATOR_VERSION}; {seconds:.0f} s")
    means = whole.groupby("structure")[["dice_native", "dice_model"]].mean()
    means["difference"] = means.dice_native - means.dice_model
    print("\nMean Dice over organs wholly in the scan, native voxel size against the model's:")
    print(means.round(3).to_string())
    print(f"all organs: native {whole.dice_native.mean():.3f}, model's {whole.dice_model.mean():.3f}")
    print(f"\nWhole organs below Dice {FAILURE} (of {len(whole)} at native voxel size):")
    worst = whole[whole.dice_native < FAILURE].sort_values("dice_native")
    print(worst.round(3).to_string(index=False) if len(worst) else "none")
    cut = wide[wide.cut_native == True]  # noqa: E712
    print(f"\nOrgans cut by the field of view ({len(cut)}), mean Dice native {cut.dice_native.mean():.3f}; the worst:")
    print(cut.sort_values("dice_native").head(8).round(3).to_string(index=False))
    if args.out:
        write_csv(wide, args.out)
        write_manifest(args.out.with_suffix(".json"), command="python benchmarks/zero_shot_subjects.py "
                       + " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                  for k, v in vars(args).items() if v is not None),
                       model=args.checkpoint, model_sha256=(sha256(Path(args.checkpoint)) if Path(args.checkpoint).is_file()
                                                             else manifest(args.checkpoint)["sha256"]),
                       generator_version=GENERATOR_VERSION, seconds=round(seconds))


if __name__ == "__main__":
    main()
