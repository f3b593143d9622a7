"""Named run profiles: one object decides every size, so one notebook runs everywhere.

``cpu`` is what CI and a 2-core laptop run, ``gpu`` a Colab T4 or better, ``paper`` the source
paper's configuration (feature 48, 96^3 patches at 1.5 mm, 200 epochs). ``cpu`` and ``gpu`` see
the same 192 mm of anatomy per patch (64 x 3 mm, 96 x 2 mm), so organs fit a crop in both.

>>> get_profile("cpu").patch_size
64
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes for one kind of machine.

    Args:
        name: profile name.
        spacing_mm: isotropic voxel size (mm) that volumes are generated at and resampled to.
        patch_size: side of the cubic training / inference patch in voxels (SwinUNETR needs a
            multiple of 32; 64 is the practical minimum for training).
        feature_size: SwinUNETR embedding width (48 in the paper).
        crops_per_volume: random crops drawn from each support volume per step (6 in the paper).
        num_epochs: few-shot adaptation epochs (200 in the paper) when the trunk trains.
        cached_epochs: epochs when only the head trains on cached trunk features; an epoch then
            costs milliseconds, so every profile affords the paper's 200.
        pretrain_steps: optimiser steps of partial-label pre-training.
        cases_per_source: phantom volumes per pre-training source dataset.
        target_cases: phantom volumes per target dataset (training pool + test).
    """

    name: str
    spacing_mm: float
    patch_size: int
    feature_size: int
    crops_per_volume: int
    num_epochs: int
    pretrain_steps: int
    cases_per_source: int
    target_cases: int
    cached_epochs: int = 200


PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu", spacing_mm=3.0, patch_size=64, feature_size=12, crops_per_volume=2,
                   num_epochs=20, pretrain_steps=200, cases_per_source=8, target_cases=16),
    "gpu": Profile("gpu", spacing_mm=2.0, patch_size=96, feature_size=24, crops_per_volume=4,
                   num_epochs=100, pretrain_steps=20_000, cases_per_source=40, target_cases=35),
    "paper": Profile("paper", spacing_mm=1.5, patch_size=96, feature_size=48, crops_per_volume=6,
                     num_epochs=200, pretrain_steps=100_000, cases_per_source=200, target_cases=35),
}


# glibc gives large freed blocks (over 128 kB, and always over 32 MB) straight back to the
# kernel, and a 3D training step frees dozens, so the next step page-faults its activations in
# again: on the course's 2-core VM that was nearly half of all CPU time. Keeping freed memory in
# the process (these two glibc variables) ran a 64 s test in 33 s, at about 0.6 GB more peak RSS.
# glibc reads them only when a process starts, so they are set for child processes: notebook
# kernels (``fseft-lab notebooks run``, the nbval tests), in ``.ci/run`` the test process, and the
# ``fseft-lab`` command, which starts itself again with them.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def get_profile(name: str | None = None) -> Profile:
    """Return a profile by name; ``None`` reads ``FSEFT_PROFILE``, and ``'auto'`` picks ``gpu``
    when CUDA is available, else ``cpu``."""
    name = name or os.environ.get("FSEFT_PROFILE") or "auto"
    if name == "auto":
        import torch

        name = "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} or 'auto'")
    return PROFILES[name]
