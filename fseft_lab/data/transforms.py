"""MONAI transform chains: pre-processing, training crops and the targets the losses need.

A loaded case (:meth:`fseft_lab.data.layouts.CaseFolder.load`) is a dict of MetaTensors. The
chains here turn it into what the model sees, exactly as the paper does:

* :func:`preprocess`: orientation RAS, resampling to isotropic ``spacing_mm`` (trilinear for the
  image, nearest for labels), CT window -175..250 HU -> [0, 1], crop to the body, pad to a patch.
* :func:`training_crops`: ``num_samples`` random patches, positive (centred on the structure)
  and negative (anywhere) in the ratio ``pos:neg``.
* :class:`UniversalTargetd`: one-hot channels in the universal template plus the **annotation
  mask** ``w[c]`` (1 if the dataset labels class ``c``): partial labels, notebooks 00 and 01.
"""
from __future__ import annotations

import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE

HU_WINDOW = (-175.0, 250.0)


def preprocess(spacing_mm: float, patch_size: int | None = None, crop_foreground: bool = True,
               label: bool = True) -> Compose:
    """Chain applied to every loaded case, training and test alike.

    Args:
        spacing_mm: isotropic output voxel size (mm).
        patch_size: if given, pad every side to at least this many voxels.
        crop_foreground: crop to the body (voxels above -175 HU), as the paper does.
        label: the case has a ``label`` (False: an image to segment, ``fseft-lab predict``).
    """
    keys = ["image", "label"] if label else ["image"]
    chain = [
        Orientationd(keys, axcodes="RAS", labels=None),
        Spacingd(keys, pixdim=(spacing_mm,) * 3, mode=("bilinear", "nearest")[:len(keys)]),
        ScaleIntensityRanged("image", a_min=HU_WINDOW[0], a_max=HU_WINDOW[1], b_min=0.0, b_max=1.0, clip=True),
    ]
    if crop_foreground:
        chain.append(CropForegroundd(keys, source_key="image", allow_smaller=True, margin=2))
    if patch_size:
        chain.append(SpatialPadd(keys, spatial_size=(patch_size,) * 3))
    return Compose(chain)


def training_crops(patch_size: int, num_samples: int, pos: float = 1.0, neg: float = 1.0) -> RandCropByPosNegLabeld:
    """``num_samples`` random cubic patches per case, ``pos:neg`` foreground-centred to anywhere."""
    if patch_size % 32:
        raise ValueError(f"patch_size={patch_size} must be a multiple of 32 (SwinUNETR downsamples 5 times)")
    return RandCropByPosNegLabeld(["image", "label"], label_key="label", spatial_size=(patch_size,) * 3,
                                  pos=pos, neg=neg, num_samples=num_samples, allow_smaller=True)


class UniversalTargetd(MapTransform):
    """Turn a label map over ``d['structures']`` into universal-template targets.

    Adds ``d['target']``: (C, X, Y, Z) float one-hot with C = 29 template channels, and
    ``d['annotated']``: (C,) float, 1 where the dataset labels that class. Structures outside
    the template (e.g. novel ones) are ignored here. The partial-label loss multiplies per-class
    losses by ``annotated`` so that unlabelled classes are not mistaken for background.
    """

    def __init__(self, template: tuple[str, ...] = UNIVERSAL_TEMPLATE, label_key: str = "label"):
        super().__init__([label_key])
        self.template, self.label_key = template, label_key

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        label = d[self.label_key][0]                                      # (X, Y, Z)
        target = torch.zeros((len(self.template), *label.shape))          # (C, X, Y, Z)
        annotated = torch.zeros(len(self.template))                       # (C,)
        for value, name in enumerate(d["structures"], start=1):
            if name in self.template:
                c = self.template.index(name)
                target[c] = (label == value).float()
                annotated[c] = 1.0
        d["target"], d["annotated"] = target, annotated
        return d

