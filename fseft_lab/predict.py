"""Segment a CT file with an adapted model and write a label map on the input's own grid.

The image goes through the training pre-processing (RAS, isotropic spacing, HU window, crop to
the body, pad to a patch), the model segments it by Gaussian sliding windows, and MONAI's
``Invertd`` undoes every spatial step with nearest-neighbour interpolation, so the label map has
the input's shape and affine and overlays correctly in ITK-SNAP or 3D Slicer. Label value i is
the adapter's i-th structure (``fseft-lab predict`` prints the table). As in evaluation, each
structure that is anatomically one piece keeps only its largest connected component unless
``largest_component=False`` (:mod:`fseft_lab.evaluate`).

>>> model = load_adapter_file(load_foundation("phantom_cpu"), "liver.pt")       # doctest: +SKIP
>>> segment_file(model, "ct.nii.gz", "seg.nii.gz", profile="cpu")               # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, LoadImaged

from fseft_lab.data.layouts import save_nifti
from fseft_lab.data.transforms import preprocess
from fseft_lab.evaluate import one_piece_channels, predict, to_masks
from fseft_lab.models.foundation import resolve_geometry
from fseft_lab.outputs import atomic_write, writable_file


def label_map(masks: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """(1, C, X, Y, Z) 0/1 masks -> (1, X, Y, Z) labels: value i for the task's i-th structure.
    Multi-class masks carry the background first; overlapping sigmoid masks go to the later one."""
    if multiclass:
        return masks[0].argmax(0, keepdim=True).to(torch.uint8)
    labels = torch.zeros(masks.shape[2:], dtype=torch.uint8)
    for i in range(masks.shape[1]):
        labels[masks[0, i] > 0] = i + 1
    return labels[None]


def segment(model: torch.nn.Module, image_path: str | Path, profile: str | None = None,
            largest_component: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(labels (X, Y, Z) uint8, affine) of a NIfTI CT in HU, on the file's own voxel grid; the
    image is resampled to the model's own geometry (the profile's only if it has none)."""
    path = Path(image_path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    geometry = resolve_geometry(model, profile)
    chain = preprocess(geometry.spacing_mm, geometry.patch_size, label=False)
    try:
        data = LoadImaged("image", ensure_channel_first=True)({"image": str(path)})
    except Exception as err:
        raise ValueError(f"cannot read {path} as a CT volume: {err}") from err
    if data["image"].ndim != 4 or data["image"].shape[0] != 1:
        raise ValueError(f"{path} has shape {tuple(data['image'].shape[1:])} with {data['image'].shape[0]} channels; "
                         "expected one 3-D volume")
    data = chain(data)
    masks = to_masks(predict(model.eval(), data["image"][None], geometry.patch_size), model.multiclass,
                     largest_component=one_piece_channels(model.task_structures) if largest_component else [])
    data["pred"] = MetaTensor(label_map(masks, model.multiclass).float(), meta=data["image"].meta,
                              applied_operations=data["image"].applied_operations)
    restored = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)(data)["pred"]
    original = nib.load(str(path))
    labels = np.asarray(restored[0]).round().astype(np.uint8)
    if labels.shape != original.shape[:3]:
        raise RuntimeError(f"the restored label map has shape {labels.shape}, the input {original.shape[:3]}")
    return labels, original.affine


def segment_file(model: torch.nn.Module, image_path: str | Path, out_path: str | Path, profile: str | None = None,
                 largest_component: bool = True) -> Path:
    """Segment ``image_path`` and write the label map to ``out_path`` (atomically: temporary file,
    then rename). An output folder that cannot be written fails before the inference, not after."""
    out = writable_file(out_path)
    labels, affine = segment(model, image_path, profile, largest_component)
    with atomic_write(out) as tmp:   # e.g. the disk filled up: no half-written segmentation is left
        save_nifti(tmp, labels, affine)
    return out


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def plan_outputs(input_path: str | Path, out_path: str | Path) -> list[tuple[Path, Path]]:
    """(scan, label map) pairs of a ``predict``: one file to one file, or a folder of scans (or one
    scan) into a folder, each label map named as its scan without nnU-Net's channel suffix
    (``case_0000.nii.gz`` -> ``case.nii.gz``), as TotalSegmentator and nnU-Net name theirs."""
    source, out = Path(input_path), Path(out_path)
    if source.is_dir():
        scans = sorted(p for p in source.iterdir() if p.is_file() and _is_nifti(p))
        if not scans:
            raise FileNotFoundError(f"the folder {source} holds no scan (.nii or .nii.gz)")
        if _is_nifti(out):
            raise ValueError(f"{source} is a folder of {len(scans)} scans: -o must be a folder, not the file {out}")
    elif not source.is_file():
        raise FileNotFoundError(f"no such image or folder of images: {source}")
    else:
        scans = [source]
        if _is_nifti(out):
            return [(source, out)]
    return [(scan, out / scan.name.replace("_0000.nii", ".nii")) for scan in scans]
