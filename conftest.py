"""Shared pytest set-up for the unit tests and the notebook tests (nbval)."""
import os

# Headless: viewers draw static figures and never wait for a browser (nbval kernels inherit this).
os.environ.setdefault("FSEFT_HEADLESS", "1")
