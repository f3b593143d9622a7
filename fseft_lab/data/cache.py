"""Pre-processed cases kept on disk: a large folder is read and resampled once, never held whole.

The idea is MONAI's ``PersistentDataset``: each case's deterministic pre-processing is computed
once and saved, and later reads (another run, another day) load the saved result. Two things
differ, because real folders change and disks fill up:

- the key of an entry names the case, its structures, the model's spacing and patch, and the
  **size and modification time of every source file**: a re-exported or edited scan is read
  again instead of served stale;
- an entry is written to a temporary file beside its final name, then renamed: a full disk or a
  killed process leaves no half-written entry, only a warning, and the case is still returned.

>>> cases = CachedCases(open_dataset("data/my_ct"), ["liver"], "cpu", "data/cache")  # doctest: +SKIP
>>> cases[0]["image"].shape  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from fseft_lab.data.layouts import Case, CaseFolder
from fseft_lab.data.transforms import preprocess
from fseft_lab.outputs import OutputError, atomic_write
from fseft_lab.profiles import Geometry

#: Bumped when pre-processing changes, so that older entries are not served.
CACHE_VERSION = 1


class CachedCases(torch.utils.data.Dataset):
    """The pre-processed cases of ``dataset`` for ``structures``, cached under ``cache_dir``.

    Args:
        dataset: an opened folder (:func:`fseft_lab.data.layouts.open_dataset`).
        structures: label value ``i`` of each case is ``structures[i - 1]``.
        geometry: the model's spacing and patch size (:func:`fseft_lab.models.foundation.resolve_geometry`).
        cache_dir: where entries live; created when needed.
        case_ids: a subset of the cases (default: all, in the folder's order).
    """

    def __init__(self, dataset: CaseFolder, structures: Sequence[str], geometry: Geometry,
                 cache_dir: str | Path = "data/cache", case_ids: Sequence[str] | None = None):
        self.dataset, self.structures, self.geometry = dataset, tuple(structures), geometry
        self.cache_dir = Path(cache_dir)
        self.case_ids = list(case_ids) if case_ids is not None else dataset.case_ids
        self._chain = preprocess(geometry.spacing_mm, geometry.patch_size)

    def __len__(self) -> int:
        return len(self.case_ids)

    def key(self, case: Case) -> str:
        """Names the entry of ``case``: changes whenever a source file or a setting does."""
        files = [case.image, *(case.labels.values() if isinstance(case.labels, dict) else [case.labels])]
        stamps = []
        for f in files:
            stat = Path(f).stat()
            stamps.append([str(f), stat.st_size, stat.st_mtime_ns])
        what = {"version": CACHE_VERSION, "root": str(self.dataset.root.resolve()), "case": case.case_id,
                "structures": self.structures, "spacing": self.geometry.spacing_mm, "patch": self.geometry.patch_size,
                "files": stamps}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, case_id: str) -> Path:
        return self.cache_dir / f"{case_id}-{self.key(self.dataset.case(case_id))}.pt"

    def __getitem__(self, index: int) -> dict:
        case_id = self.case_ids[index]
        path = self.path(case_id)
        if path.is_file():
            try:
                return torch.load(path, weights_only=False)  # our own entries: MetaTensors with their metadata
            except Exception as e:  # unreadable (e.g. a disk error): drop it and compute again
                warnings.warn(f"cache entry {path} cannot be read ({e}); recomputing it", stacklevel=2)
                path.unlink(missing_ok=True)
        item = self._chain(self.dataset.load(case_id, self.structures))
        self._save(item, path)
        return item

    @staticmethod
    def _save(item: dict, path: Path) -> None:
        try:
            with atomic_write(path) as tmp:
                torch.save(item, tmp)
        except OutputError as e:  # disk full, read-only folder...: go on without this entry
            reason = getattr(e.__cause__, "strerror", None) or e.__cause__ or e
            warnings.warn(f"cannot write cache entry {path} ({reason}); going on without caching it", stacklevel=3)
