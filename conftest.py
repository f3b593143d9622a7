"""Shared pytest set-up for the unit tests and the notebook tests (nbval)."""
import os

from fseft_lab.profiles import MALLOC_ENV

# Headless: viewers draw static figures and never wait for a browser (nbval kernels inherit this).
os.environ.setdefault("FSEFT_HEADLESS", "1")
# Committed notebook outputs come from the cpu profile; compare like with like on any machine.
os.environ.setdefault("FSEFT_PROFILE", "cpu")
# glibc keeps freed memory instead of page-faulting it in again every step: about 2x faster
# notebook kernels on CPU (read at process start, so it reaches the kernels, not this process).
for key, value in MALLOC_ENV.items():
    os.environ.setdefault(key, value)

# notebooks/NN_x.py are the notebooks' jupytext twins (CONTRIBUTING.md), not test modules: nbval
# collects the .ipynb; importing a twin (``pytest notebooks/00_data.py``) would run the notebook.
collect_ignore_glob = ["notebooks/*.py"]


def pytest_collection_modifyitems(config, items):
    """Every notebook cell (nbval) is marked ``notebooks`` and ``slow``: a notebook runs for minutes
    on 2 cores, so ``-m "not slow"`` (the quick unit-test command) leaves all of them out, and
    ``-m notebooks`` runs only them."""
    import pytest

    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebooks)
            item.add_marker(pytest.mark.slow)
