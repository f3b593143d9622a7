"""Few-shot splits, as the paper's protocol draws them.

Test cases are fixed per task. From the remaining training pool, a draw ("seed") takes ``k + 1``
volumes: ``k`` labelled **support** volumes and one **validation** volume. With ``k`` equal to the
whole pool (the paper's "all", 30 volumes) there is one draw and no validation volume.

>>> split = few_shot_split([f"s{i}" for i in range(10)], k=1, seed=0, test=["s8", "s9"])
>>> len(split.support), len(split.validation), split.test
(1, 1, ('s8', 's9'))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FewShotSplit:
    support: tuple[str, ...]      # the k labelled volumes the method trains on
    validation: tuple[str, ...]   # one held-out labelled volume (empty when k uses the whole pool)
    test: tuple[str, ...]         # fixed test volumes of the task
    k: int
    seed: int


def few_shot_split(cases: list[str], k: int, seed: int, test: list[str] | None = None,
                   num_test: int = 5) -> FewShotSplit:
    """Draw a reproducible support / validation / test split.

    Args:
        cases: all case ids of the task's dataset.
        k: number of support volumes (shots), >= 1.
        seed: the draw; the same (cases, k, seed) always gives the same split.
        test: fixed test cases; default: the last ``num_test`` of ``sorted(cases)``.
        num_test: how many test cases when ``test`` is not given.
    """
    cases = sorted(set(cases))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer (number of labelled volumes), got {k!r}")
    if test is None:
        if not 0 < num_test < len(cases):
            raise ValueError(f"num_test={num_test} must leave a training pool: the dataset has {len(cases)} cases")
        test = cases[-num_test:]
    unknown = sorted(set(test) - set(cases))
    if unknown:
        raise ValueError(f"test cases {unknown} are not in the dataset")
    pool = [c for c in cases if c not in set(test)]
    if k > len(pool):
        raise ValueError(f"k={k} but the task's training pool has {len(pool)} volumes")
    if k == len(pool):
        return FewShotSplit(tuple(pool), (), tuple(sorted(test)), int(k), int(seed))
    order = np.random.default_rng(seed).permutation(len(pool))
    drawn = [pool[i] for i in order[: k + 1]]
    return FewShotSplit(tuple(sorted(drawn[:k])), (drawn[k],), tuple(sorted(test)), int(k), int(seed))
