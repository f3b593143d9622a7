"""Shared pytest set-up for the unit tests and the notebook tests (nbval)."""
import os

# Headless: viewers draw static figures and never wait for a browser (nbval kernels inherit this).
os.environ.setdefault("FSEFT_HEADLESS", "1")
# Committed notebook outputs come from the cpu profile; compare like with like on any machine.
os.environ.setdefault("FSEFT_PROFILE", "cpu")
