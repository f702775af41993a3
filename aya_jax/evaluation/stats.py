"""Confidence intervals of evaluation scores: the percentile bootstrap over items.

Every figure an evaluator reports is a mean of per-item scores (1/0 for right/wrong, or a fraction), either
micro (all items pooled) or macro (the unweighted mean of per-group means, e.g. over languages). Its interval
comes from resampling items with replacement `rounds` times and taking the (1 - confidence)/2 and
(1 + confidence)/2 quantiles of the recomputed statistic (Efron & Tibshirani 1993, ch. 13; the percentile
interval arena-hard-auto and Global-MMLU report). For a macro average the resampling is stratified: each group
is resampled within itself, its size kept, so every replicate still has every group and the statistic stays
the unweighted mean of group means.

The random draws come from `numpy.random.default_rng(seed)`: the same items, rounds and seed give the same
interval on every machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

import numpy as np

DEFAULT_ROUNDS = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval; `n` items behind it."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    def __str__(self) -> str:  # "0.612 [0.580, 0.644]"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _quantiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)


# Draws per block: the [rounds, n] index table of a full benchmark (590k Global-MMLU items x 1000 rounds) would
# take ~9 GB at once; blocks of whole rounds keep it to ~100 MB and draw the same numbers in the same order.
_BLOCK_ELEMENTS = 1 << 23


def _replicate_means(x: np.ndarray, rounds: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of `rounds` resamples (with replacement, size len(x)) of x, drawn row by row from `rng`."""
    per_block = max(1, _BLOCK_ELEMENTS // x.size)
    means = [
        x[rng.integers(0, x.size, size=(min(per_block, rounds - r), x.size))].mean(axis=1)
        for r in range(0, rounds, per_block)
    ]
    return np.concatenate(means)


def _check(rounds: int, confidence: float) -> None:
    if rounds < 1:
        raise ValueError(f"bootstrap rounds must be >= 1, got {rounds}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap confidence must be in (0, 1), got {confidence}")


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    rounds: int = DEFAULT_ROUNDS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """The micro mean of `values` and its percentile-bootstrap interval (NaN bounds for no items)."""
    _check(rounds, confidence)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    low, high = _quantiles(_replicate_means(x, rounds, rng), confidence)
    return Interval(float(x.mean()), low, high, int(x.size))


def bootstrap_macro(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Hashable],
    *,
    rounds: int = DEFAULT_ROUNDS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """The unweighted mean over groups of each group's mean, and its stratified bootstrap interval (module
    docstring). Groups are visited in sorted order of their keys, so the draws do not depend on item order
    beyond each group's own."""
    _check(rounds, confidence)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    keys = list(groups)
    if len(keys) != x.size:
        raise ValueError(f"{x.size} values but {len(keys)} group labels")
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    by_group: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        by_group.setdefault(key, []).append(i)
    rng = np.random.default_rng(seed)
    means = np.empty((len(by_group),))
    replicates = np.zeros((rounds,))
    for g, key in enumerate(sorted(by_group, key=str)):
        member = x[np.asarray(by_group[key])]
        means[g] = member.mean()
        replicates += _replicate_means(member, rounds, rng)
    replicates /= len(by_group)
    low, high = _quantiles(replicates, confidence)
    return Interval(float(means.mean()), low, high, int(x.size))


def interval(point: float, replicates: Sequence[float] | np.ndarray, confidence: float, n: int) -> Interval:
    """`point` with the percentile interval of its bootstrap `replicates` (NaN where there are none)."""
    r = np.asarray(replicates, dtype=np.float64).reshape(-1)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return Interval(float(point), float("nan"), float("nan"), int(n))
    low, high = _quantiles(r, confidence)
    return Interval(float(point), low, high, int(n))


def bootstrap_ratio(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    *,
    rounds: int = DEFAULT_ROUNDS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """sum(numerators) / sum(denominators) over items, and its percentile-bootstrap interval with the items
    resampled (with replacement) as wholes: a weighted mean whose items are clusters of observations, e.g.
    the two judged games of one question (numerator: their weighted score, denominator: their weight)."""
    _check(rounds, confidence)
    num = np.asarray(numerators, dtype=np.float64).reshape(-1)
    den = np.asarray(denominators, dtype=np.float64).reshape(-1)
    if num.size != den.size:
        raise ValueError(f"{num.size} numerators but {den.size} denominators")
    if num.size == 0 or den.sum() <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), int(num.size))
    rng = np.random.default_rng(seed)
    per_block = max(1, _BLOCK_ELEMENTS // num.size)
    replicates = []
    for r in range(0, rounds, per_block):
        idx = rng.integers(0, num.size, size=(min(per_block, rounds - r), num.size))
        d = den[idx].sum(axis=1)
        replicates.append(np.where(d > 0, num[idx].sum(axis=1) / np.where(d > 0, d, 1.0), np.nan))
    return interval(num.sum() / den.sum(), np.concatenate(replicates), confidence, num.size)


def describe(values: np.ndarray) -> dict[str, float]:
    """n, mean and the five quartile points (min, q25, median, q75, max) of `values` (NaN when empty)."""
    v = np.asarray(values, np.float64)
    q = np.quantile(v, [0.0, 0.25, 0.5, 0.75, 1.0]) if len(v) else [float("nan")] * 5
    return {"n": int(len(v)), "mean": float(v.mean()) if len(v) else float("nan"), "min": float(q[0]),
            "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "max": float(q[4])}  # fmt: skip
