"""A phantom subject's body in millimetres: the painted atoms, the shapes, and the recipe.

A subject is a list of smooth shapes (deformed, lobulated ellipsoids, swept tubes, regions bounded
by the diaphragm or the body wall) placed in patient space (RAS, mm: +x = patient's right, +y =
anterior, +z = superior; z = 0 near L2), each painting one atom; :mod:`fseft_lab.data.phantom`
rasterises them for a scan. Who the subject is (sex, age, body frame, fat, each organ's size,
which organs were removed) comes from :mod:`fseft_lab.data.population`. Taught in notebook 00.

Deterministic: the anatomy depends on ``(seed, subject, population)`` only. A change here that
alters generated volumes bumps ``fseft_lab.data.phantom.GENERATOR_VERSION``.

Sizes of the reference adult (every volume multiplier 1), which the population then spreads
(``tests/test_phantom.py`` checks the spread against the references in
:mod:`fseft_lab.data.population`): liver ~1,550 mL, spleen ~210 mL, each kidney ~150 mL,
pancreas ~75 mL, gallbladder ~30 mL, stomach ~450 mL, bladder ~200 mL; aorta diameter 18-30 mm
(abdominal 18-26).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fseft_lab.anatomy import COMPOSITES
from fseft_lab.data.population import Traits, draw_traits

# ----------------------------------------------------------------------------- anatomy
#: Painted atoms: (atom name, template structure or None if unlabelled, tissue). Index = atom id.
ATOMS: tuple[tuple[str, str | None, str], ...] = (
    ("air", None, "air"), ("body_fat", None, "fat"), ("body_wall", None, "muscle"),
    ("skin", None, "skin"), ("back_muscle", None, "muscle"), ("psoas", None, "muscle"),
    ("diaphragm", None, "muscle"),
    ("lung_upper_lobe_right", "lung_upper_lobe_right", "lung"),
    ("lung_middle_lobe_right", "lung_middle_lobe_right", "lung"),
    ("lung_lower_lobe_right", "lung_lower_lobe_right", "lung"),
    ("lung_upper_lobe_left", "lung_upper_lobe_left", "lung"),
    ("lung_lower_lobe_left", "lung_lower_lobe_left", "lung"),
    ("colon", None, "gi_content"), ("small_bowel", None, "water"),
    ("urinary_bladder", "urinary_bladder", "water"),
    ("prostate_or_uterus", "prostate_or_uterus", "prostate"),
    ("gluteus_maximus_right", "gluteus_maximus_right", "muscle"),
    ("gluteus_maximus_left", "gluteus_maximus_left", "muscle"),
    ("gluteus_medius_right", "gluteus_medius_right", "muscle"),
    ("gluteus_medius_left", "gluteus_medius_left", "muscle"),
    ("gluteus_minimus_right", "gluteus_minimus_right", "muscle"),
    ("gluteus_minimus_left", "gluteus_minimus_left", "muscle"),
    ("kidney_right", "kidney_right", "kidney"), ("kidney_left", "kidney_left", "kidney"),
    ("adrenal_gland_right", "adrenal_gland_right", "adrenal"),
    ("adrenal_gland_left", "adrenal_gland_left", "adrenal"),
    ("liver", "liver", "liver"), ("spleen", "spleen", "spleen"), ("stomach", "stomach", "gi_content"),
    ("pancreas", "pancreas", "pancreas"), ("duodenum", "duodenum", "gi_content"),
    ("gallbladder", "gallbladder", "water"),
    ("heart_atrium_right", "heart_atrium_right", "right_heart"),
    ("heart_ventricle_right", "heart_ventricle_right", "right_heart"),
    ("heart_atrium_left", "heart_atrium_left", "left_heart"),
    ("heart_myocardium", "heart_myocardium", "myocardium"),
    ("heart_ventricle_left", "heart_ventricle_left", "left_heart"),
    ("esophagus", "esophagus", "muscle"), ("iliac_artery", None, "artery"),
    ("iliac_vein", None, "vein"), ("aorta", "aorta", "artery"),
    ("celiac_trunk", "celiac_trunk", "artery"), ("inferior_vena_cava", "inferior_vena_cava", "vein"),
    ("portal_vein_and_splenic_vein", "portal_vein_and_splenic_vein", "portal"),
    ("liver_tumor", "liver_tumor", "liver_lesion"), ("kidney_tumor", "kidney_tumor", "kidney_lesion"),
    ("kidney_cyst", "kidney_cyst", "water"), ("bone", "bone", "bone"), ("disc", None, "disc"),
    ("spinal_canal", None, "csf"),
)
ATOM_ID = {name: i for i, (name, _, _) in enumerate(ATOMS)}
#: Structures of the template the phantom draws (others, e.g. brain, are never present).
PHANTOM_STRUCTURES: tuple[str, ...] = tuple(s for _, s, _ in ATOMS if s) + tuple(COMPOSITES)
#: Atoms whose outer voxel layer is a wall of another tissue (hollow organs, cortical bone).
WALLS = {"stomach": "muscle", "duodenum": "muscle", "colon": "muscle", "small_bowel": "muscle",
         "urinary_bladder": "muscle", "gallbladder": "muscle", "bone": "cortical_bone"}


# ----------------------------------------------------------------------------- shapes
Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Piece = tuple[np.ndarray, np.ndarray, Mask]  # (lower corner mm, upper corner mm, inside test)


def _rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid(center, radii, degrees=(0.0, 0.0, 0.0), bumps=()) -> list[Piece]:
    """A rotated ellipsoid, ``|u| <= 1`` with ``u = R^T (q - c) / r``, optionally with smooth
    bumps: ``|u| <= 1 + sum_i a_i (sin(k_i . u + phi_i) - m_i)`` for ``bumps = [(k (3,), a, phi),
    ...]``, a lobulated organ rather than a scaled copy of one shape. ``m_i`` is the wave's mean
    over the unit ball, ``sin(phi) 3 (sin|k| - |k| cos|k|) / |k|^3``, so bumps change the shape and
    leave the volume (to first order) to the organ's size."""
    c, r, rot = np.asarray(center, float), np.asarray(radii, float), _rotation(degrees)
    grow = 1.0 + sum(abs(a) for _, a, _ in bumps)
    half = np.sqrt(((rot * r) ** 2).sum(axis=1)) * grow  # half extent of the rotated box per axis

    def inside(x, y, z):
        u = (np.stack([x - c[0], y - c[1], z - c[2]], axis=-1) @ rot) / r  # (..., 3) in local, normalised axes
        bound = 1.0
        for k, a, phi in bumps:
            n = float(np.linalg.norm(k))
            mean = np.sin(phi) * 3 * (np.sin(n) - n * np.cos(n)) / n**3
            bound = bound + a * (np.sin(u @ np.asarray(k, float) + phi) - mean)
        return (u ** 2).sum(axis=-1) <= bound ** 2

    return [(c - half, c + half, inside)]


def tube(points, radii) -> list[Piece]:
    """A swept tube through ``points`` (N, 3) whose radius goes linearly through ``radii`` (N,)."""
    p, rad = np.asarray(points, float), np.broadcast_to(np.asarray(radii, float), (len(points),))
    pieces = []
    for a, b, ra, rb in zip(p[:-1], p[1:], rad[:-1], rad[1:]):
        def inside(x, y, z, a=a, b=b, ra=ra, rb=rb):
            ab = b - a
            t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / (ab @ ab)
            t = np.clip(t, 0.0, 1.0)  # position of the closest point along the segment
            d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
            return d2 <= (ra + t * (rb - ra)) ** 2
        pieces.append((np.minimum(a, b) - max(ra, rb), np.maximum(a, b) + max(ra, rb), inside))
    return pieces


def region(lower, upper, inside: Mask) -> list[Piece]:
    """Any region given by a test function, evaluated inside a box."""
    return [(np.asarray(lower, float), np.asarray(upper, float), inside)]


@dataclass
class Part:
    atom: str
    pieces: list[Piece]
    clip: Mask | None = None        # keep only where this is true (e.g. below the diaphragm)
    host: str | None = None         # paint only over voxels already holding this atom


# ----------------------------------------------------------------------------- the subject
@dataclass
class Subject:
    """One phantom person: who they are (traits), their shapes in mm, the smooth deformation of space."""

    seed: int
    index: int
    parts: list[Part]
    z_scale: float
    traits: Traits
    half_width: tuple[float, float] = (200.0, 150.0)   # x, y half extent of the body (mm): the scan's x-y field
    deformation: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)
    deformation_mm: float = 0.0

    def deform(self, x, y, z):
        """Where each grid point samples the shapes: ``q = p + D(p)``, D smooth, |D| <= amplitude."""
        out = [x.copy(), y.copy(), z.copy()]
        for k, amp, phase in self.deformation:  # k (3,) wave vector, amp (3,) mm, phase
            s = np.sin(k[0] * x + k[1] * y + k[2] * z + phase)
            for c in range(3):
                out[c] += amp[c] * s
        return out


class _Body:
    """One subject's body frame while it is drawn: the random stream, the placement helpers and
    the surfaces organs are placed against (skin, muscle wall, diaphragm), all in this subject's mm.

    Every draw comes from ``rng`` in the order :func:`make_subject` calls the parts' functions,
    so that order is part of the anatomy."""

    def __init__(self, traits: Traits, rng: np.random.Generator):
        self.traits, self.rng = traits, rng
        self.sx = self.sy = traits.frame
        self.sz = traits.height
        self.scale = np.array([self.sx, self.sy, self.sz])
        self.fat, self.visceral = traits.subcutaneous_fat_mm, traits.visceral_fat_mm
        self.wall = rng.uniform(9.0, 13.0)    # abdominal / chest wall muscle (mm)
        self.dome_r, self.dome_l = rng.uniform(150, 180), rng.uniform(138, 165)  # diaphragm domes (z, mm)
        self.volume = traits.organ_volume
        # body outline: elliptic cross-section whose semi-axes (ak, bk) vary along z (hips, waist, chest);
        # subcutaneous fat outside the muscle wall, visceral fat as room between the wall and the organs
        self.zk = np.array([-300, -220, -150, -80, 0, 100, 180, 260, 340, 380]) * self.sz
        self.ak = np.array([150, 172, 168, 152, 148, 152, 162, 158, 148, 130]) * self.sx + self.fat + self.visceral - 18
        self.bk = np.array([112, 130, 124, 108, 106, 112, 118, 112, 102, 88]) * self.sy + self.fat + self.visceral - 18

    # placement: reference mm -> this subject's mm, sizes, poses, lobulation
    def at(self, p):        # points scale with the body
        return np.asarray(p, float) * self.scale

    def jitter(self, p, mm=5.0):
        return self.at(p) + self.rng.normal(0.0, mm, 3).clip(-2 * mm, 2 * mm)

    def size(self, r, v=None, spread=0.03):
        """Radii for a volume multiplier ``v`` (default: the body frame's, +- ``spread``): the cube
        root of ``v``, then an anisotropic jitter that keeps the volume (shape, not size)."""
        aniso = np.exp(self.rng.normal(0.0, 0.08, 3))
        aniso /= np.prod(aniso) ** (1 / 3)
        v = self.traits.frame ** 3 * self.rng.uniform(1 - spread, 1 + spread) if v is None else v
        return np.asarray(r, float) * v ** (1 / 3) * aniso

    def bumps(self, n=3, amplitude=0.12):
        """Smooth lobulation: ``n`` random plane waves over the organ's normalised coordinates."""
        out = []
        for _ in range(n):
            k = self.rng.normal(size=3)
            out.append((k / np.linalg.norm(k) * self.rng.uniform(1.5, 3.0), self.rng.uniform(-amplitude, amplitude),
                        self.rng.uniform(0, 2 * np.pi)))
        return out

    def angles(self, deg=8.0):
        return tuple(self.rng.uniform(-deg, deg, 3))

    # surfaces
    def depth(self, x, y, z):  # approximate distance (mm) inside the skin; negative outside
        a, b = np.interp(z, self.zk, self.ak), np.interp(z, self.zk, self.bk)
        return (1.0 - np.sqrt((x / a) ** 2 + (y / b) ** 2)) * np.minimum(a, b)

    def inner(self, x, y, z):  # inside the muscle wall: the body cavities
        return self.depth(x, y, z) > self.fat + self.wall

    def under_fat(self, x, y, z):  # inside the subcutaneous fat: muscles
        return self.depth(x, y, z) > self.fat

    def dome(self, x, y):  # diaphragm height (mm) above each (x, y)
        sx, sz = self.sx, self.sz
        right = self.dome_r * sz - ((x - 65 * sx) ** 2 + (y + 5) ** 2) / 210.0
        left = self.dome_l * sz - ((x + 65 * sx) ** 2 + (y + 5) ** 2) / 210.0
        return np.maximum(np.maximum(right, left), 135 * sz - (y - 30) ** 2 / 400.0)

    def below_diaphragm(self, x, y, z):
        return (z < self.dome(x, y) - 4.0) & self.inner(x, y, z)

    def above_diaphragm(self, x, y, z):
        return (z > self.dome(x, y) + 4.0) & self.inner(x, y, z)


def _body_wall(b: _Body) -> list[Part]:
    """Subcutaneous fat, the muscle wall and skin, back muscles, psoas, the diaphragm."""
    fat, wall, sz = b.fat, b.wall, b.sz
    box = ([-b.ak.max(), -b.bk.max(), b.zk[0]], [b.ak.max(), b.bk.max(), b.zk[-1]])
    parts = [
        Part("body_fat", region(*box, lambda x, y, z: b.depth(x, y, z) > 0)),
        Part("body_wall", region(*box, lambda x, y, z: (b.depth(x, y, z) > fat) & (b.depth(x, y, z) <= fat + wall))),
        Part("skin", region(*box, lambda x, y, z: (b.depth(x, y, z) > 0) & (b.depth(x, y, z) < 2.0))),
    ]
    for side in (1, -1):  # 1 = right (+x), -1 = left
        parts.append(Part("back_muscle", tube([b.at((35 * side, -82, -120)), b.at((35 * side, -82, 330))], 22 * b.traits.frame),
                          clip=b.under_fat))
        parts.append(Part("psoas", tube([b.at((30 * side, -42, 95)), b.at((45 * side, -32, -60)),
                                         b.at((62 * side, -8, -185))], np.array([7, 22, 17]) * b.volume["gluteus"] ** 0.5)))
    parts.append(Part("diaphragm", region([-250, -200, 60 * sz], [250, 200, 200 * sz],
                                          lambda x, y, z: (np.abs(z - b.dome(x, y)) <= 4.0) & b.inner(x, y, z))))
    return parts


def _lungs(b: _Body) -> list[Part]:
    """The lungs' lobes: ellipsoids above the diaphragm, split by fissure surfaces."""
    oblique_z, horizontal_z = b.rng.uniform(200, 220) * b.sz, b.rng.uniform(215, 235) * b.sz
    above = b.above_diaphragm

    def below_oblique(x, y, z):  # the oblique fissure runs from high posterior to low anterior
        return z < oblique_z - 1.0 * (y + 5.0)

    parts = []
    for side, lobes in ((1, ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")),
                        (-1, ("lung_upper_lobe_left", None, "lung_lower_lobe_left"))):
        lung = ellipsoid(b.jitter((78 * side, -5, 240)), b.size((66, 88, 125), b.volume["lung"]), b.angles(4), b.bumps(2, 0.06))
        upper, middle, lower = lobes
        parts.append(Part(lower, lung, clip=lambda x, y, z: above(x, y, z) & below_oblique(x, y, z)))
        if middle:
            parts.append(Part(upper, lung, clip=lambda x, y, z: above(x, y, z) & ~below_oblique(x, y, z) & (z > horizontal_z)))
            parts.append(Part(middle, lung, clip=lambda x, y, z: above(x, y, z) & ~below_oblique(x, y, z) & (z <= horizontal_z)))
        else:
            parts.append(Part(upper, lung, clip=lambda x, y, z: above(x, y, z) & ~below_oblique(x, y, z)))
    return parts


def _bowel_and_pelvis(b: _Body) -> list[Part]:
    """Bowel (unlabelled distractors), the pelvis organs, the gluteal muscles."""
    colon = [(85, 5, -125), (90, 10, 40), (70, 40, 55), (0, 68, 25), (-80, 25, 75), (-90, 0, -80),
             (-50, 30, -150), (0, -35, -185), (0, -48, -250)]
    colon_r = np.array([22, 21, 18, 18, 18, 17, 15, 16, 14]) * np.exp(b.rng.normal(0.0, 0.15, 9))
    parts = [Part("colon", tube([b.jitter(p, 6) for p in colon], colon_r), clip=b.inner)]
    for _ in range(14):
        centre = (b.rng.uniform(-55, 55), b.rng.uniform(0, 65), b.rng.uniform(-125, 15))
        parts.append(Part("small_bowel", ellipsoid(b.jitter(centre, 2), b.size((14, 14, 14), spread=0.2)), clip=b.inner))
    parts.append(Part("urinary_bladder", ellipsoid(b.jitter((0, 45, -190)), b.size((40, 34, 30), b.volume["bladder"]), b.angles(5)),
                      clip=b.inner))
    parts.append(Part("prostate_or_uterus", ellipsoid(b.jitter((0, 20, -228), 3),
                                                      b.size((19, 15, 17) if b.traits.sex == "M" else (30, 20, 25))), clip=b.inner))
    gluteus = b.volume["gluteus"]
    for side, name in ((1, "right"), (-1, "left")):
        parts.append(Part(f"gluteus_maximus_{name}", ellipsoid(b.jitter((78 * side, -78, -185)), b.size((58, 34, 88), gluteus),
                                                               (0, 0, -15 * side)), clip=b.under_fat))
        parts.append(Part(f"gluteus_medius_{name}", ellipsoid(b.jitter((118 * side, -40, -112)), b.size((28, 48, 60), gluteus),
                                                              (0, 0, 30 * side)), clip=b.under_fat))
        parts.append(Part(f"gluteus_minimus_{name}", ellipsoid(b.jitter((100 * side, -22, -140)), b.size((15, 30, 35), gluteus),
                                                               (0, 0, 30 * side)), clip=b.under_fat))
    return parts


def _upper_abdomen(b: _Body) -> list[Part]:
    """Liver (right lobe, left lobe, sometimes Riedel's lobe), stomach, pancreas, duodenum, spleen,
    kidneys, adrenals, gallbladder; an organ in ``traits.absent`` was resected and is not drawn."""
    traits, volume, jitter, size, bumps = b.traits, b.volume, b.jitter, b.size, b.bumps
    liver_cut = b.rng.uniform(50, 70) * b.sz
    liver_v = volume["liver"]
    liver = ellipsoid(jitter((55, 0, 95), 6), size((95, 85, 72), liver_v), b.angles(6), bumps())
    liver += ellipsoid(jitter((-15, 30, 108), 6), size((55, 45, 38), liver_v * traits.left_lobe), b.angles(8), bumps())
    if traits.riedel_lobe:
        liver += ellipsoid(jitter((85, 5, 20), 6), size((26, 32, 48), liver_v), b.angles(10))
    parts = [Part("liver", liver, clip=lambda x, y, z: b.below_diaphragm(x, y, z) & (z > liver_cut - x))]
    stomach = [(-55, -5, 135), (-50, 20, 105), (-30, 45, 80), (0, 55, 70), (15, 45, 72)]
    stomach_r = np.array([38, 34, 27, 18, 10]) * volume["stomach"] ** 0.5 * np.exp(b.rng.normal(0.0, 0.1, 5))
    parts.append(Part("stomach", tube([jitter(p, 5) for p in stomach], stomach_r), clip=b.below_diaphragm))
    pancreas = [(35, 10, 40), (20, 15, 55), (0, 15, 65), (-35, 5, 75), (-70, -10, 88)]
    pancreas_r = np.array([17, 13, 12, 11, 9]) * volume["pancreas"] ** 0.5 * np.exp(b.rng.normal(0.0, 0.1, 5))
    parts.append(Part("pancreas", tube([jitter(p, 4) for p in pancreas], pancreas_r), clip=b.inner))
    duodenum = [(15, 45, 72), (45, 25, 70), (55, 5, 50), (50, 0, 10), (25, -5, -5), (-10, 0, 0), (-30, 10, 25)]
    parts.append(Part("duodenum", tube([jitter(p, 4) for p in duodenum], 11 * np.exp(b.rng.normal(0.0, 0.12, 7))), clip=b.inner))
    if "spleen" not in traits.absent:
        parts.append(Part("spleen", ellipsoid(jitter((-90, -30, 102), 8), size((26, 58, 52), volume["spleen"]), (0, 0, -30), bumps()),
                          clip=b.below_diaphragm))
    for side, name, z0 in ((1, "right", 22), (-1, "left", 38)):
        if f"kidney_{name}" not in traits.absent:  # position and rotation vary: ptosis, malrotation
            centre, radii = jitter((66 * side, -39, z0), 9), size((27, 24, 54), volume[f"kidney_{name}"])
            pose = (b.rng.normal(0, 6), 15 * side + b.rng.normal(0, 6), 20 * side + b.rng.normal(0, 8))
            parts.append(Part(f"kidney_{name}", ellipsoid(centre, radii, pose, bumps(2, 0.06)), clip=b.inner))
        parts.append(Part(f"adrenal_gland_{name}", ellipsoid(jitter((42 * side, -37, z0 + 65), 3), size((5, 14, 17), volume["adrenal"]),
                                                             (0, 0, 30 * side)), clip=b.inner))
    if "gallbladder" not in traits.absent:
        parts.append(Part("gallbladder", ellipsoid(jitter((48, 45, 52), 5), size((15, 15, 33), volume["gallbladder"]), (25, 0, 10),
                                                   bumps(2, 0.08)), clip=b.inner))
    return parts


def _heart(b: _Body) -> list[Part]:
    """The heart's chambers and myocardium around a centre, resting on the diaphragm."""
    heart = b.jitter((-15, 35, 185), 6)
    heart_rot = b.angles(10)
    heart_scale = b.volume["heart"] ** (1 / 3)
    parts = []
    for atom, offset, radii in (("heart_atrium_right", (40, -10, 10), (28, 25, 28)),
                                ("heart_ventricle_right", (15, 25, -10), (35, 22, 40)),
                                ("heart_atrium_left", (-5, -30, 25), (30, 18, 20)),
                                ("heart_myocardium", (-20, 5, -10), (38, 35, 45)),
                                ("heart_ventricle_left", (-20, 5, -10), (27, 24, 34))):
        centre = heart + _rotation(heart_rot) @ (np.asarray(offset) * heart_scale)
        parts.append(Part(atom, ellipsoid(centre, np.asarray(radii) * heart_scale * np.exp(b.rng.normal(0.0, 0.05, 3)), heart_rot),
                          clip=lambda x, y, z: (z > b.dome(x, y) - 2.0) & b.inner(x, y, z)))
    return parts


def _tubes(b: _Body) -> list[Part]:
    """The oesophagus and the vessels (the aorta widens with age, more in men)."""
    at, jitter, rng = b.at, b.jitter, b.rng
    oesophagus = [(3, -22, 345), (0, -22, 260), (-5, -20, 200), (-12, -14, 150), (-30, -4, 135), (-45, 0, 128)]
    parts = [Part("esophagus", tube([jitter(p, 3) for p in oesophagus], 8 * rng.uniform(0.85, 1.15)))]
    for side in (1, -1):
        parts.append(Part("iliac_artery", tube([at((-8, -20, -75)), at((45 * side, -5, -150)), at((70 * side, 10, -215))], [8, 6, 6])))
        parts.append(Part("iliac_vein", tube([at((25, -12, -75)), at((50 * side, -15, -150)), at((72 * side, 0, -215))], [9, 7, 7])))
    aorta = [(-5, 20, 215), (0, 15, 270), (-15, -8, 292), (-28, -20, 270), (-28, -20, 150), (-15, -18, 90), (-10, -18, 0), (-8, -20, -75)]
    parts.append(Part("aorta", tube([at(p) for p in aorta], np.array([14, 14, 13, 12, 11, 10.5, 10, 9.5]) * b.traits.aorta)))
    parts.append(Part("celiac_trunk", tube([at((-14, -10, 92)), at((-12, 8, 94)), at((-8, 15, 97))], 3.8)))
    cava = [(25, -14, -75), (22, -12, 50), (25, -5, 120), (25, 15, 175), (28, 20, 190)]
    parts.append(Part("inferior_vena_cava", tube([at(p) for p in cava], np.array([11, 11, 12, 12, 12]) * rng.uniform(0.85, 1.15))))
    portal = [(-75, -15, 95), (-35, -5, 78), (0, 0, 68), (25, 5, 80), (45, 5, 100)]
    parts.append(Part("portal_vein_and_splenic_vein", tube([jitter(p, 3) for p in portal],
                                                           np.array([5, 5.5, 6.5, 7, 6.5]) * rng.uniform(0.85, 1.15))))
    return parts


def _lesions(b: _Body) -> list[Part]:
    """Liver lesions 3-40 mm in radius, a kidney tumour, simple kidney cysts (more common with age).
    Drawn for everyone, so the anatomy does not depend on the domain; painted by need."""
    rng, jitter, bumps = b.rng, b.jitter, b.bumps
    parts = []
    for _ in range(1 + rng.poisson(1.0)):
        centre = jitter((45 + rng.uniform(-50, 40), 5 + rng.uniform(-40, 40), 95 + rng.uniform(-25, 30)), 1)
        parts.append(Part("liver_tumor", ellipsoid(centre, [float(np.clip(np.exp(rng.normal(np.log(10.0), 0.5)), 3, 40))] * 3,
                                                   bumps=bumps(2, 0.1)), host="liver"))
    side = rng.choice([1, -1])
    parts.append(Part("kidney_tumor", ellipsoid(jitter((62 * side, -40, 30 + rng.uniform(-35, 35)), 2),
                                                [float(np.clip(np.exp(rng.normal(np.log(13.0), 0.35)), 6, 35))] * 3, bumps=bumps(2, 0.1)),
                      host=f"kidney_{'right' if side > 0 else 'left'}"))
    for _ in range(1 + rng.poisson(b.traits.age / 60.0)):
        cyst_side = rng.choice([1, -1])
        parts.append(Part("kidney_cyst", ellipsoid(jitter((75 * cyst_side, -45, 30 + rng.uniform(-35, 35)), 2),
                                                   [float(np.clip(np.exp(rng.normal(np.log(7.0), 0.4)), 3, 25))] * 3),
                          host=f"kidney_{'right' if cyst_side > 0 else 'left'}"))
    return parts


def _skeleton(b: _Body) -> list[Part]:
    """The vertebral column with discs and canal, ribs, sternum, pelvis, femurs."""
    at, size, sz, zk = b.at, b.size, b.sz, b.zk
    parts = [Part("bone", tube([at((0, -50, -60)), at((0, -48, 120)), at((0, -44, 345))], 20))]
    period, disc_phase = 32.0 * sz, b.rng.uniform(0, 32)
    for zc in np.arange(-60, 345, 32) * sz:
        parts.append(Part("bone", ellipsoid(at((0, -82, zc / sz + 10)), size((17, 14, 11), spread=0.03))))
        parts.append(Part("bone", ellipsoid(at((0, -97, zc / sz + 5)), size((4, 9, 10), spread=0.03))))
        if zc > -20 * sz:
            parts.append(Part("bone", ellipsoid(at((0, -58, zc / sz + 12)), size((42, 6, 7), spread=0.03))))
    parts.append(Part("disc", region([-25, -75, -70 * sz], [25, -20, 350 * sz],
                                     lambda x, y, z: (np.mod(z - disc_phase, period) < 7.0) & (x ** 2 + (y + 48 * b.sy) ** 2 < 19.0 ** 2))))
    parts.append(Part("spinal_canal", tube([at((0, -78, -90)), at((0, -78, 345))], 8)))
    for i in range(12):  # ribs, from the spine around the body wall, sloping down anteriorly
        z0, reach = (320 - 20 * i) * sz, [150, 165, 170, 170, 170, 165, 160, 150, 135, 120, 95, 70][i]
        theta = np.deg2rad(np.linspace(-100, -100 + reach, 9))
        for side in (1, -1):
            zz = z0 - 55 * sz * (theta - theta[0]) / np.deg2rad(170)
            a, c = np.interp(zz, zk, b.ak) - b.fat - 6, np.interp(zz, zk, b.bk) - b.fat - 6
            parts.append(Part("bone", tube(np.stack([side * a * np.cos(theta), c * np.sin(theta), zz], 1), 5.0)))
    zs = np.array([300.0, 180.0]) * sz
    front = np.interp(zs, zk, b.bk) - b.fat - 8
    parts.append(Part("bone", tube(np.stack([[0, 0], front, zs], 1), 9)))                                   # sternum
    parts.append(Part("bone", ellipsoid(at((0, -62, -130)), size((45, 18, 55)), (30, 0, 0))))  # sacrum
    for side in (1, -1):
        parts.append(Part("bone", ellipsoid(at((88 * side, -42, -92)), size((12, 55, 55)), (0, 0, -40 * side))))  # iliac wing
        parts.append(Part("bone", ellipsoid(at((95 * side, 5, -215)), size((23, 23, 23), spread=0.03))))           # femoral head
        parts.append(Part("bone", tube([at((95 * side, 5, -215)), at((122 * side, 5, -245)), at((125 * side, 10, -330))], [12, 14, 13])))
        parts.append(Part("bone", tube([at((88 * side, 12, -220)), at((8 * side, 55, -222))], 9)))           # pubis
        parts.append(Part("bone", tube([at((88 * side, -10, -225)), at((60 * side, -40, -262))], 11)))       # ischium
    return parts


def _deformation(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Smooth elastic deformation: three random plane waves, 150-300 mm long (see :meth:`Subject.deform`)."""
    waves = []
    for _ in range(3):
        direction = rng.normal(size=3)
        k = direction / np.linalg.norm(direction) * 2 * np.pi / rng.uniform(150, 300)
        waves.append((k, rng.uniform(-4.0, 4.0, 3), rng.uniform(0, 2 * np.pi)))
    return waves


def make_subject(seed: int, index: int, population: str = "adult") -> Subject:
    """Draw subject ``index`` of population ``seed``: traits, then every organ's size, position and pose."""
    if index < 0:
        raise ValueError(f"subject index must be >= 0, got {index}")
    traits = draw_traits(seed, index, population)
    body = _Body(traits, np.random.default_rng([seed, index, 0xA7]))
    # painting order (later parts paint over earlier ones), each group drawn from the same random stream:
    # reordering them changes every subject
    parts = [part for draw in (_body_wall, _lungs, _bowel_and_pelvis, _upper_abdomen, _heart, _tubes, _lesions, _skeleton)
             for part in draw(body)]
    half_width = (float(body.ak.max()) + 12.0, float(body.bk.max()) + 12.0)   # the body and a margin: the reconstruction field
    deformation = _deformation(body.rng)
    return Subject(seed, index, parts, z_scale=body.sz, traits=traits, half_width=half_width, deformation=deformation,
                   deformation_mm=float(sum(np.abs(a).max() for _, a, _ in deformation)))
