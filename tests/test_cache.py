"""The on-disk cache of pre-processed cases: reused across runs, re-read when a source changes,
and never left half-written (disk full, unreadable entries)."""
import errno
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from fseft_lab.data.cache import CachedCases
from fseft_lab.data.layouts import export_phantom, open_dataset
from fseft_lab.profiles import get_profile

CPU = get_profile("cpu").geometry


@pytest.fixture
def folder(tmp_path):
    export_phantom(tmp_path / "msd", "msd", cases=2, num_test=1, spacing=6.0, template="btcv", progress=False)
    return open_dataset(tmp_path / "msd")


def test_entries_are_reused_by_a_later_run(folder, tmp_path, monkeypatch):
    first = CachedCases(folder, ["liver", "spleen"], CPU, tmp_path / "cache")
    items = list(first)
    assert len(items) == 2 and len(list((tmp_path / "cache").glob("*.pt"))) == 2

    def no_reading(*args, **kwargs):
        raise AssertionError("the source files were read again")
    monkeypatch.setattr(folder, "load", no_reading)
    again = CachedCases(folder, ["liver", "spleen"], CPU, tmp_path / "cache")
    for a, b in zip(items, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert b["structures"] == ("liver", "spleen")
    # other structures or another profile are other entries
    assert CachedCases(folder, ["liver"], CPU, tmp_path / "cache").path(folder.case_ids[0]) != first.path(folder.case_ids[0])


def test_a_changed_source_file_is_read_again(folder, tmp_path):
    cache = CachedCases(folder, ["liver"], CPU, tmp_path / "cache")
    before = cache[0]
    label_file = folder.cases[0].labels
    img = nib.load(str(label_file))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(label_file))   # the case re-annotated: empty
    later = label_file.stat().st_mtime_ns + 10**9                 # even within one clock tick
    os.utime(label_file, ns=(later, later))
    after = CachedCases(folder, ["liver"], CPU, tmp_path / "cache")[0]
    assert before["label"].sum() > 0 and after["label"].sum() == 0


def test_a_full_disk_leaves_no_half_entry_and_the_case_still_loads(folder, tmp_path, monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:          # a few bytes, then the disk is full
            handle.write(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    cache = CachedCases(folder, ["liver"], CPU, tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"cannot write cache entry .*\.pt \(No space left on device\)"):
        item = cache[0]
    assert item["label"].sum() > 0
    assert list((tmp_path / "cache").iterdir()) == []          # neither the entry nor its temporary file
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(CachedCases(folder, ["liver"], CPU, tmp_path / "cache")[0]["label"], item["label"])


def test_an_unreadable_entry_is_recomputed(folder, tmp_path):
    cache = CachedCases(folder, ["liver"], CPU, tmp_path / "cache")
    good = cache[0]
    entry = cache.path(folder.case_ids[0])
    entry.write_bytes(entry.read_bytes()[:100])                # truncated, e.g. by a crash of the disk
    with pytest.warns(UserWarning, match="cannot be read"):
        again = CachedCases(folder, ["liver"], CPU, tmp_path / "cache")[0]
    assert torch.equal(again["label"], good["label"]) and entry.stat().st_size > 100
