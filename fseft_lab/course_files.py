"""The repository's committed course files: the notebooks, and the results and grid files they read.

In a clone (``pip install -e .``) they are the repository's own ``notebooks/``, ``results/`` and
``grids/``; an installed package (``pip install git+...``, as on Colab) carries a copy of them under
``fseft_lab/course_files/`` (copied at build time by ``setup.py``), so a notebook runs with
nothing but the package:

>>> course_path("results/benchmark_cpu.csv").is_file()   # doctest: +SKIP
True

A student works in a copy (``fseft-lab course DIR``, :func:`copy_course`): running the course there
never changes the committed notebooks, and a ``git pull`` for course updates never conflicts.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from fseft_lab.outputs import atomic_write, writable_folder

#: The repository folders copied into the installed package.
COURSE_FOLDERS = ("notebooks", "results", "grids")
_CLONE = Path(__file__).resolve().parent.parent    # the repository root, when running from a clone
_INSTALLED = Path(__file__).resolve().parent / "course_files"


def course_path(relative: str = "") -> Path:
    """The path of a committed course file or folder, e.g. ``"results/benchmark_cpu.csv"``:
    the clone's own file when running from a clone, else the installed package's copy."""
    if relative and Path(relative).parts[0] not in COURSE_FOLDERS:
        raise ValueError(f"{relative!r} is not under a course folder; course files live under {COURSE_FOLDERS}")
    root = _CLONE if (_CLONE / "pyproject.toml").is_file() and (_CLONE / "results").is_dir() else _INSTALLED
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (course files are looked up in {root})")
    return path


def copy_course(dest: str | Path, overwrite: bool = False) -> tuple[list[str], list[str]]:
    """A student's working copy of the course: ``DEST/notebooks/NN_x.ipynb`` with their committed
    outputs, and ``DEST/data``, where the notebooks write their phantom exports (their ``data_dir``
    is ``../data``); results and grids are read through the package (:func:`course_path`).

    A notebook already in the copy (perhaps edited by the student) is kept unless ``overwrite``.
    The copies leave out jupytext's pairing (CONTRIBUTING.md), so saving one writes no ``.py``
    beside it. Returns the names copied and the names kept."""
    folder = writable_folder(Path(dest) / "notebooks")
    writable_folder(Path(dest) / "data")
    copied, kept = [], []
    from fseft_lab.notebooks import find_notebooks

    for source in find_notebooks(folder=course_path("notebooks")):
        target = folder / source.name
        if target.exists() and not overwrite:
            kept.append(source.name)
            continue
        notebook = nbformat.read(source, as_version=4)
        notebook.metadata.pop("jupytext", None)
        with atomic_write(target) as tmp:
            nbformat.write(notebook, tmp)
        copied.append(source.name)
    if not copied and not kept:
        raise FileNotFoundError(f"no course notebook in {course_path('notebooks')}")
    return copied, kept
