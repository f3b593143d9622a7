"""Run the course notebooks headless with papermill and keep the committed copies clean.

``fseft-lab notebooks run [--profile P] [NAMES...]`` executes notebooks in place (or into
``--out``) with ``FSEFT_PROFILE`` set for the kernel, so the committed notebooks keep their
``auto`` default instead of a hard-coded profile, then strips widget state and papermill's
per-cell metadata so that committed notebooks stay small and diffs stay readable. After a clean
run it writes the run's profile, machine and measured wall time into the notebook's title cell,
between the markers of :func:`run_info_block` (each notebook's title cell carries them), so the
line that says what made the committed outputs is measured, never typed.

Each course notebook is a jupytext pair (CONTRIBUTING.md): ``NN_x.ipynb`` with its outputs and
``NN_x.py``, the same cells as percent-format text. A run in place refuses a pair out of step
(:func:`pair_differences`: the .py edited, the .ipynb not synced, would execute stale cells) and
rewrites the .py from the executed notebook, so the stamped title cell reaches both.
"""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from fseft_lab.outputs import atomic_write
from fseft_lab.profiles import MALLOC_ENV, get_profile

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
RUN_INFO_START, RUN_INFO_END = "<!-- run-info -->", "<!-- /run-info -->"
NOT_EXECUTED_YET = "*Committed outputs: not executed yet (`fseft-lab notebooks run` writes here how they were made).*"


def run_info_block(line: str) -> str:
    """``line`` between the markers that :func:`stamp_run_info` replaces."""
    return f"{RUN_INFO_START}{line}{RUN_INFO_END}"


def machine_description() -> str:
    """This machine in a few words: architecture, CPU cores, GPU."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} with {os.cpu_count()} CPU cores, {gpu}"


def run_info_line(profile: str, seconds: float, machine: str, date: datetime.date) -> str:
    return (f"*Committed outputs: {profile} profile, {machine}, {seconds:.0f} s "
            f"(executed {date.isoformat()} with `fseft-lab notebooks run`).*")


def stamp_run_info(path: Path, line: str) -> bool:
    """Replace the text between the run-info markers of the notebook's first markdown cell by
    ``line``; returns False (and leaves the file alone) when that cell has no markers."""
    nb = nbformat.read(path, as_version=4)
    first = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first is None or RUN_INFO_START not in first.source or RUN_INFO_END not in first.source:
        return False
    before, rest = first.source.split(RUN_INFO_START, 1)
    first.source = before + run_info_block(line) + rest.split(RUN_INFO_END, 1)[1]
    nbformat.write(nb, path)
    return True


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


def twin(path: Path) -> Path:
    """The notebook's jupytext twin: ``NN_x.py`` beside ``NN_x.ipynb``."""
    return Path(path).with_suffix(".py")


def _jupytext():
    try:
        import jupytext
    except ImportError as error:
        raise ImportError("the course notebooks are jupytext pairs (CONTRIBUTING.md): pip install jupytext "
                          "(in the [lab] and [dev] extras)") from error
    return jupytext


def pair_differences(notebook: Path, text: Path) -> list[str]:
    """Where two files of a jupytext pair disagree, one line each (empty when in step): the cell
    count, then per cell its type, source and tags, each file read with ``jupytext.read``."""
    jupytext = _jupytext()
    a, b = jupytext.read(notebook), jupytext.read(text)
    names = f"{Path(notebook).name} vs {Path(text).name}"
    found = [] if len(a.cells) == len(b.cells) else [f"{names}: {len(a.cells)} cells vs {len(b.cells)}"]
    for i, (x, y) in enumerate(zip(a.cells, b.cells)):
        first_line = (x.source.splitlines() or [""])[0][:50]
        for what, u, v in (("type", x.cell_type, y.cell_type), ("source", x.source, y.source),
                           ("tags", x.metadata.get("tags", []), y.metadata.get("tags", []))):
            if u != v:
                found.append(f"{names}: cell {i} ({first_line!r}) differs in {what}")
    return found


def write_twin(path: Path) -> Path:
    """Rewrite the notebook's percent-format twin from the .ipynb (its cells, tags and header)."""
    jupytext = _jupytext()
    jupytext.write(jupytext.read(path), twin(path), fmt="py:percent")
    return twin(path)


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
    with atomic_write(path) as tmp:
        nbformat.write(nb, tmp)


def run(names: list[str] | None = None, profile: str | None = None, out: Path | None = None,
        kernel: str = "python3", folder: Path = NOTEBOOK_DIR) -> list[tuple[str, float]]:
    """Execute notebooks headless, stamping each with its run's profile, machine and wall time
    (:func:`stamp_run_info`); returns (name, seconds) per notebook. Run in place, a notebook with a
    jupytext twin must be in step with it first, and the twin is rewritten after the run."""
    import papermill

    paths = find_notebooks(names, folder)
    if not out:  # in place: check every pair before minutes of execution
        stale = [line for path in paths if twin(path).exists() for line in pair_differences(path, twin(path))]
        if stale:
            raise ValueError("notebook and .py out of step; run `jupytext --sync` on the notebook first "
                             "(CONTRIBUTING.md):\n" + "\n".join(stale))

    env = {**{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()},  # faster CPU kernels (see profiles)
           "FSEFT_HEADLESS": "1", **({"FSEFT_PROFILE": profile} if profile else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    timings = []
    try:
        profile_name, machine = get_profile().name, machine_description()  # as the kernels will resolve them
        for path in paths:
            target = (Path(out) / path.name) if out else path
            target.parent.mkdir(parents=True, exist_ok=True)
            # executed in a scratch folder (papermill saves after every cell: no half-run notebook
            # among the course's); the target is replaced only after a clean run
            with tempfile.TemporaryDirectory() as scratch:
                executed = Path(scratch) / path.name
                start = time.perf_counter()
                papermill.execute_notebook(str(path), str(executed), kernel_name=kernel, cwd=str(path.parent),
                                           progress_bar=False)
                seconds = time.perf_counter() - start
                stamp_run_info(executed, run_info_line(profile_name, seconds, machine, datetime.date.today()))
                clean(executed)
                with atomic_write(target) as tmp:
                    shutil.copyfile(executed, tmp)
            if not out and twin(path).exists():
                write_twin(target)
            timings.append((path.name, seconds))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return timings
