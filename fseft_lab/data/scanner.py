"""The scanner side of the phantom: acquisition domains, fields of view, and Hounsfield units.

A **domain** is a kind of site: its contrast protocol, noise, blur, native spacing, the mix of
body regions it scans (its fields of view), its calibration and the population it serves
(:mod:`fseft_lab.data.population`). Each **scan** of a subject in a domain draws its own
acquisition from the domain's ranges: which field of view and where its ends fall (organs at
the edge are cut and labelled as far as they are visible), slice thickness (partial volume along
z), the reconstruction kernel's noise grain, the noise level (larger patients are noisier) and
the contrast timing. Taught in notebook 00.

Sources for the ranges: standard CT tissue tables (fat -120..-80 HU, water 0..20, muscle 40..60,
liver/spleen 50..70 plain, blood 40 plain, aorta 150..300 arterial, bone 300..1200); slice
thickness 0.5-5 mm across public abdominal datasets (BTCV 2.5-5 mm, LiTS 0.7-5 mm, KiTS
0.5-5 mm; older ones thicker); TotalSegmentator's examinations were randomly sampled from clinical
routine and span body regions from one region to whole-body (Wasserthal et al., Radiol Artif Intell
2023). The fields-of-view mixes below are order-of-magnitude readings of those descriptions, not
counts from the datasets.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Tissue -> HU for contrast phase (none, arterial, portal).
TISSUE_HU: dict[str, tuple[float, float, float]] = {
    "air": (-1000, -1000, -1000), "lung": (-820, -800, -800), "fat": (-100, -100, -100),
    "skin": (30, 35, 40), "muscle": (50, 55, 60), "water": (10, 10, 10),
    "gi_content": (25, 25, 30), "gas": (-950, -950, -950),
    "liver": (58, 75, 115), "spleen": (50, 125, 118), "kidney": (35, 160, 175),
    "pancreas": (42, 110, 95), "adrenal": (30, 65, 65), "myocardium": (45, 105, 95),
    "artery": (42, 300, 170), "vein": (40, 90, 155), "portal": (40, 130, 175),
    "right_heart": (40, 210, 150), "left_heart": (40, 300, 165),
    "bone": (260, 280, 280), "cortical_bone": (850, 850, 850), "disc": (85, 90, 90),
    "csf": (12, 12, 12), "prostate": (40, 70, 80),
    "liver_lesion": (40, 55, 60), "kidney_lesion": (35, 95, 90),
}
PHASES = ("none", "arterial", "portal")
#: Standard deviation (HU) of each tissue's correlated texture.
TEXTURE_HU = {"fat": 8.0, "muscle": 7.0, "liver": 6.0, "spleen": 6.0, "kidney": 10.0,
              "lung": 35.0, "bone": 60.0, "gi_content": 25.0, "pancreas": 12.0}

#: Field-of-view z ranges (mm, reference subject; they scale with the subject's height).
#: x and y cover the subject's body (see ``Subject.half_width``).
FOVS: dict[str, tuple[float, float]] = {
    "abdomen": (-95.0, 205.0), "abdomen_pelvis": (-265.0, 205.0), "thorax": (115.0, 345.0),
    "thorax_abdomen": (-95.0, 345.0), "pelvis": (-290.0, -40.0), "tap": (-290.0, 345.0),
}
#: Where a scan's ends fall around its field of view's nominal ends: normal SD (mm), clipped at 2 SD.
FOV_END_SD_MM = 18.0


@dataclass(frozen=True)
class Domain:
    """A named set of acquisition parameters: what makes one hospital's CT look unlike another's.

    Args:
        name: domain name.
        phase: contrast phase, one of ``none``, ``arterial``, ``portal``.
        noise_hu: standard deviation of scanner noise (HU) for a patient 350 mm wide at the hips.
        blur_mm: in-plane Gaussian point-spread sigma (mm): partial-volume blur at edges.
        spacing: native voxel size (mm) in x, y, z, used when no spacing is requested.
        fovs: the body regions this site scans, as ``(field of view, weight)`` pairs.
        hu_offset: added to every HU value (calibration offset).
        hu_scale: multiplies every HU value (reconstruction kernel / calibration).
        lesion_rate: probability that a subject carries liver and kidney lesions in this
            population (the LiTS- and KiTS-like sources always do).
        population: who is scanned (:data:`fseft_lab.data.population.POPULATIONS`).
        slice_mm: slice thicknesses this site reconstructs; each scan draws one (partial volume
            along z: a Gaussian of that full width at half maximum).
    """

    name: str
    phase: str
    noise_hu: float
    blur_mm: float
    spacing: tuple[float, float, float]
    fovs: tuple[tuple[str, float], ...]
    hu_offset: float = 0.0
    hu_scale: float = 1.0
    lesion_rate: float = 0.1
    population: str = "adult"
    slice_mm: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"domain {self.name!r}: unknown contrast phase {self.phase!r}; known: {PHASES}")
        for fov, weight in self.fovs:
            if fov not in FOVS or not weight > 0:
                raise ValueError(f"domain {self.name!r}: field of view {fov!r} with weight {weight} "
                                 f"(known fields of view: {', '.join(FOVS)}; weights must be > 0)")


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    # pre-training sources: contrast-enhanced abdominal research cohorts, tumour cohorts, one plain clinical set
    Domain("btcv_like", "portal", 12.0, 0.8, (0.8, 0.8, 3.0), (("abdomen", 0.7), ("abdomen_pelvis", 0.3)),
           slice_mm=(2.5, 3.0, 5.0)),
    Domain("lits_like", "portal", 16.0, 1.0, (0.7, 0.7, 1.5), (("abdomen", 0.6), ("abdomen_pelvis", 0.2), ("thorax_abdomen", 0.2)),
           lesion_rate=1.0, population="clinical", slice_mm=(0.7, 1.0, 2.5, 5.0)),
    Domain("kits_like", "arterial", 14.0, 0.8, (0.8, 0.8, 1.0), (("abdomen", 0.8), ("abdomen_pelvis", 0.2)),
           lesion_rate=1.0, population="clinical", slice_mm=(0.5, 1.0, 3.0, 5.0)),
    Domain("amos_like", "portal", 18.0, 1.0, (0.7, 0.7, 2.0), (("abdomen_pelvis", 0.6), ("abdomen", 0.4)),
           slice_mm=(1.25, 2.0, 5.0)),
    Domain("ctorg_like", "none", 22.0, 1.2, (0.8, 0.8, 2.5), (("tap", 0.5), ("abdomen_pelvis", 0.3), ("thorax_abdomen", 0.2)),
           population="clinical", slice_mm=(1.0, 2.5, 5.0)),
    # targets: other scanners, protocols and populations (noisier, blurrier, recalibrated)
    Domain("totalseg_like", "arterial", 30.0, 1.6, (1.5, 1.5, 1.5),
           (("tap", 0.3), ("thorax_abdomen", 0.15), ("abdomen_pelvis", 0.25), ("abdomen", 0.15), ("thorax", 0.1),
            ("pelvis", 0.05)), 25.0, 0.92, population="clinical", slice_mm=(1.0, 1.5, 2.0, 3.0, 5.0)),
    Domain("flare_like", "none", 34.0, 1.5, (0.8, 0.8, 2.5), (("abdomen", 0.8), ("abdomen_pelvis", 0.2)), -30.0, 1.05,
           slice_mm=(0.8, 2.5, 5.0)),
)}


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; known domains: {', '.join(DOMAINS)}")
    return DOMAINS[name]


@dataclass(frozen=True)
class Scan:
    """One acquisition of one subject: what a domain's ranges gave this time.

    Args:
        fov: field of view name.
        z_range: lower and upper end of the scan along z (mm, patient space).
        slice_mm: reconstructed slice thickness (partial volume along z).
        noise_hu: scanner noise at this patient's size.
        noise_grain: correlation of the noise (voxels): the reconstruction kernel.
        enhancement: how much contrast reached this patient (1 = the table's values).
        timing: fraction of the way toward the neighbouring phase (late arterial, early portal).
    """

    fov: str
    z_range: tuple[float, float]
    slice_mm: float
    noise_hu: float
    noise_grain: float
    enhancement: float
    timing: float


def scan_rng(seed: int, subject: int, domain: str) -> np.random.Generator:
    return np.random.default_rng([seed, subject, zlib.crc32(domain.encode())])


def draw_scan(domain: Domain, rng: np.random.Generator, z_scale: float, body_width_mm: float,
              fov: str | None = None) -> Scan:
    """Draw a scan's acquisition. ``fov`` forces a field of view with its nominal ends (no jitter)."""
    names, weights = zip(*domain.fovs)
    chosen = str(rng.choice(names, p=np.asarray(weights) / sum(weights)))
    ends = np.clip(rng.normal(0.0, FOV_END_SD_MM, 2), -2 * FOV_END_SD_MM, 2 * FOV_END_SD_MM)
    if fov is not None:
        if fov not in FOVS:
            raise ValueError(f"unknown field of view {fov!r}; known: {', '.join(FOVS)}")
        chosen, ends = fov, np.zeros(2)
    z0, z1 = (np.array(FOVS[chosen]) * z_scale + ends).tolist()
    noise = domain.noise_hu * (body_width_mm / 350.0) * float(np.exp(rng.normal(0.0, 0.2)))
    return Scan(fov=chosen, z_range=(z0, z1), slice_mm=float(rng.choice(domain.slice_mm)), noise_hu=noise,
                noise_grain=float(rng.uniform(0.4, 0.9)), enhancement=float(np.exp(rng.normal(0.0, 0.15))),
                timing=float(rng.uniform(0.0, 0.3)))


def hounsfield(tissue: np.ndarray, domain: Domain, scan: Scan, spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tissue index map (X, Y, Z), indexes into :data:`TISSUE_HU` -> CT in HU (int16): the
    phase's values with this patient's enhancement and timing, texture, point-spread and
    slice-thickness blur, scanner noise, calibration."""
    phase = PHASES.index(domain.phase)
    other = {0: 0, 1: 2, 2: 1}[phase]      # arterial drifts toward portal, portal toward arterial
    table = np.array(list(TISSUE_HU.values()), np.float32)       # (tissues, 3)
    enhanced = table[:, phase] + scan.timing * (table[:, other] - table[:, phase])
    lut = table[:, 0] + (enhanced - table[:, 0]) * scan.enhancement + rng.normal(0, 3, len(table)).astype(np.float32)
    hu = lut[tissue]
    texture = ndimage.gaussian_filter(rng.standard_normal(tissue.shape).astype(np.float32), 2.0 / spacing)
    texture /= texture.std() + 1e-6
    amp = np.array([TEXTURE_HU.get(t, 4.0) for t in TISSUE_HU], np.float32)
    hu += texture * amp[tissue]
    psf = np.array([domain.blur_mm, domain.blur_mm, np.hypot(domain.blur_mm, scan.slice_mm / 2.355)])
    hu = ndimage.gaussian_filter(hu, psf / spacing)                          # partial volume at edges
    noise = ndimage.gaussian_filter(rng.standard_normal(tissue.shape).astype(np.float32), scan.noise_grain)
    hu += noise * (scan.noise_hu / (noise.std() + 1e-6))
    hu = hu * domain.hu_scale + domain.hu_offset
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
