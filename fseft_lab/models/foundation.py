"""The foundation model: MONAI's SwinUNETR (v1 layout) with a universal sigmoid head.

SwinUNETR (Hatamizadeh et al., 2022) is a Swin-transformer encoder (``swinViT``) with a U-Net
style convolutional decoder (``encoder1..4``, ``encoder10`` at the bottleneck, ``decoder5..1``).
The decoder ends in a (B, F, X, Y, Z) feature map, F = ``feature_size`` (48 in the paper). The
FSEFT foundation model puts a 1x1x1 convolution **head** on it with one sigmoid channel per
structure of the universal template (``anatomy.UNIVERSAL_TEMPLATE``), named ``classifier`` as in
the paper's public checkpoint, so that checkpoint's keys load without renaming. Taught in
notebook 01; every adaptation method in ``fseft_lab/methods`` starts from this model.

>>> model = FoundationModel(feature_size=12)
>>> model(torch.zeros(1, 1, 64, 64, 64)).shape
torch.Size([1, 29, 64, 64, 64])
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import PatchMergingV2
from torch import nn

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE
from fseft_lab.profiles import Geometry, get_profile


class LegacyPatchMerging(PatchMergingV2):
    """Patch merging of MONAI 0.9-1.4 (sub-grids 000,100,010,001,101,010,001,111: two repeated).

    Needed to reproduce checkpoints trained before MONAI 1.5; shapes are those of ``PatchMerging``.
    """

    def forward(self, x):  # (B, D, H, W, C) -> (B, D/2, H/2, W/2, 2C)
        d, h, w = x.shape[1:4]
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        grids = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)]
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in grids], -1)  # (B, D/2, H/2, W/2, 8C)
        return self.reduction(self.norm(x))


class FoundationModel(SwinUNETR):
    """SwinUNETR trunk + 1x1x1 head over the universal template.

    Args:
        feature_size: SwinUNETR embedding width F (48 in the paper; 12 for the cpu profile).
        num_classes: head outputs (29 = universal template).
        use_checkpoint: activation checkpointing in the Swin blocks (saves memory, costs time).
        legacy_merging: MONAI < 1.5 patch merging, needed by checkpoints trained before 1.5
            (see :class:`LegacyPatchMerging`).
        geometry: the spacing and patch the weights were trained at (set when a checkpoint is
            loaded or pre-training starts); ``None`` when unknown. See :func:`resolve_geometry`.
    """

    def __init__(self, feature_size: int = 48, num_classes: int = len(UNIVERSAL_TEMPLATE), use_checkpoint: bool = False,
                 legacy_merging: bool = False, geometry: Geometry | None = None):
        if feature_size % 12:
            raise ValueError(f"feature_size={feature_size} must be a multiple of 12 (SwinUNETR's attention heads)")
        if geometry is not None and geometry.feature_size != feature_size:
            raise ValueError(f"geometry {geometry} does not match feature_size={feature_size}")
        super().__init__(in_channels=1, out_channels=num_classes, feature_size=feature_size, use_v2=False,
                         use_checkpoint=use_checkpoint, downsample=LegacyPatchMerging if legacy_merging else "merging")
        self.feature_size, self.num_classes, self.geometry = feature_size, num_classes, geometry
        self.out = nn.Identity()                                        # the trunk ends at decoder1
        self.classifier = nn.Conv3d(feature_size, num_classes, kernel_size=1)
        # A structure fills a few percent of a crop: start every sigmoid at p = 0.02 rather than 0.5,
        # or Adam spends thousands of steps (about lr per step) walking the biases down to it.
        nn.init.constant_(self.classifier.bias, math.log(0.02 / 0.98))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The Swin encoder: (B, 1, X, Y, Z) windowed CT -> its five hidden states, from (B, F, X/2, ...)
        to (B, 16F, X/32, ...): the skip connections the decoder reads."""
        self._check_input_size(x.shape[2:])
        return self.swinViT(x, self.normalize)

    def decode(self, x: torch.Tensor, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        """The convolutional decoder (MONAI's ``SwinUNETR.forward`` after the encoder): the image and
        the encoder's hidden states -> (B, F, X, Y, Z) features. Split from :meth:`encode` so that a
        frozen encoder's states can be computed once per crop (``adapt``'s encoder cache)."""
        enc0, enc1, enc2, enc3 = self.encoder1(x), self.encoder2(hidden[0]), self.encoder3(hidden[1]), self.encoder4(hidden[2])
        dec3 = self.decoder5(self.encoder10(hidden[4]), hidden[3])
        return self.out(self.decoder1(self.decoder2(self.decoder3(self.decoder4(dec3, enc3), enc2), enc1), enc0))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk: (B, 1, X, Y, Z) windowed CT -> (B, F, X, Y, Z) features (sides multiples of 32)."""
        return self.decode(x, self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) -> (B, C, X, Y, Z) logits; sigmoid gives one probability per structure."""
        return self.classifier(self.features(x))



def resolve_geometry(model: nn.Module, profile: str | None = None, spacing_mm: float | None = None,
                     patch_size: int | None = None) -> Geometry:
    """The geometry to run ``model`` at: its own (adapted models are copies of their foundation
    model and carry it too), else the profile's. A ``spacing_mm`` or ``patch_size`` given here
    overrides it, with a one-line warning naming both when the model knows its own.

    >>> resolve_geometry(FoundationModel(12, geometry=Geometry(3.0, 64, 12))).spacing_mm
    3.0
    """
    own = getattr(model, "geometry", None)
    base = own or replace(get_profile(profile).geometry, feature_size=getattr(model, "feature_size", 48))
    chosen = replace(base, spacing_mm=spacing_mm or base.spacing_mm, patch_size=patch_size or base.patch_size)
    if own is not None and chosen != own:
        warnings.warn(f"running a model trained at {own} at {chosen}: expect a lower Dice "
                      "(a model has one geometry)", stacklevel=2)
    return chosen
