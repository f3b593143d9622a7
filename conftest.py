"""Shared pytest set-up for the unit tests and the notebook tests (nbval)."""
import os
import re
from pathlib import Path

from fseft_lab.profiles import MALLOC_ENV

# Headless: viewers draw static figures and never wait for a browser (nbval kernels inherit this).
os.environ.setdefault("FSEFT_HEADLESS", "1")
# Committed notebook outputs come from the cpu profile; compare like with like on any machine.
os.environ.setdefault("FSEFT_PROFILE", "cpu")
# glibc keeps freed memory instead of page-faulting it in again every step: about 2x faster
# notebook kernels on CPU (read at process start, so it reaches the kernels, not this process).
for key, value in MALLOC_ENV.items():
    os.environ.setdefault(key, value)

# Under pytest-xdist (`-n 2`, as CI runs the suite), each worker and the kernels and processes it
# starts compute on one thread: two workers on two cores, never four threads fighting for two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = "1"
    import torch

    torch.set_num_threads(1)

# notebooks/NN_x.py are the notebooks' jupytext twins (CONTRIBUTING.md), not test modules: nbval
# collects the .ipynb; importing a twin (``pytest notebooks/00_data.py``) would run the notebook.
collect_ignore_glob = ["notebooks/*.py"]


def pytest_configure(config):
    """nbval runs every notebook as a student does (README's Quick start): in a working copy made by
    ``fseft-lab course`` (:func:`fseft_lab.course_files.copy_course`), its kernel started in
    ``COPY/notebooks``. A notebook's ``../data`` is then the copy's, never the repository's, and a
    notebook that reached into the clone (``../results``) would fail here as it fails on Colab."""
    import shutil
    import tempfile

    import nbval.plugin

    working_copy = []

    class KernelInWorkingCopy(nbval.plugin.RunningKernel):
        def __init__(self, kernel_name, cwd=None, **kwargs):
            if not working_copy:   # made once, when the first notebook starts: shared by all, as a student's is
                from fseft_lab.course_files import copy_course

                working_copy.append(Path(tempfile.mkdtemp(prefix="fseft-course-")))
                copy_course(working_copy[0])
                config.add_cleanup(lambda: shutil.rmtree(working_copy[0], ignore_errors=True))
            super().__init__(kernel_name, cwd=str(working_copy[0] / "notebooks"), **kwargs)

    nbval.plugin.RunningKernel = KernelInWorkingCopy


def committed_seconds(notebook: Path) -> int:
    """A notebook's last measured run time, from the run-info line that ``fseft-lab notebooks run``
    stamps on its first cell (:func:`fseft_lab.notebooks.run_info_line`); 0 when it has none."""
    found = re.search(r", (\d+) s \(executed ", notebook.read_text())
    return int(found.group(1)) if found else 0


def pytest_collection_modifyitems(config, items):
    """Every notebook cell (nbval) is marked ``notebooks`` and ``slow``: a notebook runs for minutes
    on 2 cores, so ``-m "not slow"`` (the quick unit-test command) leaves all of them out, and
    ``-m notebooks`` runs only them.

    Then the longest files go first: the notebooks by their last measured run time, then the test
    files holding slow tests, then the rest. Two workers (``-n 2 --dist loadfile``, with xdist's own
    reordering off in pyproject.toml) each take the next whole file when free, so the suite ends on
    short files instead of one worker finishing a notebook while the other waits."""
    import pytest

    cost = {}
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebooks)
            item.add_marker(pytest.mark.slow)
            cost.setdefault(item.path, 1 + committed_seconds(item.path))
        elif item.get_closest_marker("slow"):
            cost[item.path] = max(cost.get(item.path, 0), 1)
    items.sort(key=lambda item: -cost.get(item.path, 0))   # stable: each file's items keep their order
