"""Output paths: checked before any work starts, written whole or not at all.

A command that trains for an hour and then cannot write its results has lost the hour. So every
output path (a CSV, an adapter file, an export folder) is checked first with
:func:`writable_folder` or :func:`writable_file`, and written through :func:`atomic_write`: into
a temporary file beside it, renamed over the target at the end, so a failure never leaves half a
file (or, for a folder written file by file, into a temporary folder). Every error here is one
line that names the path.

>>> with atomic_write("results/table.csv") as tmp:         # doctest: +SKIP
...     table.to_csv(tmp, index=False)
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path


class OutputError(OSError):
    """An output path that cannot be written: the message names the path and the reason."""


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err).splitlines()[0] or type(err).__name__


def writable_folder(path: str | Path) -> Path:
    """Create the folder ``path`` if needed and check that a file can be written in it."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"cannot write to the folder {path}: {blocker} is a file, not a folder")
    probe = path / f".fseft-lab-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise OutputError(f"cannot write to the folder {path}: {_reason(err)}") from err
    return path


def writable_file(path: str | Path) -> Path:
    """Check that the file ``path`` can be written (created, or replaced), creating its folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write the file {path}: it is a folder")
    try:
        writable_folder(path.parent)
    except OutputError as err:
        raise OutputError(f"cannot write the file {path}: {err}") from err
    return path


def _is_write_error(err: BaseException) -> bool:
    """A failure to write: an OSError (a full disk, a read-only folder) but not a ConnectionError,
    which is about what was being fetched; or torch.save's RuntimeError from its C++ writer
    (``[enforce fail at inline_container.cc...]`` on a full disk, ``File ... cannot be opened.``)."""
    if isinstance(err, OSError):
        return not isinstance(err, ConnectionError)
    return isinstance(err, RuntimeError) and ("enforce fail" in str(err) or "cannot be opened" in str(err))


@contextmanager
def atomic_write(path: str | Path, folder: bool = False):
    """Yield a temporary path beside ``path``; when the block ends without error it replaces
    ``path``, else it is removed. A failure to write (a full disk, torch's ``enforce fail``) is
    raised as :class:`OutputError` naming ``path``; any other error (a ``ValueError``, a
    ``ConnectionError``, an interrupted computation) passes unchanged.

    With ``folder=True`` the temporary path is an empty folder, and a folder already at ``path``
    is replaced whole: moved aside, the new one renamed in, the old one deleted.
    """
    path = Path(path)
    if folder:
        suffix = ""
    else:   # the temporary file keeps the extension, for writers that go by it (nibabel, nbformat)
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name.removesuffix(suffix)}.tmp-{os.getpid()}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)   # left by a killed process of the same pid
            tmp.mkdir()
        yield tmp
        if folder and path.exists():   # a rename cannot replace a folder that holds files
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.replace(path)
    except (OSError, RuntimeError) as err:
        if isinstance(err, OutputError) or not _is_write_error(err):
            raise
        raise OutputError(f"cannot write {path}: {_reason(err)}") from err
    finally:
        try:
            if folder:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except OSError:      # its folder could not be made: there is nothing to remove
            pass
