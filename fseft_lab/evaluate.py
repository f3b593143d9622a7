"""One evaluation function for the whole course: sliding-window inference, masks, metrics.

Patches of the training size slide over the volume with Gaussian weighting (MONAI's
``sliding_window_inference``, which also pads volumes smaller than a patch). The overlap is
:data:`OVERLAP`: half a patch across the slice (x, y), a quarter along the body axis (z), where
the paper uses a quarter on every axis. A model trained on crops sees an organ best with the
tissue around it; at a quarter's overlap a wide body can put the spleen or a kidney on the seam
between two windows, near each one's edge, and the model misses it whole. Half-patch steps across
the slice put every voxel within a quarter patch of some window's centre in x and y, for about
1.2x the inference time of a quarter's overlap (``benchmarks/window_position.py`` shows the effect).
Binary tasks threshold each sigmoid channel at 0.5; multi-class tasks take the arg-max.

Post-processing, on by default: each structure that is anatomically one piece
(:func:`fseft_lab.anatomy.is_one_piece`: the liver, a kidney, not a tumour or the skeleton) keeps
only its largest connected component (MONAI's ``KeepLargestConnectedComponent``), the paper's
optional post-processing. A few stray voxels far from the organ barely move the Dice but set
the HD95 to the distance of the farthest island; removing them gives figures that describe the
organ. ``largest_component=False`` scores the raw masks. Every row says which it got (its
``post_processing`` column: ``largest component`` or ``none``).

Metrics come from ``monai.metrics``: Dice (DSC, the overlap: 1 is perfect); HD95, the 95th
percentile of the distances (mm) from each surface's voxels to the other surface (the larger of
the two directions), so a handful of stray voxels barely count but islands holding more than 5 %
of the predicted surface set it; and NSD, the fraction of both surfaces that lies within a
tolerance (3 mm) of the other, from 0 to 1.

Failures are scored, not dropped. A structure in the truth that the prediction **missed**
(an empty mask) gets Dice 0, NSD 0 and an HD95 of the volume's diagonal in mm, the largest
distance the volume allows (the cap challenge evaluations use for a missing prediction); every
HD95 is capped there too, and the row's ``missed`` column says so, so a mean HD95 counts the
failure at its cap and ``missed.sum()`` counts the failures. A structure **absent** from the truth
cannot be scored by overlap (Dice, HD95, NSD: NaN); its ``false_positive_ml`` says how much the
model predicted there anyway (for every row: predicted volume outside the truth). Spacing comes
from each case's image (a MetaTensor's ``pixdim``) or its ``spacing`` entry, never a default.
Results are a tidy table, one row per (case, structure).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from monai.transforms import KeepLargestConnectedComponent

from fseft_lab.anatomy import is_one_piece
from fseft_lab.progress import progress_bar

OVERLAP = (0.5, 0.5, 0.25)
"""Sliding-window overlap per axis (x, y, z): half a patch across the slice, a quarter along the body."""


@contextmanager
def fused_window_attention(model: Callable):
    """Inside, the Swin encoder's window attention runs as one fused kernel (PyTorch's
    ``scaled_dot_product_attention``, MONAI's ``use_flash_attention``), whenever autograd is off.
    Inference only: the same logits up to float rounding (about 3e-5), about 1.8x faster per
    forward on a CPU (``benchmarks/fused_attention.py``); training keeps the explicit attention, so
    a cached and an uncached training step stay identical."""
    layers = [m for m in model.modules() if hasattr(m, "use_flash_attention")] if isinstance(model, torch.nn.Module) else []
    before = [m.use_flash_attention for m in layers]
    for m in layers:
        m.use_flash_attention = True
    try:
        yield
    finally:
        for m, flag in zip(layers, before):
            m.use_flash_attention = flag


@torch.no_grad()
def predict(model: Callable, image: torch.Tensor, patch_size: int, overlap: float | Sequence[float] = OVERLAP,
            sw_batch_size: int = 2) -> torch.Tensor:
    """Logits (B, C, X, Y, Z) of a whole (B, 1, X, Y, Z) volume by Gaussian sliding windows
    (``overlap``: one fraction of the patch, or one per axis)."""
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else image.device
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"), fused_window_attention(model):
        logits = sliding_window_inference(torch.as_tensor(image).to(device), (patch_size,) * 3, sw_batch_size, model,
                                          overlap=overlap, mode="gaussian")
    return torch.as_tensor(logits).float().cpu()


class _Trunk(torch.nn.Module):
    """``model.features`` as a module, so that sliding windows can run the trunk alone."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


@torch.no_grad()
def trunk_features(model: torch.nn.Module, image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(F, X, Y, Z) trunk features of a whole (1, X, Y, Z) volume by Gaussian sliding windows."""
    model.eval()
    return predict(_Trunk(model), image[None], patch_size)[0]


def to_masks(logits: torch.Tensor, multiclass: bool = False, threshold: float = 0.5,
             largest_component: bool | Sequence[int] = False) -> torch.Tensor:
    """(B, C, X, Y, Z) logits -> (B, C, X, Y, Z) 0/1 masks.

    Binary/multi-label: ``sigmoid > threshold`` per channel. Multi-class: channel 0 is
    background and each voxel goes to its arg-max channel. ``largest_component``: keep the
    largest connected component of every channel (True) or of the channels listed.
    """
    if multiclass:
        masks = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).movedim(-1, 1).float()
    else:
        masks = (torch.sigmoid(logits) > threshold).float()
    channels = list(range(masks.shape[1])) if largest_component is True else list(largest_component or [])
    if channels:
        keep = KeepLargestConnectedComponent(applied_labels=channels, is_onehot=True)
        masks = torch.stack([torch.as_tensor(keep(m)) for m in masks])
    return masks


def one_piece_channels(structures: Sequence[str]) -> list[int]:
    """Indexes of the structures that are anatomically one piece: the channels that the default
    post-processing cuts to their largest component (``background`` and lesions are not)."""
    return [i for i, s in enumerate(structures) if is_one_piece(s)]


def score(masks: torch.Tensor, truth: torch.Tensor, spacing: Sequence[float], nsd_tolerance_mm: float = 3.0) -> dict[str, np.ndarray]:
    """Per-channel DSC, HD95 (mm), NSD, ``missed`` and false-positive voxels of (1, C, X, Y, Z)
    0/1 masks against the truth, with ``spacing`` the voxel size in mm (x, y, z).

    A structure absent from the truth gets NaN Dice, HD95 and NSD (it cannot be scored), not a 0
    or a 1. A structure the prediction missed (empty mask, non-empty truth) gets Dice 0, NSD 0,
    ``missed`` True and an HD95 of the volume's diagonal in mm, where every HD95 is capped.
    """
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing={spacing}: give the voxel size in mm along x, y and z (three positive numbers)")
    with warnings.catch_warnings():  # MONAI warns about empty classes, which are NaN by design here
        warnings.simplefilter("ignore")
        return _score(masks, truth, spacing, nsd_tolerance_mm)


def _score(masks, truth, spacing, nsd_tolerance_mm):
    dice = compute_dice(masks, truth, include_background=True, ignore_empty=True)[0]
    hd95 = compute_hausdorff_distance(masks, truth, include_background=True, percentile=95, spacing=spacing)[0]
    nsd = compute_surface_dice(masks, truth, [nsd_tolerance_mm] * masks.shape[1], include_background=True, spacing=spacing)[0]
    empty = (truth[0].flatten(1).sum(1) == 0).numpy()
    missed = ~empty & (masks[0].flatten(1).sum(1) == 0).numpy()
    diagonal = float(np.linalg.norm(np.array(masks.shape[2:]) * np.array(spacing)))  # mm, the largest distance
    out = {"dice": dice.numpy(), "hd95": np.minimum(hd95.numpy(), diagonal), "nsd": nsd.numpy()}
    out["dice"][missed], out["hd95"][missed], out["nsd"][missed] = 0.0, diagonal, 0.0  # no surface: the cap
    for v in out.values():
        v[empty] = np.nan
    out["missed"] = missed
    out["false_positive_voxels"] = (masks[0] * (1 - truth[0])).flatten(1).sum(1).numpy()
    return out


def voxel_spacing(case: dict) -> list[float]:
    """A case's voxel size in mm: its image's ``pixdim`` (MetaTensor) or its ``spacing`` entry."""
    if hasattr(case["image"], "pixdim"):
        return [float(s) for s in case["image"].pixdim]
    if "spacing" in case:
        return [float(s) for s in case["spacing"]]
    raise ValueError(f"case {case.get('case')!r} has no voxel spacing (a MetaTensor image or a 'spacing' entry in mm): "
                     "HD95, NSD and volumes are in mm and need it")


def evaluate(model: Callable, cases: Sequence[dict], channels: Sequence[int], patch_size: int,
             multiclass: bool = False, largest_component: bool = True, progress: bool = True,
             masks_out: dict | None = None, **columns) -> pd.DataFrame:
    """Segment and score pre-processed cases; one row per (case, structure).

    Args:
        model: maps (B, 1, X, Y, Z) to (B, C', X, Y, Z) logits.
        cases: dicts with ``image`` (1, X, Y, Z), ``label`` (1, X, Y, Z) whose value i is
            ``structures[i - 1]``, ``structures`` and ``case`` (as ``CaseFolder.load`` + preprocess).
            A case may carry ``features`` (F, X, Y, Z): the frozen trunk's sliding-window output
            (:func:`trunk_features`); only ``model.classifier`` then runs. Exact for a linear head
            (blending is linear); for a non-linear adapter the blend happens before, not after it.
        channels: model output channel of each structure, in ``structures`` order.
        patch_size: sliding-window size.
        multiclass: arg-max over channels (channel 0 = background) instead of thresholds.
        largest_component: keep the largest connected component of each structure that is
            anatomically one piece (the default; see the module docstring); False: raw masks.
        masks_out: if given, receives each case's (S, X, Y, Z) uint8 predicted masks by case id.
        columns: constant columns added to every row (method, k, seed, ...).
    """
    rows = []
    for case in progress_bar(cases, desc="evaluating", disable=not progress):
        structures = case["structures"]
        if len(channels) != len(structures):
            raise ValueError(f"{len(channels)} channels given for {len(structures)} structures {structures}")
        if "features" in case:  # the frozen trunk's features, computed once for several heads
            with torch.no_grad():
                logits = model.classifier(case["features"][None].to(next(model.parameters()).device)).float().cpu()
        else:
            logits = predict(model, case["image"][None], patch_size)                   # (1, C', X, Y, Z)
        cleaned = one_piece_channels(structures) if largest_component else []  # indexes into structures
        if multiclass:
            masks = to_masks(logits, True, largest_component=[channels[i] for i in cleaned])[:, list(channels)]
        else:
            masks = to_masks(logits[:, list(channels)], largest_component=cleaned)
        if masks_out is not None:
            masks_out[case["case"]] = masks[0].to(torch.uint8)
        label = torch.as_tensor(case["label"])[0]
        truth = torch.stack([(label == i + 1) for i in range(len(structures))])[None].float()  # (1, S, X, Y, Z)
        spacing = voxel_spacing(case)
        scores = score(masks, truth, spacing)
        voxel_ml = float(np.prod(spacing)) / 1000
        for i, s in enumerate(structures):
            rows.append({**columns, "case": case["case"], "structure": s, "dice": scores["dice"][i],
                         "hd95": scores["hd95"][i], "nsd": scores["nsd"][i], "missed": bool(scores["missed"][i]),
                         "false_positive_ml": float(scores["false_positive_voxels"][i]) * voxel_ml,
                         "post_processing": "largest component" if i in cleaned else "none",
                         "truth_ml": float(truth[0, i].sum()) * voxel_ml, "predicted_ml": float(masks[0, i].sum()) * voxel_ml})
    return pd.DataFrame(rows)
