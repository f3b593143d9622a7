"""Procedural CT phantom: a population of subjects in millimetres, rasterised by a scanner.

Why: no real CT can be downloaded in CI, and students need data that runs in minutes. Three
modules make a volume: :mod:`fseft_lab.data.population` draws who a subject is (sex, age, body
frame, fat, each organ's size, which organs were removed) from published CT volumetry;
:mod:`fseft_lab.data.body` turns that into smooth shapes in patient space (mm); and
:mod:`fseft_lab.data.scanner` draws where and how they are scanned (field of view, slice
thickness, noise, contrast). This module rasterises the shapes on the scan's grid: one atom per
voxel (later shapes overwrite earlier ones, which is how organs come to touch), then tissue and
Hounsfield units. Taught in notebook 00.

Deterministic: the anatomy depends on ``(seed, subject, population)`` (lesions are drawn for
everyone and painted when the domain's ``lesion_rate`` says this population has them), the scan
on ``(seed, subject, domain)``; numpy's PCG64 gives the same volume on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fseft_lab.anatomy import COMPOSITES, UNSIDED, check_structure
from fseft_lab.data.body import ATOM_ID, ATOMS, PHANTOM_STRUCTURES, WALLS, Part, Subject, ellipsoid, make_subject, region, tube
from fseft_lab.data.scanner import DOMAINS, FOVS, PHASES, TISSUE_HU, Domain, Scan, draw_scan, get_domain, hounsfield, scan_rng

__all__ = ["GENERATOR_VERSION", "MAX_VOXELS", "PhantomVolume", "VolumeTooLarge", "census", "generate", "render",
           # the body's and the scanner's names, imported from here by the notebooks and tests
           "ATOM_ID", "ATOMS", "PHANTOM_STRUCTURES", "WALLS", "Part", "Subject", "ellipsoid", "make_subject", "region", "tube",
           "DOMAINS", "FOVS", "PHASES", "TISSUE_HU", "Domain", "Scan", "draw_scan", "get_domain", "hounsfield", "scan_rng"]

#: Bumped whenever a change alters generated volumes, so that cached exports are regenerated.
#: 1: first release; 2: field of view 300 mm deep; 3: a population (traits from published
#: volumetry, absent organs, lobulated shapes) and per-scan acquisition (field-of-view mix and
#: ends, slice thickness, kernel, noise with patient size, contrast timing).
GENERATOR_VERSION = 3


# ----------------------------------------------------------------------------- rasterising
#: The renderer's limit: a scan of more voxels is refused (memory), e.g. a large subject at KiTS-like 0.8 x 0.8 x 1 mm.
MAX_VOXELS = 80_000_000


class VolumeTooLarge(ValueError):
    """A scan beyond :data:`MAX_VOXELS` at the asked voxel size."""


@dataclass
class PhantomVolume:
    """A rasterised phantom: CT in HU and the atom map, both (X, Y, Z) in RAS, with the affine."""

    image: np.ndarray           # (X, Y, Z) int16, Hounsfield units
    atoms: np.ndarray           # (X, Y, Z) uint8, index into ATOMS
    affine: np.ndarray          # (4, 4) voxel -> RAS mm
    domain: str
    seed: int
    subject: int
    scan: Scan | None = None    # the acquisition this volume came from (field of view, slice thickness, ...)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.abs(np.diag(self.affine)[:3]))

    def mask(self, structure: str) -> np.ndarray:
        """Boolean (X, Y, Z) mask of a template structure (composites such as ``lung_right``
        are the union of their parts; ``kidney``/``lung`` without a side are both sides)."""
        if structure in UNSIDED:
            return self.mask(UNSIDED[structure][0]) | self.mask(UNSIDED[structure][1])
        check_structure(structure)
        if structure not in PHANTOM_STRUCTURES:
            return np.zeros(self.atoms.shape, bool)  # e.g. brain: never in the phantom
        parts = COMPOSITES.get(structure, (structure,))
        return np.isin(self.atoms, [ATOM_ID[p] for p in parts])

    def label_map(self, template: dict[int, str]) -> np.ndarray:
        """Integer label map (X, Y, Z) written with a dataset's template (value -> structure)."""
        out = np.zeros(self.atoms.shape, np.uint8)
        for value, structure in template.items():
            out[self.mask(structure)] = value
        return out

    def structures_present(self) -> list[str]:
        present = set(np.unique(self.atoms).tolist())
        return [s for s in PHANTOM_STRUCTURES
                if any(ATOM_ID[p] in present for p in COMPOSITES.get(s, (s,)))]


def _grid(subject: Subject, z_range: tuple[float, float], spacing: tuple[float, float, float]):
    z0, z1 = z_range
    hx, hy = subject.half_width
    lo = np.array([-hx, -hy, z0])
    shape = np.floor((np.array([hx, hy, z1]) - lo) / np.asarray(spacing)).astype(int) + 1
    axes = [lo[i] + np.arange(shape[i]) * spacing[i] for i in range(3)]
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = lo
    return axes, affine


def render(subject: Subject, domain: Domain | str, spacing: float | tuple[float, float, float] | None = None,
           fov: str | None = None) -> PhantomVolume:
    """Rasterise a subject as one of a domain's scanners sees it.

    Args:
        subject: from :func:`make_subject`.
        domain: a :class:`Domain` or its name.
        spacing: voxel size in mm (one number for isotropic, or x, y, z); default: the domain's.
        fov: force a field of view with its nominal ends; default: drawn from the domain's mix,
            with ends that fall where this scan put them.

    Returns:
        A :class:`PhantomVolume` with ``image`` (X, Y, Z) in HU, the atom map and the scan.
    """
    domain = get_domain(domain) if isinstance(domain, str) else domain
    spacing = domain.spacing if spacing is None else spacing
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    if min(spacing) <= 0 or not np.all(np.isfinite(spacing)):
        raise ValueError(f"spacing must be positive millimetres, got {spacing}")
    if max(spacing) > 20:
        raise ValueError(f"spacing {spacing} mm is coarser than 20 mm: organs would vanish")
    rng = scan_rng(subject.seed, subject.index, domain.name)
    scan = draw_scan(domain, rng, subject.z_scale, 2 * subject.half_width[0], fov)
    axes, affine = _grid(subject, scan.z_range, spacing)
    if np.prod([len(a) for a in axes]) > MAX_VOXELS:
        raise VolumeTooLarge(f"spacing {spacing} mm gives {[len(a) for a in axes]} voxels (over {MAX_VOXELS:,})")
    atoms = _paint(subject, axes, domain.lesion_rate)
    if (atoms == 0).all():
        raise ValueError(f"field of view {scan.fov!r} holds no body for subject {subject.index}")
    image = hounsfield(_tissue(atoms, rng), domain, scan, np.asarray(spacing), rng)
    return PhantomVolume(image, atoms, affine, domain.name, subject.seed, subject.index, scan)


def _paint(subject: Subject, axes: list[np.ndarray], lesion_rate: float) -> np.ndarray:
    """Paint every part into an atom map, later parts over earlier ones."""
    x, y, z = np.meshgrid(*(a.astype(np.float32) for a in axes), indexing="ij")
    qx, qy, qz = subject.deform(x, y, z)
    atoms = np.zeros(x.shape, np.uint8)
    margin = subject.deformation_mm + 1.0
    lesion_draw = np.random.default_rng([subject.seed, subject.index, 0x1E]).uniform()
    for part in subject.parts:
        if part.host and lesion_draw >= lesion_rate:
            continue
        for lower, upper, inside in part.pieces:
            sl = tuple(slice(np.searchsorted(ax, lo - margin), np.searchsorted(ax, hi + margin, side="right"))
                       for ax, lo, hi in zip(axes, lower, upper))
            if any(s.stop <= s.start for s in sl):
                continue
            px, py, pz = qx[sl], qy[sl], qz[sl]
            m = inside(px, py, pz)
            if part.clip is not None:
                m &= part.clip(px, py, pz)
            if part.host is not None:
                m &= atoms[sl] == ATOM_ID[part.host]
            atoms[sl][m] = ATOM_ID[part.atom]
    return atoms


def _tissue(atoms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Atom map -> tissue index map (into ``TISSUE_HU``): walls of hollow organs and bone, gas
    risen to the anterior part of the bowel (a supine patient)."""
    tissues = list(TISSUE_HU)
    tissue_of_atom = np.array([tissues.index(t) for _, _, t in ATOMS])
    tissue = tissue_of_atom[atoms]
    for atom, wall in WALLS.items():  # a one-voxel outer layer of hollow organs and bone
        inside = atoms == ATOM_ID[atom]
        tissue[inside & ~ndimage.binary_erosion(inside)] = tissues.index(wall)
    gi = np.isin(atoms, [ATOM_ID["stomach"], ATOM_ID["duodenum"], ATOM_ID["colon"]])
    gas_level = np.quantile(np.nonzero(gi)[1], rng.uniform(0.75, 0.9)) if gi.any() else np.inf
    gas = gi & (tissue == tissues.index("gi_content")) & (np.arange(atoms.shape[1])[None, :, None] > gas_level)
    tissue[gas] = tissues.index("gas")
    return tissue


def generate(seed: int, subject: int, domain: str = "btcv_like", spacing=None, fov: str | None = None) -> PhantomVolume:
    """Generate one phantom volume: ``generate(0, 3, 'flare_like', spacing=3.0)``; the subject
    comes from the domain's population."""
    dom = get_domain(domain)
    return render(make_subject(seed, subject, dom.population), dom, spacing, fov)


def census(seed: int, subjects: int, population: str = "adult", spacing: float = 4.0,
           structures: tuple[str, ...] = ("liver", "spleen", "kidney_right", "kidney_left", "pancreas", "stomach",
                                          "gallbladder", "urinary_bladder")):
    """A population sample's traits and organ volumes (mL), measured on whole bodies (no field of
    view, no lesions) at ``spacing`` mm: one row per subject, ``body`` is everything inside the skin.

    >>> census(0, 2, spacing=8.0).columns[:4].tolist()   # doctest: +SKIP
    ['subject', 'sex', 'age', 'absent']
    """
    import pandas as pd

    rows = []
    for i in range(subjects):
        s = make_subject(seed, i, population)
        axes, _ = _grid(s, tuple(np.array(FOVS["tap"]) * s.z_scale + [-60.0, 60.0]), (spacing,) * 3)
        atoms = _paint(s, axes, 0.0)
        ml = spacing ** 3 / 1000.0
        rows.append({"subject": i, "sex": s.traits.sex, "age": round(s.traits.age), "absent": ", ".join(sorted(s.traits.absent)),
                     "body": float((atoms > 0).sum() * ml),
                     **{name: float(np.isin(atoms, [ATOM_ID[p] for p in COMPOSITES.get(name, (name,))]).sum() * ml)
                        for name in structures}})
    return pd.DataFrame(rows)
