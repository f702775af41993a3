"""aya_jax.evaluation.stats: the bootstrap intervals re-derived with NumPy from the same seeded draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aya_jax.evaluation import stats


def _draws(seed, n, rounds):
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


def test_bootstrap_mean_is_the_percentile_interval_of_resampled_means():
    x = np.random.default_rng(0).random(57) > 0.4
    got = stats.bootstrap_mean(x, rounds=300, confidence=0.9, seed=3)
    reps = x.astype(float)[_draws(3, x.size, 300)].mean(axis=1)
    np.testing.assert_allclose([got.low, got.high], np.quantile(reps, [0.05, 0.95]), rtol=1e-12)
    assert (got.mean, got.n) == (pytest.approx(x.mean()), 57)
    assert math.isnan(stats.bootstrap_mean([]).mean)


def test_bootstrap_macro_resamples_within_each_group_in_sorted_key_order():
    rng = np.random.default_rng(1)
    values = rng.random(40)
    groups = ["sw"] * 10 + ["de"] * 25 + ["ja"] * 5
    got = stats.bootstrap_macro(values, groups, rounds=200, seed=4)
    draw = np.random.default_rng(4)
    reps = np.zeros(200)
    means = []
    for key in ("de", "ja", "sw"):
        member = values[[i for i, g in enumerate(groups) if g == key]]
        means.append(member.mean())
        reps += member[draw.integers(0, member.size, size=(200, member.size))].mean(axis=1)
    reps /= 3
    assert got.mean == pytest.approx(np.mean(means))
    np.testing.assert_allclose([got.low, got.high], np.quantile(reps, [0.025, 0.975]), rtol=1e-12)
    with pytest.raises(ValueError, match="40 values but 3 group labels"):
        stats.bootstrap_macro(values, ["a", "b", "c"])


def test_bootstrap_ratio_resamples_items_as_wholes():
    rng = np.random.default_rng(2)
    den = rng.integers(1, 5, 30).astype(float)
    num = den * rng.random(30)
    got = stats.bootstrap_ratio(num, den, rounds=250, seed=9)
    idx = _draws(9, 30, 250)
    reps = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    assert got.mean == pytest.approx(num.sum() / den.sum(), rel=1e-12)
    np.testing.assert_allclose([got.low, got.high], np.quantile(reps, [0.025, 0.975]), rtol=1e-12)
    with pytest.raises(ValueError, match="3 numerators but 2 denominators"):
        stats.bootstrap_ratio([1, 2, 3], [1, 1])
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        stats.bootstrap_ratio([1.0], [1.0], rounds=0)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        stats.bootstrap_ratio([1.0], [1.0], confidence=1.0)


def test_interval_ignores_non_finite_replicates():
    got = stats.interval(0.5, [0.1, float("nan"), 0.9, 0.5, float("inf")], 0.5, 4)
    np.testing.assert_allclose([got.low, got.high], np.quantile([0.1, 0.9, 0.5], [0.25, 0.75]))
    assert math.isnan(stats.interval(0.5, [float("nan")], 0.9, 1).low)
    assert str(stats.Interval(0.6123, 0.58, 0.644, 10)) == "0.612 [0.580, 0.644]"


def test_describe_is_the_mean_and_quartiles():
    d = stats.describe(np.array([4.0, 1.0, 3.0, 2.0]))
    assert d == {"n": 4, "mean": 2.5, "min": 1.0, "q25": 1.75, "median": 2.5, "q75": 3.25, "max": 4.0}
    assert stats.describe(np.array([]))["n"] == 0 and math.isnan(stats.describe(np.array([]))["mean"])
