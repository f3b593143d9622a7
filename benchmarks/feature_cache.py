"""Feature-cache speed-up: seconds per epoch without and with the cache, in one run.

    python benchmarks/feature_cache.py [--profile cpu] [--k 1] [--epochs 4]

Three rows: the linear probe and the spatial adapter with the trunk frozen (the trunk's features
cached), and decoder fine-tuning (``linear_probe`` with ``decoder="fine-tuned"``,
the paper's novel-structure recipe: the Swin encoder's hidden states cached). Both paths train on
the same crop bank, so their learning curves must agree: the largest loss difference over the
epochs is printed. Per-epoch time is the median over epochs after the first; the cache's one-off
cost (the frozen part on every banked crop) is printed separately. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from fseft_lab.adapt import AdaptConfig, adapt
from fseft_lab.crop_bank import cache_level
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import load_cases
from fseft_lab.models.zoo import load_foundation
from fseft_lab.profiles import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--k", type=int, default=1, help="support volumes")
    parser.add_argument("--epochs", type=int, default=4, help="epochs timed per path")
    parser.add_argument("--task", default="liver")
    parser.add_argument("--checkpoint", default="phantom_cpu")
    args = parser.parse_args()
    prof = get_profile(args.profile)
    foundation = load_foundation(args.checkpoint)
    geometry = foundation.geometry
    print(f"{platform.machine()} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
          f"profile {prof.name} ({geometry}, {prof.crops_per_volume} crops per volume) | k = {args.k}")
    with tempfile.TemporaryDirectory() as tmp:
        ds = export_phantom(Path(tmp) / "target", "totalsegmentator", cases=args.k + 1, seed=7, spacing=geometry.spacing_mm,
                            num_test=1, progress=False)
        support = load_cases(ds, ds.case_ids[: args.k], [args.task], geometry)
    print(f"{'method':28s} {'cache':8s} {'uncached s/epoch':>17s} {'cached s/epoch':>15s} {'ratio':>7s} "
          f"{'cache build s':>14s} {'max |dloss|':>12s}")
    for method, decoder in (("linear_probe", "frozen"), ("spatial_adapter", "frozen"), ("linear_probe", "fine-tuned")):
        runs = {}
        for cache in (False, True):
            config = AdaptConfig(epochs=args.epochs, crop_bank=8 * prof.crops_per_volume, feature_cache=cache,
                                 stop_patience=0, validate_every=0)
            result = adapt(foundation, method, support, decoder=decoder, config=config, profile=prof.name, progress=False)
            seconds = result.curve["seconds"].to_numpy()
            per_epoch = float(np.median(np.diff(seconds)))
            runs[cache] = (per_epoch, seconds[0] - per_epoch, result.curve["loss"].to_numpy())
        diff = float(np.abs(runs[True][2] - runs[False][2]).max())
        label = f"{method}, decoder {decoder}"
        print(f"{label:28s} {cache_level(result.model):8s} {runs[False][0]:>17.3f} {runs[True][0]:>15.4f} "
              f"{runs[False][0] / runs[True][0]:>6.1f}x {runs[True][1]:>14.1f} {diff:>12.1e}", flush=True)


if __name__ == "__main__":
    main()
