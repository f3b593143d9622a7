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
