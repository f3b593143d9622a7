"""Augmentations of pre-training crops, with ranges from published figures, never from the phantom.

A model trained on real CT knows no scanner's table, so none of these reads
:mod:`fseft_lab.data.scanner`: contrast-phase ranges come from published enhancement figures, the
acquisition and spatial ones from nnU-Net's default augmentation (Isensee et al., "nnU-Net: a
self-configuring method for deep learning-based biomedical image segmentation", Nat. Methods
2021;18:203-211, supplementary note on data augmentation), the recipe most CT segmentation models
are trained with. Every function takes one channel-first crop in window units (``HU_WINDOW`` ->
[0, 1], as :func:`fseft_lab.data.transforms.preprocess` makes them) and a numpy generator, so a
step's crops stay a pure function of its seed. Taught in notebook 01.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Affine, GaussianSmooth

from fseft_lab.data.transforms import HU_WINDOW

#: Soft tissue before and after intravenous contrast (HU), portal venous phase, as published for
#: adults at usual doses: structure -> (plain, enhanced low, enhanced high). Blood 40 HU plain,
#: aorta and portal vein 150-200 HU, hepatic enhancement 40-65 HU: Bae KT, "Intravenous contrast
#: medium administration and scan timing at CT", Radiology 2010;256:32-61. Plain liver 55-65 HU,
#: spleen about 10 HU below the liver: Boll DT, Merkle EM, "Diffuse liver disease: strategies for
#: hepatic CT and MR imaging", RadioGraphics 2009;29:1591-1614. Kidney 30-40 HU plain, 150-200 HU
#: nephrographic; pancreas 40-50 HU plain, 90-120 HU portal: Bae 2010, tables of organ
#: enhancement. The augmentations below take their ranges from these figures, never from the
#: phantom's scanner tables: a model trained on real CT knows no scanner's table.
PUBLISHED_PORTAL_HU: dict[str, tuple[float, float, float]] = {
    "blood": (40.0, 150.0, 200.0), "liver": (60.0, 100.0, 125.0), "spleen": (50.0, 110.0, 130.0),
    "pancreas": (45.0, 90.0, 120.0), "kidney": (35.0, 150.0, 200.0),
}

#: Per-structure intensity shifts of ``contrast_aug`` (window units: 1 = 425 HU): -166 to +21 HU,
#: down to the largest published gap between an enhanced and a plain structure (kidney, 200 vs
#: 35 HU) and a little up, as a plain organ beside a bright one.
CONTRAST_SHIFT = (-0.39, 0.05)

#: Plain CT's soft tissue (HU): ``de_enhance`` pulls brighter tissue toward it (plain blood, and
#: the low end of the published plain organs).
PLAIN_SOFT_TISSUE_HU = 40.0
#: Range of ``de_enhance``'s strength s: ``E - s (E - 40) = P`` takes a published enhanced value E
#: back to its plain value P. Over ``PUBLISHED_PORTAL_HU`` s runs from 0.67 (liver, weakly enhanced)
#: to 1 (blood; the kidney would need 1.05 and ends 5 HU above its plain value).
PHASE_STRENGTH = (0.65, 1.0)


def de_enhance(image: torch.Tensor, strength: float, sigma: float = 0.75) -> torch.Tensor:
    """Pull a crop's enhanced soft tissue toward plain CT's values: ``image - strength * (local
    mean - 40 HU)`` wherever the local mean (Gaussian, ``sigma`` voxels) is above 40 HU.

    A stand-in for a scan without contrast, not a simulation of one: one strength for the whole
    crop keeps the tissues' order (enhanced spleen stays brighter than liver, where plain CT has it
    darker), tissue that does not enhance (muscle, discs) is pulled below its plain value too, and
    so are crops that were plain already. The correction follows the local mean, not each voxel,
    so most of the noise and texture survive; ``sigma`` is small so that vessels a few voxels wide
    are corrected too. Voxels at the window's top (bone, arterial blood above 250 HU) and those
    within two voxels of them (bone's texture and partial-volume rim below 250 HU) stay as they
    are and are left out of the others' means (normalised convolution), so bone is neither eaten
    away nor leaves a dark halo. Window units
    (``HU_WINDOW`` -> [0, 1]) as ``preprocess`` made them, before any shift; ``image`` is one
    channel-first crop.
    """
    level = (PLAIN_SOFT_TISSUE_HU - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
    top = (image >= 1.0 - 1e-6).float()
    soft = 1.0 - F.max_pool3d(top[None], 5, stride=1, padding=2)[0]     # neither at the top nor 2 voxels from it
    smooth = GaussianSmooth(sigma)
    local = smooth(image * soft) / smooth(soft).clamp_min(1e-3)
    return image - strength * soft * (local - level).clamp_min(0.0)


# ---- acquisition and spatial augmentations: nnU-Net's defaults --------------------------------

#: One standard deviation of nnU-Net's z-scored CT intensities (its foreground's SD, about 60 HU in
#: abdominal CT) in window units: the scale of its noise variance.
NNUNET_SD = 60.0 / (HU_WINDOW[1] - HU_WINDOW[0])
#: nnU-Net's intensity augmentations: (probability per crop, range). Noise variance in units of
#: ``NNUNET_SD`` squared (up to 0.1: SD up to 19 HU, on top of the scan's own); blur sigma in voxels;
#: brightness and contrast as factors; low resolution as the zoom of a down-and-up sampling (0.5:
#: voxels twice as coarse, thick slices among them); gamma as the exponent, and once in ten on the
#: inverted image. Mirroring is left out: it swaps left and right organs.
ACQUISITION = {"noise": (0.1, (0.0, 0.1)), "blur": (0.2, (0.5, 1.0)), "brightness": (0.15, (0.75, 1.25)),
               "contrast": (0.15, (0.75, 1.25)), "low_resolution": (0.25, (0.5, 1.0)),
               "inverted_gamma": (0.1, (0.7, 1.5)), "gamma": (0.3, (0.7, 1.5))}
#: nnU-Net's spatial augmentation: isotropic scaling (probability, range) and a rotation about each
#: axis (probability, degrees). A scale below 1 magnifies: a smaller subject, or a larger one at 0.7.
SCALING, ROTATION = (0.2, (0.7, 1.4)), (0.2, 30.0)
#: Crops drawn for the spatial augmentation are this much wider than the patch, so that a
#: rotated or shrunk patch is filled with the scan, not padding, in all but its corners.
SPATIAL_MARGIN = 1.5


def acquisition(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """nnU-Net's intensity augmentations of one crop (1, X, Y, Z), each with its own probability
    (:data:`ACQUISITION`), in its order: noise, blur, brightness, contrast, low resolution, gamma.
    Brightness scales about plain soft tissue's level (40 HU, nnU-Net's z-score mean); contrast about
    the crop's mean, keeping its range; gamma on the crop's range."""
    def drawn(name):  # the transform's parameter, or None when it is not drawn for this crop
        if name not in ACQUISITION:
            return None
        p, (low, high) = ACQUISITION[name]
        return float(rng.uniform(low, high)) if rng.uniform() < p else None

    if (variance := drawn("noise")) is not None:
        image = image + torch.from_numpy(rng.normal(0.0, math.sqrt(variance) * NNUNET_SD, image.shape)).float()
    if (sigma := drawn("blur")) is not None:
        image = GaussianSmooth(sigma)(image)
    if (factor := drawn("brightness")) is not None:
        level = (PLAIN_SOFT_TISSUE_HU - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
        image = level + factor * (image - level)
    if (factor := drawn("contrast")) is not None:
        low, high = image.min(), image.max()
        image = ((image - image.mean()) * factor + image.mean()).clamp(low, high)
    if (zoom := drawn("low_resolution")) is not None:
        size = image.shape[1:]
        coarse = F.interpolate(image[None], size=[max(1, round(s * zoom)) for s in size], mode="nearest")
        image = F.interpolate(coarse, size=size, mode="trilinear", align_corners=False)[0]
    for name, inverted in (("inverted_gamma", True), ("gamma", False)):
        if (gamma := drawn(name)) is not None:
            low, high = image.min(), image.max()
            unit = ((image - low) / (high - low + 1e-6)).clamp(0, 1)            # the crop's range -> [0, 1]
            unit = 1.0 - (1.0 - unit) ** gamma if inverted else unit ** gamma
            image = low + unit * (high - low)
    return image


def spatial(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator | None,
            patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre ``patch``^3 of a wider crop (1, S, S, S) and its label map, scaled and rotated as
    nnU-Net's default draws them (:data:`SCALING`, :data:`ROTATION`); without a draw (or a
    generator), the centre exactly."""
    scale = float(rng.uniform(*SCALING[1])) if rng is not None and rng.uniform() < SCALING[0] else 1.0
    rotate = rng is not None and rng.uniform() < ROTATION[0]
    angles = rng.uniform(-ROTATION[1], ROTATION[1], 3) * math.pi / 180 if rotate else np.zeros(3)
    if scale == 1.0 and not angles.any():
        corner = [(s - patch) // 2 for s in image.shape[1:]]
        window = (slice(None), *(slice(c, c + patch) for c in corner))
        return image[window], label[window]
    affine = Affine(rotate_params=tuple(angles), scale_params=(scale,) * 3, spatial_size=(patch,) * 3,
                    padding_mode="zeros", image_only=True)
    return (torch.as_tensor(affine(image.float(), mode="bilinear")),
            torch.as_tensor(affine(label.float(), mode="nearest")).round().to(label.dtype))
