"""What each adaptation method costs: seconds per epoch, peak memory, parameters, adapter file size.

    python benchmarks/method_costs.py [--profile cpu] [--epochs 3] [--methods lora bitfit ...] [--checkpointing]

Each method adapts to one phantom support volume of the TotalSegmentator-like target, k = 1, with
the trainer's defaults (the feature cache where only the head trains; at k = 1 an epoch is one
step of the profile's crops). Seconds per epoch are the median after the first epoch; "first
epoch" includes building the feature cache. The cpu profile uses the shipped foundation model;
larger profiles a randomly initialised one of their width (costs do not depend on the weights).
On CPU each method runs in its own process, so that the peak resident memory is its own; on CUDA
they share one and memory is torch's max allocated, reset before each method. ``--checkpointing``
turns on activation checkpointing in the Swin blocks. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch


def measure(method: str, profile: str, epochs: int, data: str, checkpointing: bool, queue=None) -> dict:
    from fseft_lab.adapt import AdaptConfig, adapt
    from fseft_lab.data.layouts import open_dataset
    from fseft_lab.experiments import load_cases
    from fseft_lab.methods import save_adapter
    from fseft_lab.models.foundation import FoundationModel
    from fseft_lab.models.zoo import load_foundation
    from fseft_lab.profiles import get_profile

    geometry = get_profile(profile).geometry
    width = geometry.feature_size
    torch.manual_seed(0)
    foundation = FoundationModel(width, use_checkpoint=checkpointing, geometry=geometry)
    if width == 12:
        foundation.load_state_dict(load_foundation("phantom_cpu").state_dict())
    ds = open_dataset(data)
    support = load_cases(ds, ds.case_ids[:1], ["liver"], geometry)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = adapt(foundation, method, support, config=AdaptConfig(epochs=epochs, stop_patience=0), profile=profile,
                   progress=False)
    seconds = result.curve["seconds"].to_numpy() if len(result.curve) else np.zeros(1)
    per_epoch = float(np.median(np.diff(seconds))) if len(seconds) > 1 else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        size = save_adapter(result.model, Path(tmp) / "adapter.pt")
    row = {"method": method, "trainable": result.trainable, "cached": result.cached,
           "first_epoch_s": float(seconds[0]), "epoch_s": per_epoch, "peak_mb": result.peak_memory_mb,
           "adapter_kb": size / 1024}
    if queue is not None:
        queue.put(row)
    return row


def main() -> None:
    from fseft_lab.data.layouts import export_phantom
    from fseft_lab.methods import method_names
    from fseft_lab.profiles import get_profile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing in the Swin blocks")
    args = parser.parse_args()
    prof = get_profile(args.profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{platform.machine()} | {torch.get_num_threads()} threads | torch {torch.__version__} | {device} | "
          f"profile {prof.name}: F = {prof.geometry.feature_size}, {prof.geometry.patch_size}^3, "
          f"{prof.crops_per_volume} crops per step, k = 1"
          + (", activation checkpointing" if args.checkpointing else ""), flush=True)
    print(f"{'method':16s} {'trainable':>10s} {'cache':>6s} {'1st epoch s':>12s} {'s/epoch':>8s} {'peak MB':>8s} {'adapter KB':>11s}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        ds = export_phantom(Path(tmp) / "target", "totalsegmentator", cases=2, seed=11, spacing=prof.geometry.spacing_mm,
                            num_test=1, progress=False)
        for method in args.methods or method_names():
            job = (method, prof.name, args.epochs, str(ds.root), args.checkpointing)
            if device == "cuda":
                r = measure(*job)
            else:
                queue = ctx.Queue()
                process = ctx.Process(target=measure, args=(*job, queue))
                process.start()
                r = queue.get()
                process.join()
            print(f"{r['method']:16s} {r['trainable']:>10,d} {'yes' if r['cached'] else 'no':>6s} {r['first_epoch_s']:>12.1f} "
                  f"{r['epoch_s']:>8.2f} {r['peak_mb']:>8.0f} {r['adapter_kb']:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
