"""One progress bar for every long loop (training, evaluation, exports, pre-training).

tqdm's widget in Jupyter and its text bar in a terminal (``tqdm.auto``). A notebook executed
headless (papermill, nbval: ``FSEFT_HEADLESS=1``) gets plain text on stdout instead, at most one
update every 15 s: a widget there would leave only its state behind, and a committed notebook
would show nothing of how its minutes went.
"""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm as _auto
from tqdm.std import tqdm as _text


def in_notebook_kernel() -> bool:
    """Running in a Jupyter kernel (a notebook, headless or not), not a terminal or a script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``, drawn where the reader is (module docstring)."""
    if os.environ.get("FSEFT_HEADLESS") and in_notebook_kernel():
        return _text(iterable, file=sys.stdout, ascii=True, ncols=100, mininterval=15, **kwargs)
    return _auto(iterable, **kwargs)
