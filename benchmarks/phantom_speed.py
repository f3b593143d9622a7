"""Phantom generation speed and dataset size on disk (prints figures; asserts nothing).

    python benchmarks/phantom_speed.py [--profile cpu] [--cases 5]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from fseft_lab.data import phantom
from fseft_lab.data.layouts import export_phantom
from fseft_lab.profiles import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    print(f"profile {profile.name}: {profile.geometry.spacing_mm} mm | {platform.processor() or platform.machine()} | "
          f"numpy {np.__version__}")
    for domain in ("btcv_like", "totalseg_like", "flare_like"):
        seconds, shapes = [], []
        for i in range(args.cases):
            start = time.perf_counter()
            vol = phantom.generate(0, i, domain, spacing=profile.geometry.spacing_mm)
            seconds.append(time.perf_counter() - start)
            shapes.append(vol.image.shape)
        print(f"{domain:14s} {str(shapes[0]):16s} "
              f"{np.mean(seconds):.2f} +- {np.std(seconds):.2f} s per volume")
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("totalsegmentator", "msd"):
            start = time.perf_counter()
            ds = export_phantom(Path(tmp) / layout, layout, cases=args.cases, spacing=profile.geometry.spacing_mm,
                                num_test=1, progress=False)
            size = sum(p.stat().st_size for p in ds.root.rglob("*") if p.is_file())
            print(f"export {layout:16s} {args.cases} cases: {time.perf_counter() - start:.1f} s, "
                  f"{size / 1e6:.1f} MB on disk ({size / 1e6 / args.cases:.2f} MB per case)")


if __name__ == "__main__":
    main()
