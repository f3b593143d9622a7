"""Few-shot splits, as the paper's protocol draws them.

Test cases are fixed per task. From the remaining training pool, a draw ("seed") takes ``k + 1``
volumes: ``k`` labelled **support** volumes and one **validation** volume. With ``k`` equal to the
whole pool (the paper's "all", 30 volumes) there is one draw and no validation volume. Support
and validation volumes show their task's structures whole (:func:`not_a_support`); test volumes
need only show them, and a structure cut by the field of view is scored and flagged.

A user with a handful of labelled scans chooses the test cases by name, by number (0: nothing is
scored, every volume can be support) or one at a time (:func:`leave_one_out`); without a choice a
dataset keeps at most half of its volumes for testing (:func:`default_num_test`).

>>> split = few_shot_split([f"s{i}" for i in range(10)], k=1, seed=0, test=["s8", "s9"])
>>> len(split.support), len(split.validation), split.test
(1, 1, ('s8', 's9'))
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fseft_lab.anatomy import BOUNDED

#: The least a support volume may show of each structure (mL): less is a speck, not an example.
MIN_SUPPORT_ML = 1.0


@dataclass(frozen=True)
class FewShotSplit:
    support: tuple[str, ...]      # the k labelled volumes the method trains on
    validation: tuple[str, ...]   # one held-out labelled volume (empty when k uses the whole pool)
    test: tuple[str, ...]         # fixed test volumes of the task
    k: int
    seed: int


@dataclass(frozen=True)
class Extent:
    """How a volume shows one structure: its labelled volume (mL) and whether it touches the scan's
    first or last slice (``cut``: labelled only as far as the field of view goes)."""
    ml: float
    cut: bool


def extents(label: np.ndarray, voxel_ml: float, structures: Sequence[str]) -> dict[str, Extent]:
    """Each structure's :class:`Extent` in a label map ((X, Y, Z) or (1, X, Y, Z), value i =
    ``structures[i - 1]``, the last axis running along the scan); ``voxel_ml``: one voxel's volume."""
    label = np.asarray(label)
    label = label.reshape(label.shape[-3:])
    ends = np.concatenate([label[..., 0].ravel(), label[..., -1].ravel()])
    counts = np.bincount(label.ravel().astype(np.int64), minlength=len(structures) + 1)
    return {s: Extent(float(counts[v]) * voxel_ml, bool((ends == v).any())) for v, s in enumerate(structures, start=1)}


def not_a_support(shown: dict[str, Extent]) -> str | None:
    """Why a volume may not be a support (or validation) volume, or ``None`` if it may.

    The protocol's rule: a support volume shows every structure of its task, at least
    ``MIN_SUPPORT_ML``, and those a scan can hold whole (:data:`fseft_lab.anatomy.BOUNDED`:
    organs, not vessels or the oesophagus) without touching either end of the scan. A thorax
    scan whose liver is a 10 mL sliver in its last slices is a test volume (scored, flagged as
    cut), never an example to learn the liver from or a size prior for one.

    >>> not_a_support({"liver": Extent(10.0, cut=True)})
    'liver touches the end of the scan (10.0 mL shown)'
    """
    for name, extent in shown.items():
        if extent.ml < MIN_SUPPORT_ML:
            return f"{name} has {extent.ml:.1f} mL, below {MIN_SUPPORT_ML:g} mL"
        if extent.cut and name in BOUNDED:
            return f"{name} touches the end of the scan ({extent.ml:.1f} mL shown)"
    return None


def default_num_test(cases: int, paper: int = 5) -> int:
    """Test cases of a dataset that marks none: the paper's 5, but at most half of the volumes, so
    that 10 volumes keep 5 for testing, 5 keep 2 and 1 keeps none (``default_num_test(5) == 2``)."""
    return min(paper, cases // 2)


def leave_one_out(cases: list[str]) -> list[tuple[str, ...]]:
    """The test sets of leave-one-out scoring: each volume alone, in turn; the others are the pool."""
    return [(case,) for case in sorted(set(cases))]


def few_shot_split(cases: list[str], k: int, seed: int, test: list[str] | None = None,
                   num_test: int = 5, supports: Sequence[str] | None = None) -> FewShotSplit:
    """Draw a reproducible support / validation / test split.

    Args:
        cases: all case ids of the task's dataset.
        k: number of support volumes (shots), >= 1.
        seed: the draw; the same (cases, k, seed) always gives the same split.
        test: fixed test cases (may be empty); default: the last ``num_test`` of ``sorted(cases)``.
        num_test: how many test cases when ``test`` is not given (0: none, nothing is scored).
        supports: the cases that may be support or validation volumes (:func:`not_a_support`
            says which); default: every case not in the test set.

    A request the cases cannot meet raises ``ValueError`` saying how many volumes it needs and how
    many there are, e.g. ``num_test=5 and k=1 need 6 labelled volumes; the task has 5``.
    """
    cases = sorted(set(cases))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer (number of labelled volumes), got {k!r}")
    if test is None:
        if isinstance(num_test, bool) or not isinstance(num_test, (int, np.integer)) or num_test < 0:
            raise ValueError(f"num_test={num_test!r} must be a whole number >= 0 (0: nothing is scored)")
        if num_test + k > len(cases):
            raise ValueError(f"num_test={num_test} and k={k} need {num_test + k} labelled volumes "
                             f"({num_test} test + {k} support); the task has {len(cases)}")
        test = cases[len(cases) - num_test:]
    unknown = sorted(set(test) - set(cases))
    if unknown:
        raise ValueError(f"test cases {unknown} are not among the task's {len(cases)} labelled volumes "
                         f"({', '.join(cases[:6])}{' ...' if len(cases) > 6 else ''})")
    pool = [c for c in cases if c not in set(test) and (supports is None or c in set(supports))]
    if k > len(pool):
        rest = len(cases) - len(set(test)) - len(pool)
        raise ValueError(f"k={k} needs {k} labelled volumes besides the {len(set(test))} test ones; the task's "
                         f"training pool has {len(pool)} ({len(cases)} in all"
                         + (f"; {rest} more show a structure cut by the scan's end or too small to learn from" if rest else "")
                         + ")")
    if k == len(pool):
        return FewShotSplit(tuple(pool), (), tuple(sorted(test)), int(k), int(seed))
    order = np.random.default_rng(seed).permutation(len(pool))
    drawn = [pool[i] for i in order[: k + 1]]
    return FewShotSplit(tuple(sorted(drawn[:k])), (drawn[k],), tuple(sorted(test)), int(k), int(seed))
