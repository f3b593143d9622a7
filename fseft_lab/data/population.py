"""Who the phantom's subjects are: a population drawn from published anatomy, not one patient cloned.

Few-shot learning is about what one or five subjects cannot show. A subject here is a set of
**traits** (sex, age, body frame, fat, how large each organ is, which organs were removed, how
full the stomach and bladder are) drawn from distributions taken from CT volumetry and
population studies; :mod:`fseft_lab.data.body` turns the traits into shapes. Taught in
notebook 00, which plots the phantom's organ volumes beside the reference ranges below.

Organ volumes are log-normal multipliers of the reference adult organ (the shape the phantom
draws at factor 1), ``v = body^a * sex * age * exp(N(0, sigma))``. The coefficient of variation
(CV = SD / mean) each aims at, and where it comes from:

=============  =========  ==================================================================
organ          CV aimed   reference (mean +- SD in adults, CT unless said)
=============  =========  ==================================================================
liver          ~0.2       1,411 +- 263 mL (women), 1,710 +- 288 mL (men); scales with body
                          surface area (Vauthey et al., Liver Transpl 2002: TLV = -794 +
                          1,267 x BSA); 1,205 +- 258 mL in 369 adults (Feng et al., World J
                          Gastroenterol 2017)
spleen         ~0.4       215 mL, range 107-315, no correlation with age, sex or habitus
                          (Prassopoulos et al., Eur Radiol 1997); 198 +- 88 mL in 212 adults
                          (Caglar et al., Folia Morphol 2014)
kidney (each)  ~0.2       right kidney median 138 mL (IQR 121-156) in women, 174 (154-197)
                          in men (MRI, 1,815 adults, J Clin Med 2024); governed by body size
                          and sex, not age below 65 (renal parenchymal volume in kidney donors)
pancreas       ~0.3       72 +- 26 mL at age 20-60, declining after 60, larger with obesity
                          (Saisho et al., Clin Anat 2007, 1,886 adults); 78 +- 22 mL in 204
                          trauma patients (Abdom Radiol 2019)
stomach        >=0.5      filling: fasting to post-prandial (the issue's order of magnitude)
gallbladder    ~0.5       fasting volume varies widely; absent after cholecystectomy
bladder        ~0.6       filling
=============  =========  ==================================================================

Absent organs: gallbladder surgery in 6.0 % (1988-94) and 11.6 % (2017-20) of US adults
(NHANES; Unalp-Arida and Ruhl, Hepatology 2023), more often in women and with age; nephrectomy
and splenectomy "a few percent" of clinical CT cohorts (order of magnitude: no population
figure at hand; the rates below are assumptions, named as such). Body habitus: adult weight CV
about 0.25 and waist circumference about 100 +- 16 cm (NHANES anthropometric reference data,
2015-18); subcutaneous fat thickness varies several-fold. Routine clinical CT (TotalSegmentator:
1,204 examinations randomly sampled from clinical routine, "different ages, pathologies,
scanners, body parts"; Wasserthal et al., Radiol Artif Intell 2023) is older than the general
population and holds more post-surgical and lesion-bearing patients than research cohorts.

These figures set the distributions once; they are never adjusted toward a benchmark result.

>>> traits = draw_traits(seed=0, index=3)
>>> round(traits.organ_volume["spleen"], 2) > 0
True
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Population:
    """Who is scanned at one kind of site.

    Args:
        name: population name (a domain names its population).
        age: mean and SD of age in years (clipped to 18-90).
        female: fraction of women.
        surgery: multiplier of the reference rates of cholecystectomy, nephrectomy and
            splenectomy (clinical cohorts hold more operated patients than volunteers).
    """

    name: str
    age: tuple[float, float]
    female: float
    surgery: float = 1.0


POPULATIONS: dict[str, Population] = {p.name: p for p in (
    # research cohorts of abdominal CT (BTCV-, AMOS-, FLARE-like): adults of all ages
    Population("adult", age=(55.0, 15.0), female=0.45),
    # routine clinical CT (TotalSegmentator-like, CT-ORG-like) and tumour cohorts (LiTS-, KiTS-like)
    Population("clinical", age=(63.0, 15.0), female=0.42, surgery=1.5),
)}

#: Organ volume model: (exponent of the body-size factor, sex ratio men/women, log-normal sigma).
#: The sex ratio is split evenly around 1 (men x sqrt(r), women / sqrt(r)).
ORGAN_VOLUME: dict[str, tuple[float, float, float]] = {
    "liver": (1.0, 1.15, 0.15),        # BSA-driven (Vauthey); women 1,411 vs men 1,710 mL
    "spleen": (0.0, 1.1, 0.38),        # no habitus correlation (Prassopoulos); CV 0.4-0.44
    "kidney": (0.8, 1.25, 0.12),       # 138 vs 174 mL medians; both sides share it
    "pancreas": (0.5, 1.05, 0.27),     # Saisho: 72 +- 26 mL (age handled below)
    "stomach": (0.5, 1.1, 0.60),       # filling
    "gallbladder": (0.3, 1.0, 0.45),   # fasting volume
    "bladder": (0.0, 1.1, 0.55),       # filling
    "heart": (1.0, 1.2, 0.10),
    "lung": (0.0, 1.2, 0.10),          # scales with height (below), men larger
    "gluteus": (0.8, 1.3, 0.15),       # muscle mass: sex, age (below)
    "adrenal": (0.3, 1.1, 0.20),
}

#: Published adult organ volumes (mL) the phantom's spread is compared with (notebook 00):
#: structure -> (mean, SD, source). Kidney: one side, both sexes pooled from the sex medians and IQRs.
REFERENCE_VOLUMES: dict[str, tuple[float, float, str]] = {
    "liver": (1570.0, 314.0, "CT, 77 healthy adults, pooled: men 1,710 +- 288, women 1,411 +- 263 mL"),
    "spleen": (198.0, 88.0, "Caglar et al. 2014, CT, 212 adults (Prassopoulos 1997: mean 215, range 107-315)"),
    "kidney_right": (156.0, 34.0, "MRI, 1,815 adults (J Clin Med 2024), pooled: medians 138 (women), 174 (men)"),
    "pancreas": (72.4, 25.8, "Saisho et al. 2007, CT, 1,886 adults aged 20-60"),
}

#: Reference rates (per subject, before a population's ``surgery`` multiplier).
CHOLECYSTECTOMY = (0.02, 0.0016)   # 2 % at age 20, +0.16 % per year: ~8 % at 58 (NHANES 6-12 %)
NEPHRECTOMY = 0.01                 # each side; assumption (a few % of clinical cohorts)
SPLENECTOMY = 0.006                # assumption
RIEDEL_LOBE = (0.04, 0.10)         # men, women: an inferior tongue of the right liver lobe


@dataclass
class Traits:
    """One subject: what the phantom draws for them (multipliers are relative to the reference adult).

    Args:
        sex: ``"F"`` or ``"M"``.
        age: years.
        height: multiplier of body length (z).
        frame: multiplier of skeleton width and depth (x, y).
        body_size: multiplier of body surface area, the driver of organ size.
        subcutaneous_fat_mm: subcutaneous fat thickness.
        visceral_fat_mm: extra room between the organs and the muscle wall.
        organ_volume: organ -> volume multiplier (``kidney`` for both sides).
        absent: organs removed by surgery (``gallbladder``, ``kidney_right``, ``kidney_left``, ``spleen``).
        riedel_lobe: the liver has an inferior tongue of its right lobe.
        left_lobe: size multiplier of the liver's left lobe relative to its right (lobe proportions).
        aorta: multiplier of the aortic diameter (grows with age, larger in men).
    """

    sex: str
    age: float
    height: float
    frame: float
    body_size: float
    subcutaneous_fat_mm: float
    visceral_fat_mm: float
    organ_volume: dict[str, float] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    riedel_lobe: bool = False
    left_lobe: float = 1.0
    aorta: float = 1.0


def get_population(name: str) -> Population:
    if name not in POPULATIONS:
        raise ValueError(f"unknown population {name!r}; known: {', '.join(POPULATIONS)}")
    return POPULATIONS[name]


def draw_traits(seed: int, index: int, population: str = "adult") -> Traits:
    """Draw subject ``index`` of population ``seed`` (deterministic in ``(seed, index, population)``)."""
    pop = get_population(population)
    rng = np.random.default_rng([seed, index, 0x9E7, sum(map(ord, pop.name))])
    female = rng.uniform() < pop.female
    sign = -1.0 if female else 1.0                       # men above the middle, women below
    age = float(np.clip(rng.normal(*pop.age), 18, 90))
    height = float(np.exp(rng.normal(0.04 * sign, 0.04)))  # body length: women ~8 % shorter
    frame = float(np.exp(rng.normal(0.03 * sign, 0.04)))
    body_size = float(np.exp(rng.normal(0.06 * sign, 0.11)))  # BSA: CV ~0.12, men ~12 % larger
    subcutaneous = float(np.clip(np.exp(rng.normal(np.log(24.0 if female else 16.0), 0.5)), 4.0, 75.0))
    visceral = float(np.clip(np.exp(rng.normal(np.log(6.0 if female else 11.0), 0.7)), 0.0, 45.0))

    volume = {}
    for organ, (exponent, sex_ratio, sigma) in ORGAN_VOLUME.items():
        v = body_size ** exponent * sex_ratio ** (0.5 * sign) * np.exp(rng.normal(-0.5 * sigma**2, sigma))
        volume[organ] = float(v)
    volume["lung"] *= height ** 3
    volume["pancreas"] *= 1.0 - 0.008 * max(0.0, age - 60.0)   # Saisho: decline after 60
    volume["gluteus"] *= 1.0 - 0.005 * max(0.0, age - 50.0)    # muscle loss with age
    volume["kidney"] *= 1.0 - 0.004 * max(0.0, age - 65.0)     # parenchyma shrinks after 65
    # the two kidneys share their size but differ a little (left usually slightly larger)
    volume["kidney_right"] = volume["kidney"] * float(np.exp(rng.normal(-0.02, 0.07)))
    volume["kidney_left"] = volume["kidney"] * float(np.exp(rng.normal(0.02, 0.07)))

    absent = set()
    p_gallbladder = (CHOLECYSTECTOMY[0] + CHOLECYSTECTOMY[1] * (age - 20)) * (1.3 if female else 0.7)
    for organ, p in (("gallbladder", p_gallbladder), ("kidney_right", NEPHRECTOMY), ("kidney_left", NEPHRECTOMY),
                     ("spleen", SPLENECTOMY)):
        if rng.uniform() < p * pop.surgery:
            absent.add(organ)
    if {"kidney_right", "kidney_left"} <= absent:  # nobody lives here without a kidney
        absent.discard("kidney_left")
    return Traits(sex="F" if female else "M", age=age, height=height, frame=frame, body_size=body_size,
                  subcutaneous_fat_mm=subcutaneous, visceral_fat_mm=visceral, organ_volume=volume,
                  absent=frozenset(absent), riedel_lobe=bool(rng.uniform() < RIEDEL_LOBE[female]),
                  left_lobe=float(np.exp(rng.normal(0.0, 0.2))),
                  aorta=float((1.0 + 0.004 * (age - 55.0)) * 1.06 ** sign * np.exp(rng.normal(0.0, 0.06))))
