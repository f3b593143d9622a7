"""Pre-training augmentations (fseft_lab.data.augment): each does what its docstring says."""
import numpy as np
import pytest
import torch

from fseft_lab.data import augment
from fseft_lab.data.augment import CONTRAST_SHIFT, PHASE_STRENGTH, PUBLISHED_PORTAL_HU, de_enhance
from fseft_lab.data.transforms import HU_WINDOW


def _only(monkeypatch, name, value):
    """nnU-Net's intensity chain with one transform, always drawn, at one value."""
    monkeypatch.setattr(augment, "ACQUISITION", {name: (1.0, (value, value))})


def _organ():
    image = torch.full((1, 32, 32, 32), 0.3)
    image[0, 8:24, 8:24, 8:24] = 0.6
    return image


def test_each_intensity_augmentation_does_what_it_says(monkeypatch):
    rng = np.random.default_rng(0)
    flat = torch.full((1, 32, 32, 32), 0.5)
    _only(monkeypatch, "noise", 0.1)
    noisy = augment.acquisition(flat, rng)
    assert float(noisy.std()) == pytest.approx(0.1 ** 0.5 * augment.NNUNET_SD, rel=0.05)   # about 19 HU
    _only(monkeypatch, "brightness", 1.25)
    level = (augment.PLAIN_SOFT_TISSUE_HU - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
    bright = augment.acquisition(torch.tensor([[[[level, 0.9]]]]), rng)
    assert float(bright[0, 0, 0, 0]) == pytest.approx(level) and float(bright[0, 0, 0, 1]) > 0.9
    ramp = 0.3 + 0.3 * torch.linspace(0, 1, 32).expand(1, 32, 32, 32)                          # a crop from 0.3 to 0.6
    for name, value, middle in (("contrast", 0.75, 0.45), ("gamma", 1.5, 0.3 + 0.3 * 0.5 ** 1.5),
                                ("inverted_gamma", 0.7, 0.3 + 0.3 * (1 - 0.5 ** 0.7))):
        _only(monkeypatch, name, value)
        out = augment.acquisition(ramp, rng)
        assert float(out.min()) >= 0.3 - 1e-6 and float(out.max()) <= 0.6 + 1e-6                 # within the crop's range
        assert float(out[0, 0, 0, 15:17].mean()) == pytest.approx(middle, abs=0.01)             # the middle moves as drawn
    _only(monkeypatch, "low_resolution", 0.5)
    edge = _organ()[0, 16, 16, 6:10]                                                        # a sharp step at voxel 8
    coarse = augment.acquisition(_organ(), rng)[0, 16, 16, 6:10]
    assert float((coarse - edge).abs().max()) > 0.05                                        # the step is smeared
    _only(monkeypatch, "blur", 1.0)
    assert float(augment.acquisition(_organ(), rng)[0, 16, 16, 8]) < 0.6 - 0.05


def test_spatial_scaling_changes_an_organs_size_and_keeps_its_centre(monkeypatch):
    image, label = torch.zeros((1, 48, 48, 48)), torch.zeros((1, 48, 48, 48), dtype=torch.uint8)
    label[0, 16:32, 16:32, 16:32] = 3
    image[label > 0] = 1.0
    still_image, still_label = augment.spatial(image, label, None, 32)
    assert torch.equal(still_image, image[:, 8:40, 8:40, 8:40]) and torch.equal(still_label, label[:, 8:40, 8:40, 8:40])
    monkeypatch.setattr(augment, "ROTATION", (0.0, 30.0))
    for scale in (0.7, 1.4):
        monkeypatch.setattr(augment, "SCALING", (1.0, (scale, scale)))
        out_image, out_label = augment.spatial(image, label, np.random.default_rng(0), 32)
        assert out_label.shape == (1, 32, 32, 32) and set(out_label.unique().tolist()) == {0, 3}
        side = float((out_label[0, :, 16, 16] > 0).sum())                     # the organ along x, in voxels
        assert abs(side - 16 / scale) <= 1.0                                  # below 1: magnified
        assert out_label[0, 16, 16, 16] == 3


def test_spatial_rotation_turns_an_organ_and_keeps_its_volume(monkeypatch):
    image, label = torch.zeros((1, 48, 48, 48)), torch.zeros((1, 48, 48, 48), dtype=torch.uint8)
    label[0, 12:36, 20:28, 20:28] = 1                              # a bar along x
    monkeypatch.setattr(augment, "SCALING", (0.0, (1.0, 1.0)))
    monkeypatch.setattr(augment, "ROTATION", (1.0, 30.0))
    _, turned = augment.spatial(image, label, np.random.default_rng(3), 32)
    _, still = augment.spatial(image, label, None, 32)
    assert float(turned.float().sum()) == pytest.approx(float(still.float().sum()), rel=0.1)
    assert not torch.equal(turned, still)


def test_augmentation_ranges_undo_every_published_enhancement_and_no_more():
    """What the augmentations do to published values (no phantom table): for each enhanced tissue,
    some strength in the range takes a uniform block of it back to within 6 HU of its plain value,
    the weakest enhancement needs the range's low end, and the shift reaches the largest gap."""
    needed = []
    for name, (plain, *enhanced) in PUBLISHED_PORTAL_HU.items():
        for e in enhanced:
            block = torch.full((1, 12, 12, 12), float(_window(e)))
            strengths = np.linspace(*PHASE_STRENGTH, 36)
            errors = [abs(float(_hu(de_enhance(block, s)[0, 6, 6, 6])) - plain) for s in strengths]
            assert min(errors) < 6.0, (name, e, min(errors))
            needed.append(strengths[int(np.argmin(errors))])
    assert min(needed) < PHASE_STRENGTH[0] + 0.05 and max(needed) == PHASE_STRENGTH[1]
    gaps = [plain - high for plain, _, high in PUBLISHED_PORTAL_HU.values()]
    assert CONTRAST_SHIFT[0] * (HU_WINDOW[1] - HU_WINDOW[0]) == pytest.approx(min(gaps), abs=2.0)


def _window(hu):
    return (np.clip(hu, *HU_WINDOW) - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])


def _hu(window):
    return window * (HU_WINDOW[1] - HU_WINDOW[0]) + HU_WINDOW[0]


def test_de_enhance_brings_an_enhanced_organ_to_plain_values_keeps_its_noise_and_leaves_bone_and_fat():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    hu = np.full((40, 40, 40), -100.0)                  # fat
    hu[4:24, 4:36, 4:36] = 115.0                        # liver, portal phase (published plain: 55-65 HU)
    hu[28:36, 4:36, 4:20] = 55.0                        # muscle ...
    bone = np.zeros_like(hu, dtype=bool)
    bone[28:36, 4:36, 20:36] = True                     # ... beside cancellous bone: 270 HU, textured, as the scanner
    hu[bone] = 270.0 + 60.0 * ndimage.gaussian_filter(rng.standard_normal(hu.shape), 1.0)[bone] / 0.2
    hu = ndimage.gaussian_filter(hu, 0.8)               # blur: a partial-volume rim below 250 HU around the bone
    hu[:24] += rng.normal(0, 15, hu[:24].shape)
    image = torch.from_numpy(_window(hu)).float()[None]
    out = de_enhance(image, 0.76)
    liver = (slice(None), slice(8, 20), slice(8, 32), slice(8, 32))
    assert float(_hu(out[liver]).mean()) == pytest.approx(58.0, abs=4.0)
    assert float(out[liver].std()) > 0.6 * float(image[liver].std())             # texture survives
    assert torch.equal(out[0, 37:], image[0, 37:])                                # fat unchanged
    inside = torch.from_numpy(ndimage.binary_erosion(bone, iterations=1))
    assert 0.3 > float((image[0][inside] < 1).float().mean()) > 0.02              # some bone is below 250 HU ...
    assert float((_hu(image[0]) - _hu(out[0]))[inside].max()) < 20.0              # ... and is not eaten away
    # no halo: muscle three voxels from the bone (nearer, it is left alone) moves like muscle far
    # from it, with no bone in its local mean
    near, far = _hu(out[0, 30:34, 8:32, 17]), _hu(out[0, 30:34, 8:32, 8])
    assert float((near.mean() - far.mean()).abs()) < 2.0
    assert float(far.mean()) == pytest.approx(55.0 - 0.76 * 15.0, abs=1.0)
