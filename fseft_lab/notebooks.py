"""Run the course notebooks headless with papermill and keep the committed copies clean.

``fseft-lab notebooks run [--profile P] [NAMES...]`` executes notebooks in place (or into
``--out``) with ``FSEFT_PROFILE`` set for the kernel, so the committed notebooks keep their
``auto`` default instead of a hard-coded profile, then strips widget state and papermill's
per-cell metadata so that committed notebooks stay small and diffs stay readable.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from fseft_lab.profiles import MALLOC_ENV

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def find_notebooks(names: list[str] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Course notebooks in reading order; ``names`` may be prefixes such as ``00`` or full names."""
    every = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return every
    chosen = []
    for name in names:
        hits = [p for p in every if p.name == name or p.stem == name or p.name.startswith(name)]
        if not hits:
            raise ValueError(f"no notebook matches {name!r}; notebooks: {', '.join(p.name for p in every)}")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def clean(path: Path) -> None:
    """Strip widget state and papermill metadata; keep outputs and execution counts."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    tmp = path.with_suffix(".tmp.ipynb")
    nbformat.write(nb, tmp)
    tmp.replace(path)


def run(names: list[str] | None = None, profile: str | None = None, out: Path | None = None,
        kernel: str = "python3", folder: Path = NOTEBOOK_DIR) -> list[tuple[str, float]]:
    """Execute notebooks headless; returns (name, seconds) per notebook."""
    import papermill

    env = {**{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()},  # faster CPU kernels (see profiles)
           "FSEFT_HEADLESS": "1", **({"FSEFT_PROFILE": profile} if profile else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    timings = []
    try:
        for path in find_notebooks(names, folder):
            target = (Path(out) / path.name) if out else path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp()) / path.name  # the target is replaced only after a clean run
            start = time.perf_counter()
            papermill.execute_notebook(str(path), str(tmp), kernel_name=kernel, cwd=str(path.parent), progress_bar=False)
            clean(tmp)
            shutil.move(tmp, target)
            timings.append((path.name, time.perf_counter() - start))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return timings
