"""``fseft-lab``: the course's work from a terminal.

    fseft-lab course DIR                               copy the notebooks into a working folder of your own
    fseft-lab quickstart [--profile P] [--task T]      the main job on phantom data
    fseft-lab adapt --data DIR --task T --method M --k K --seeds S --out CSV [--transductive penalty]
                    [--test-cases ID... | --num-test N | --leave-one-out | --deploy --save-adapter A.pt]
                                                       few-shot adaptation of your own labelled scans
    fseft-lab benchmark --grid grids/fseft_phantom.toml --out results/benchmark.csv   the paper's grid
    fseft-lab predict --adapter A.pt -i CT.nii.gz|FOLDER -o SEG.nii.gz|FOLDER   segment scans with an adapter
    fseft-lab methods [--profile P]                    adaptation methods and their trainable parameters
    fseft-lab pretrain OUT [--profile P] [--steps N] [--resume]   partial-label pre-training
    fseft-lab phantom export OUT --layout totalsegmentator --cases 10 --seed 0 [--domain D] [--spacing MM]
    fseft-lab phantom domains                          list acquisition domains
    fseft-lab notebooks run [--profile P] [NAMES...]   execute notebooks headless (papermill)
    fseft-lab zoo list | info NAME | download NAME     foundation-model checkpoints

The subcommands live by concern: ``course.py`` (the course's work on phantoms and tools),
``scans.py`` (a user's own scans: adapt, predict), ``common.py`` (shared options and help).
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import warnings

from fseft_lab.cli import course, scans
from fseft_lab.cli.common import HelpWithDefaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fseft-lab", description="Few-shot efficient fine-tuning of a CT foundation model.",
                                     formatter_class=HelpWithDefaults)
    sub = parser.add_subparsers(dest="command", required=True)
    course.add_course(sub)
    course.add_quickstart(sub)
    scans.add_adapt(sub)
    course.add_benchmark(sub)
    scans.add_predict(sub)
    course.add_tools(sub)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _restart_with_malloc_settings() -> None:
    """Start this command again, once, with glibc keeping freed memory in the process
    (``profiles.MALLOC_ENV``: about half the time of a training step on a Linux CPU). glibc reads
    the settings only when a process starts, so they cannot be set from here. A value the user set
    wins: ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc's default) keeps its usual behaviour."""
    from fseft_lab.profiles import MALLOC_ENV

    if sys.platform.startswith("linux") and sys.executable and not any(k in os.environ for k in MALLOC_ENV):
        os.execve(sys.executable, [sys.executable, "-m", "fseft_lab.cli", *sys.argv[1:]], {**os.environ, **MALLOC_ENV})


def _silence_stdout() -> None:
    """Point standard output at /dev/null once its reader has closed the pipe, so that nothing
    more (Python's flush at exit included) fails on it; the Unix way to end quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (e.g. captured by a test): nothing to silence
        pass


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``UserWarning: message``: a warning without the source line Python prints under it, which
    reads like the start of a traceback in a terminal (installed by :func:`main` only)."""
    return f"{category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the ``fseft-lab`` command itself, not a call from Python
        _restart_with_malloc_settings()
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["fseft-lab", *(sys.argv[1:] if argv is None else argv)])  # for manifests
    # SIGTERM (kill, a scheduler's time limit) stops long work as gracefully as Ctrl-C, and so does
    # SIGINT in a background job (where the shell ignores it): finished runs and manifests are kept
    graceful = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)} if graceful else {}
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        args.func(args)
        sys.stdout.flush()  # a reader that has gone shows here, not in Python's last flush at exit
    except BrokenPipeError:  # `fseft-lab zoo list | head -1`: the reader has what it wanted
        _silence_stdout()
        return 0
    except (ValueError, OSError, KeyError, RuntimeError, FloatingPointError) as err:
        print(f"fseft-lab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fseft-lab: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
