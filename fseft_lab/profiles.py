"""Named run profiles and a model's geometry.

A **geometry** is how a foundation model sees CT: the voxel spacing and patch size it was
trained at, and its width. A SwinUNETR learns anatomy at one scale: the first shipped model
(3 mm, 64^3) lost a third of its zero-shot Dice when 2 mm voxels were fed to it (spleen 0.889 ->
0.306). So a model carries its geometry (checkpoint and manifest, see
:func:`fseft_lab.models.foundation.resolve_geometry`), every path resamples to it, and a
**profile** decides only budgets: epochs, crops, subjects, pre-training steps. A profile's own
geometry is the one a model pre-trained under it gets, and the fallback for a model that does
not say.

``cpu`` is what CI and a 2-core laptop run, ``gpu`` a Colab T4 or better (the same geometry as
the shipped model, larger budgets), ``paper`` the source paper's configuration (feature 48,
96^3 patches at 1.5 mm, 200 epochs), the geometry of the public checkpoints.

>>> get_profile("gpu").geometry
Geometry(spacing_mm=3.0, patch_size=64, feature_size=12)
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """How a foundation model sees CT.

    Args:
        spacing_mm: isotropic voxel size (mm) volumes are resampled to.
        patch_size: side of the cubic training / inference patch in voxels (SwinUNETR needs a
            multiple of 32; 64 is the practical minimum for training).
        feature_size: SwinUNETR embedding width (48 in the paper).
    """

    spacing_mm: float
    patch_size: int
    feature_size: int

    def __post_init__(self):
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm={self.spacing_mm} must be > 0 mm")
        if self.patch_size < 32 or self.patch_size % 32:
            raise ValueError(f"patch_size={self.patch_size} must be a positive multiple of 32 (SwinUNETR)")
        if self.feature_size < 12 or self.feature_size % 12:
            raise ValueError(f"feature_size={self.feature_size} must be a positive multiple of 12 (SwinUNETR's heads)")

    def __str__(self) -> str:
        return f"{self.spacing_mm:g} mm voxels, {self.patch_size}^3 patches, feature size {self.feature_size}"


#: The shipped phantom model's geometry: a crop sees 192 mm, enough for the largest organ.
PHANTOM = Geometry(3.0, 64, 12)
#: The paper's and the public checkpoints' geometry.
PAPER = Geometry(1.5, 96, 48)


@dataclass(frozen=True)
class Profile:
    """Budgets for one kind of machine (and the geometry a model pre-trained under it gets).

    Args:
        name: profile name.
        geometry: of a model pre-trained with this profile; for any other model, its own.
        crops_per_volume: random crops drawn from each support volume per step (6 in the paper).
        num_epochs: few-shot adaptation epochs (200 in the paper) when the trunk trains.
        cached_epochs: epochs when only the head trains on cached trunk features; an epoch then
            costs milliseconds, so every profile affords the paper's 200.
        pretrain_steps: optimiser steps of partial-label pre-training.
        cases_per_source: phantom volumes per pre-training source dataset.
        target_cases: phantom volumes per target dataset (training pool + test).
    """

    name: str
    geometry: Geometry
    crops_per_volume: int
    num_epochs: int
    pretrain_steps: int
    cases_per_source: int
    target_cases: int
    cached_epochs: int = 200


PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu", PHANTOM, crops_per_volume=2, num_epochs=20, pretrain_steps=200, cases_per_source=8,
                   target_cases=16),
    "gpu": Profile("gpu", PHANTOM, crops_per_volume=4, num_epochs=100, pretrain_steps=20_000, cases_per_source=40,
                   target_cases=35),
    "paper": Profile("paper", PAPER, crops_per_volume=6, num_epochs=200, pretrain_steps=100_000,
                     cases_per_source=200, target_cases=35),
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
