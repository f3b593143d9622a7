"""Read and write the folder layouts of the real datasets, so phantoms and real CT load alike.

* **TotalSegmentator**: ``<root>/<case>/ct.nii.gz`` and one binary mask per structure,
  ``<root>/<case>/segmentations/<structure>.nii.gz``; ``meta.csv`` (``;``-separated, with a
  ``split`` column) says which cases are test cases.
* **MSD / FLARE** (also nnU-Net's raw format): ``imagesTr/`` and ``labelsTr/`` with one integer
  label map per case and ``dataset.json`` naming the label values.

:func:`open_dataset` reads either into :class:`CaseFolder`; :meth:`CaseFolder.load` returns a
case as MONAI ``MetaTensor`` s (channel first, affine attached) after checking that image and
labels agree. :func:`export_phantom` writes phantom datasets atomically. Taught in notebook 00.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from fseft_lab.anatomy import UNSIDED, check_structure, dataset_template
from fseft_lab.data.fewshot import default_num_test
from fseft_lab.outputs import atomic_write, writable_folder
from fseft_lab.progress import progress_bar

LAYOUTS = ("totalsegmentator", "msd")
MANIFEST = "fseft_phantom.json"


# ----------------------------------------------------------------------------- NIfTI
def save_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` (X, Y, Z) with its voxel-to-RAS ``affine`` as NIfTI (sform and qform set)."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, float))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file as (array (X, Y, Z), affine (4, 4)); a clear error if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such NIfTI file: {path}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ValueError(f"cannot read NIfTI file {path}: {err}") from err
    return data, img.affine


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One case on disk: its image and where its labels are."""

    case_id: str
    image: Path
    labels: dict[str, Path] | Path     # TotalSegmentator: structure -> mask file; MSD: label map
    split: str = "train"


@dataclass
class CaseFolder:
    """A dataset folder: its layout, its cases and the structures its labels name.

    Args:
        root: the folder.
        layout: ``totalsegmentator`` or ``msd``.
        cases: the cases, sorted by id.
        template: label value -> structure (MSD); for TotalSegmentator the structures with masks.
    """

    root: Path
    layout: str
    cases: list[Case]
    template: dict[int, str] = field(default_factory=dict)

    @property
    def structures(self) -> tuple[str, ...]:
        return tuple(self.template.values())

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    @property
    def test_ids(self) -> list[str]:
        return [c.case_id for c in self.cases if c.split == "test"]

    def lacking(self, structures: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
        """Cases without a mask file for some of ``structures`` (TotalSegmentator layout; an MSD
        label map names its structures once for every case): case id -> the missing ones."""
        if self.layout != "totalsegmentator":
            return {}
        missing = {c.case_id: [s for s in structures if s not in c.labels] for c in self.cases}
        return {case: names for case, names in missing.items() if names}

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(f"case {case_id!r} is not in {self.root} ({len(self.cases)} cases)")

    def load(self, case: str | Case, structures: list[str] | tuple[str, ...] | None = None) -> dict:
        """Load a case as ``{"image", "label", "structures", "case"}``.

        ``image`` is a (1, X, Y, Z) float32 MetaTensor in HU; ``label`` a (1, X, Y, Z) uint8
        MetaTensor whose value ``i`` is ``structures[i - 1]`` (0 = none of them). Both carry the
        file's affine; orientation and spacing are left to :mod:`fseft_lab.data.transforms`.
        Unsided structures (``kidney``) are split into right/left at the image centre.
        """
        case = self.case(case) if isinstance(case, str) else case
        # by default every labelled structure, an unsided one (``kidney``) as its two sides
        structures = tuple(structures or [side for s in self.structures for side in UNSIDED.get(s, (s,))])
        for s in structures:
            check_structure(s, None)   # any name the data gives is a structure (novel when the template lacks it)
        image, affine = read_nifti(case.image)
        image = _squeeze(image, case.image)
        label = np.zeros(image.shape, np.uint8)
        if isinstance(case.labels, dict):
            for value, s in enumerate(structures, start=1):
                if s not in case.labels:
                    raise FileNotFoundError(f"case {case.case_id!r} has no mask for {s!r} in {case.image.parent / 'segmentations'}")
                mask = self._checked(case.labels[s], image.shape, affine, {0, 1})
                label[mask > 0] = value
        else:
            raw = self._checked(case.labels, image.shape, affine, {0, *self.template}, extra="ignore")
            named = set(self.template.values()) | {side for s in self.template.values() for side in UNSIDED.get(s, ())}
            absent = [s for s in structures if s not in named]
            if absent:
                raise ValueError(f"{self.root} does not label {absent}; its labels are {sorted(self.template.values())}: "
                                 "if one of them is the structure under another name (e.g. cancer for liver_tumor), "
                                 "map it through a label map (--template map.json, e.g. {\"liver\": 1, \"liver_tumor\": 2})")
            for value, s in self.template.items():
                if s in structures:
                    label[raw == value] = structures.index(s) + 1
                elif s in UNSIDED and any(side in structures for side in UNSIDED[s]):
                    _split_sides(label, raw == value, affine, UNSIDED[s], structures)
        def tensor(array):  # (1, X, Y, Z) with the file's affine
            return MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(affine),
                              meta={"filename_or_obj": str(case.image)})

        return {"image": tensor(image.astype(np.float32)), "label": tensor(label),
                "structures": structures, "case": case.case_id}

    @staticmethod
    def _checked(path: Path, shape, affine, allowed: set[int], extra: str = "raise") -> np.ndarray:
        """The label array of ``path``, checked against its image; values outside ``allowed``
        raise, or with ``extra="ignore"`` (label maps) count as background, with a warning."""
        data, label_affine = read_nifti(path)
        data = _squeeze(data, path)
        if data.shape != tuple(shape):
            raise ValueError(f"label {path} has shape {data.shape} but its image has {tuple(shape)}")
        if not np.allclose(label_affine, affine, atol=1e-3):
            raise ValueError(f"label {path} has affine\n{np.round(label_affine, 3)}\nbut its image has\n{np.round(affine, 3)}")
        if not np.array_equal(data, np.round(data)):
            raise ValueError(f"label {path} holds non-integer values")
        values = set(np.unique(data).astype(int).tolist())
        if not values <= allowed:
            message = f"label {path} holds values {sorted(values - allowed)} outside its template {sorted(allowed)}"
            if extra != "ignore":
                raise ValueError(message)
            warnings.warn(message + "; they are read as background", stacklevel=3)
            data = np.where(np.isin(data, sorted(allowed)), data, 0)
        return data.astype(np.int32)


def _squeeze(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1) from some exporters
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path} is {data.ndim}-D with shape {data.shape}; a 3-D volume is needed")
    return data


def _split_sides(label, mask, affine, sides: tuple[str, str], structures) -> None:
    """Paired organ labelled without a side: right of the image centre is the right organ (RAS)."""
    idx = np.argwhere(mask)
    if not len(idx):
        return
    x_world = idx @ affine[0, :3] + affine[0, 3]
    centre = (np.array(mask.shape) - 1) / 2 @ affine[0, :3] + affine[0, 3]
    for side_name, chosen in zip(sides, (x_world > centre, x_world <= centre)):
        if side_name in structures:
            label[tuple(idx[chosen].T)] = structures.index(side_name) + 1


def open_dataset(root: str | Path, template: str | dict[int, str] | None = None) -> CaseFolder:
    """Open a TotalSegmentator- or MSD-layout folder (the layout is detected).

    Args:
        root: dataset folder.
        template: for MSD folders, a dataset template name (e.g. ``flare22``), a value->structure
            map, or a JSON / YAML label-map file (:func:`read_label_map`) to use instead of
            ``dataset.json``'s label names.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return _open_msd(root, template)
    case_dirs = sorted(p for p in root.iterdir() if _ct(p) or (p / "segmentations").is_dir())
    if not case_dirs:
        raise ValueError(f"{root} is neither a TotalSegmentator folder (<case>/ct.nii.gz) nor an MSD folder (dataset.json, imagesTr/)")
    splits = {}
    if (root / "meta.csv").is_file():
        with open(root / "meta.csv", newline="") as f:
            splits = {row["image_id"]: row.get("split", "train") for row in csv.DictReader(f, delimiter=";")}
    cases, names = [], None
    for d in case_dirs:
        if not _ct(d):
            raise FileNotFoundError(f"case folder {d} has no ct.nii.gz (or ct.nii)")
        masks = {p.name.split(".nii")[0]: p for p in sorted((d / "segmentations").glob("*.nii*"))
                 if p.name.endswith((".nii", ".nii.gz"))}
        names = names or list(masks)
        cases.append(Case(d.name, _ct(d), masks, splits.get(d.name, "train")))
    return CaseFolder(root, "totalsegmentator", cases, {i + 1: s for i, s in enumerate(names or [])})


def _ct(case_dir: Path) -> Path | None:
    """A TotalSegmentator case's image, compressed or not."""
    return next((p for p in (case_dir / "ct.nii.gz", case_dir / "ct.nii") if p.is_file()), None)


def read_label_map(path: str | Path) -> dict[int, str]:
    """A user's label map for an MSD folder, from JSON or YAML: ``{"liver": 1, "spleen": 2}`` (or
    ``{1: "liver"}``, as MSD's dataset.json writes it). Returns label value -> structure."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ValueError(f"label map {path} cannot be read: {e}") from e
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"label map {path} must map structure names to label values, e.g. {{\"liver\": 1}}; got {raw!r}")
    pairs = [(k, v) for k, v in raw.items()] if all(isinstance(v, str) for v in raw.values()) else [(v, k) for k, v in raw.items()]
    template = {}
    for value, name in pairs:
        if name == "background":
            continue
        if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
            raise ValueError(f"label map {path}: {name!r} has value {value!r}; label values are integers >= 1 (0 is background)")
        if int(value) in template:
            raise ValueError(f"label map {path}: value {value} names both {template[int(value)]!r} and {name!r}")
        template[int(value)] = check_structure(str(name), None)
    return template


def _open_msd(root: Path, template) -> CaseFolder:
    info = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").is_file() else {}
    if isinstance(template, (str, Path)) and Path(template).suffix in (".json", ".yaml", ".yml"):
        template = read_label_map(template)
    elif isinstance(template, str):
        template = dataset_template(template)
    if template is None:
        labels = info.get("labels", {})
        # MSD writes {"1": "liver"}, nnU-Net v2 {"liver": 1}
        pairs = [(int(k), v) for k, v in labels.items()] if all(str(k).isdigit() for k in labels) \
            else [(int(v), k) for k, v in labels.items()]
        template = {value: name for value, name in pairs if value != 0}
    test = set(info.get("fseft_test", []))
    entries = info.get("training") or [
        {"image": str(p.relative_to(root)),
         "label": str(p.relative_to(root)).replace("imagesTr", "labelsTr").replace("_0000.nii.gz", ".nii.gz")}
        for p in sorted((root / "imagesTr").glob("*.nii.gz"))]
    if not entries:
        raise ValueError(f"MSD folder {root} lists no training cases and imagesTr/ is empty")
    cases = []
    for e in entries:
        image, label = root / e["image"], root / e["label"]
        case_id = label.name[: -len(".nii.gz")]
        for p in (image, label):
            if not p.is_file():
                raise FileNotFoundError(f"{root / 'dataset.json'} lists {p}, which does not exist")
        cases.append(Case(case_id, image, label, "test" if case_id in test else "train"))
    return CaseFolder(root, "msd", sorted(cases, key=lambda c: c.case_id), dict(sorted(template.items())))


# ----------------------------------------------------------------------------- export
def export_phantom(out: str | Path, layout: str = "totalsegmentator", cases: int = 10, seed: int = 0,
                   domain: str | None = None, spacing: float | None = None, template: str = "flare22",
                   num_test: int | None = None, overwrite: bool = False, progress: bool = True,
                   workers: int | None = None) -> CaseFolder:
    """Write a phantom dataset in a real dataset's layout, atomically.

    Everything is written to a temporary sibling folder that is renamed to ``out`` at the end,
    so an interrupted export leaves no half dataset. If ``out`` already holds this exact dataset
    (same manifest) it is reused; a different one is refused unless ``overwrite``.

    Args:
        out: destination folder.
        layout: ``totalsegmentator`` (one mask per structure) or ``msd`` (one label map).
        cases: number of phantom subjects.
        seed: population seed; subject ``i`` of seed ``s`` is the same person in every domain.
        domain: acquisition domain (default ``totalseg_like`` or ``flare_like`` by layout).
        spacing: isotropic voxel size in mm (default: the domain's native spacing).
        template: label template of an MSD export (a name in ``anatomy.DATASET_TEMPLATES``).
        num_test: the last ``num_test`` cases are marked as test cases (default: the paper's 5, at
            most half of ``cases``: :func:`fseft_lab.data.fewshot.default_num_test`).
        overwrite: replace a different dataset already in ``out``.
        workers: processes that generate cases side by side (default: one per CPU core, at most
            one per case); the files do not depend on it.
    """
    from fseft_lab.data.phantom import get_domain

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    num_test = default_num_test(cases) if num_test is None else num_test
    if not 0 <= num_test < cases:
        raise ValueError(f"num_test={num_test} must be in [0, cases={cases})")
    domain = domain or ("totalseg_like" if layout == "totalsegmentator" else "flare_like")
    get_domain(domain)
    if spacing is not None and not spacing > 0:
        raise ValueError(f"spacing must be > 0 mm, got {spacing}")
    labels = dataset_template(template) if layout == "msd" else None
    from fseft_lab.data.phantom import GENERATOR_VERSION

    manifest = {"generator": "fseft_lab.data.phantom", "version": GENERATOR_VERSION, "layout": layout, "cases": cases, "seed": seed,
                "domain": domain, "spacing_mm": spacing, "template": template if layout == "msd" else None,
                "num_test": num_test}
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        existing = out / MANIFEST
        if existing.is_file() and json.loads(existing.read_text()) == manifest:
            return open_dataset(out)
        if not overwrite:
            what = f"a different phantom dataset ({existing})" if existing.is_file() else "files that are not this dataset"
            raise FileExistsError(f"{out} already holds {what}; choose another folder or pass overwrite=True (--overwrite)")
    writable_folder(out.parent)   # before any case is generated
    with atomic_write(out, folder=True) as tmp:   # an existing dataset is replaced only once the new one is whole
        prefix = {"flare22": "FLARE22_Tr"}.get(template, domain)  # FLARE-like cases carry FLARE22's names
        ids = [f"s{i:04d}" if layout == "totalsegmentator" else f"{prefix}_{i + 1:04d}" for i in range(cases)]
        splits = ["test" if i >= cases - num_test else "train" for i in range(cases)]
        jobs = [(tmp, layout, case_id, seed, i, domain, spacing, labels) for i, case_id in enumerate(ids)]
        workers = min(workers or os.cpu_count() or 1, cases)
        with (ProcessPoolExecutor(workers) if workers > 1 else nullcontext()) as pool:
            done = pool.map(_write_case, jobs) if pool else map(_write_case, jobs)
            for _ in progress_bar(done, total=cases, desc=f"phantom {domain}", disable=not progress):
                pass
        if layout == "totalsegmentator":
            with open(tmp / "meta.csv", "w", newline="") as f:
                w = csv.writer(f, delimiter=";")
                w.writerow(["image_id", "split", "domain", "seed"])
                w.writerows([case_id, split, domain, seed] for case_id, split in zip(ids, splits))
        else:
            info = {"name": f"phantom {domain}", "description": "fseft_lab procedural CT phantom",
                    "labels": {"0": "background", **{str(k): v for k, v in labels.items()}},
                    "numTraining": cases, "file_ending": ".nii.gz",
                    "training": [{"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
                    "fseft_test": [c for c, s in zip(ids, splits) if s == "test"]}
            (tmp / "dataset.json").write_text(json.dumps(info, indent=1))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return open_dataset(out)


def _write_case(job: tuple) -> None:
    """Generate one phantom case and write its files into the export's temporary folder."""
    from fseft_lab.data.phantom import ATOMS, generate

    tmp, layout, case_id, seed, index, domain, spacing, labels = job
    vol = generate(seed, index, domain, spacing)
    if layout == "totalsegmentator":
        (tmp / case_id / "segmentations").mkdir(parents=True)
        save_nifti(tmp / case_id / "ct.nii.gz", vol.image, vol.affine)
        for s in (s for _, s, _ in ATOMS if s):
            save_nifti(tmp / case_id / "segmentations" / f"{s}.nii.gz", vol.mask(s).astype(np.uint8), vol.affine)
    else:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir(exist_ok=True)
        save_nifti(tmp / "imagesTr" / f"{case_id}_0000.nii.gz", vol.image, vol.affine)
        save_nifti(tmp / "labelsTr" / f"{case_id}.nii.gz", vol.label_map(labels), vol.affine)
