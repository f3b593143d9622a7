"""Pre-training step time and peak memory per profile, and inference seconds per volume.

    python benchmarks/pretrain_speed.py [--profiles cpu gpu] [--steps 3]

Prints figures; asserts nothing. On CUDA, memory is torch's max allocated; on CPU, the
process's peak resident set size (which includes the data and the Python process).
"""
from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from fseft_lab.data import phantom
from fseft_lab.evaluate import predict
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.pretrain import masked_partial_label_loss
from fseft_lab.profiles import get_profile


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", nargs="+", default=["cpu"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--crops", type=int, default=1)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{platform.processor() or platform.machine()} | {torch.get_num_threads()} threads | torch {torch.__version__} | {device}")
    for name in args.profiles:
        p = get_profile(name)
        model = FoundationModel(p.geometry.feature_size).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.rand(args.crops, 1, *(p.geometry.patch_size,) * 3, device=device)
        target = (torch.rand(args.crops, 29, *(p.geometry.patch_size,) * 3, device=device) > 0.95).float()
        annotated = torch.ones(args.crops, 29, device=device)
        times = []
        for _ in range(args.steps + 1):  # the first step warms up
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = masked_partial_label_loss(logits, target, annotated)[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        step = sum(times[1:]) / args.steps
        volume = phantom.generate(0, 0, "btcv_like", spacing=p.geometry.spacing_mm)
        image = torch.from_numpy(((volume.image.clip(-175, 250) + 175) / 425).astype("float32"))[None, None]
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            predict(model, image, p.geometry.patch_size)
        infer = time.perf_counter() - start
        print(f"{name:6s} feature {p.geometry.feature_size:2d} patch {p.geometry.patch_size}^3 x{args.crops}: {step:6.2f} s/step "
              f"({1 / step:.2f} steps/s), peak memory {peak_memory_gb(device):.1f} GB; "
              f"inference {infer:.1f} s for a {tuple(image.shape[2:])} volume")


if __name__ == "__main__":
    main()
