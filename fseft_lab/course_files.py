"""The repository's committed files that the notebooks read: benchmark results and grid files.

In a clone (``pip install -e .``) they are the repository's own ``results/`` and ``grids/``;
an installed package (``pip install git+...``, as on Colab) carries a copy of both under
``fseft_lab/course_files/`` (copied at build time by ``setup.py``), so a notebook runs with
nothing but the package:

>>> course_path("results/benchmark_short.csv").is_file()   # doctest: +SKIP
True
"""
from __future__ import annotations

from pathlib import Path

#: The repository folders copied into the installed package.
COURSE_FOLDERS = ("results", "grids")
_CLONE = Path(__file__).resolve().parent.parent    # the repository root, when running from a clone
_INSTALLED = Path(__file__).resolve().parent / "course_files"


def course_path(relative: str = "") -> Path:
    """The path of a committed course file or folder, e.g. ``"results/benchmark_short.csv"``:
    the clone's own file when running from a clone, else the installed package's copy."""
    if relative and Path(relative).parts[0] not in COURSE_FOLDERS:
        raise ValueError(f"{relative!r} is not under a course folder; course files live under {COURSE_FOLDERS}")
    root = _CLONE if (_CLONE / "pyproject.toml").is_file() and (_CLONE / "results").is_dir() else _INSTALLED
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (course files are looked up in {root})")
    return path
