"""Diversity-first selection: quotas and cluster weights against hand-computed values and a NumPy
re-derivation, quality sampling's frequencies against the softmax it draws from, determinism, bad input."""

import numpy as np
import pytest

from aya_jax.curation import diversity


def test_quotas_hand_values():
    # uniform over 4 clusters, budget 10: 2.5 each -> remainders tie, lower ids first
    assert diversity.quotas(10, np.array([5, 5, 5, 5])).tolist() == [3, 3, 2, 2]
    # a small cluster is taken whole and the rest of its share goes to the others (water-filling):
    # 12 over [1, 10, 10]: 4 each, cluster 0 takes 1, the 3 left split 1.5 / 1.5 -> 5.5, 5.5 -> 6, 5
    assert diversity.quotas(12, np.array([1, 10, 10])).tolist() == [1, 6, 5]
    # weights: 10 by [0.5, 0.3, 0.2] -> 5, 3, 2; a budget over the pool takes the pool
    assert diversity.quotas(10, np.array([9, 9, 9]), np.array([0.5, 0.3, 0.2])).tolist() == [5, 3, 2]
    assert diversity.quotas(100, np.array([2, 0, 3])).tolist() == [2, 0, 3]
    # weight on a full cluster only: the rest goes where there is room, by room
    assert diversity.quotas(6, np.array([2, 4, 4]), np.array([1.0, 0.0, 0.0])).tolist() == [2, 2, 2]


def test_quotas_against_a_numpy_water_filling_rederivation():
    """Random cases against a different derivation: the water level λ with Σ min(b·w_k·λ, a_k) = b found by
    bisection; then the same largest-remainder rounding."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 12))
        available = rng.integers(0, 20, k)
        w = rng.random(k) + 0.01
        budget = int(rng.integers(0, available.sum() + 5))
        target = min(budget, int(available.sum()))
        lo, hi = 0.0, 1e6
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (
                (mid, hi) if np.minimum(target * w / w.sum() * mid, available).sum() < target else (lo, mid)
            )
        share = np.minimum(target * w / w.sum() * hi, available)
        ours = diversity.quotas(budget, available, w)
        assert ours.sum() == target and np.all(ours <= available)
        assert np.all(np.abs(ours - share) < 1 + 1e-6), (available, w, budget, ours, share)


def test_select_spends_the_budget_across_clusters_and_is_seeded():
    rng = np.random.default_rng(1)
    assignments = rng.integers(0, 8, 500)
    picked = diversity.select(assignments, 80, k=8, seed=3)
    assert len(picked) == 80 and len(set(picked.tolist())) == 80
    counts = np.bincount(assignments[picked], minlength=8)
    np.testing.assert_array_equal(counts, diversity.quotas(80, np.bincount(assignments, minlength=8)))
    np.testing.assert_array_equal(picked, diversity.select(assignments, 80, k=8, seed=3))
    assert not np.array_equal(picked, diversity.select(assignments, 80, k=8, seed=4))
    # excluded examples are never drawn again; the next round fills from the rest
    again = diversity.select(assignments, 80, k=8, seed=3, exclude=np.isin(np.arange(500), picked))
    assert len(again) == 80 and not set(again.tolist()) & set(picked.tolist())


def test_quality_sampling_follows_the_softmax_of_the_scores():
    """One cluster of 4, quota 1: the first draw's frequencies over 20000 seeds are softmax(score / T)
    (a 4-sigma binomial band)."""
    scores = np.array([0.0, 1.0, 2.0, 0.5])
    for temperature in (1.0, 0.5):
        p = np.exp(scores / temperature) / np.exp(scores / temperature).sum()
        draws = np.array([
            diversity.select(np.zeros(4, int), 1, scores=scores, temperature=temperature, seed=s)[0]
            for s in range(20000)
        ])  # fmt: skip
        freq = np.bincount(draws, minlength=4) / len(draws)
        assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(draws))), (freq, p)


def test_cluster_weights_hand_values_and_missing_clusters():
    assignments = np.array([0, 0, 1, 1, 1])
    gold = np.array([1.0, 2.0, 0.0, 0.5, 1.0])
    generated = np.array([0.0, 0.0, 0.5, 0.5, 0.5])
    weights, gaps = diversity.cluster_weights(assignments, gold, generated, 3)
    # gaps: cluster 0 mean(1, 2) = 1.5; cluster 1 mean(-0.5, 0, 0.5) = 0; cluster 2 unscored -> mean 0.75
    np.testing.assert_allclose(gaps, [1.5, 0.0, 0.75])
    e = np.exp([1.5, 0.0, 0.75])
    np.testing.assert_allclose(weights, e / e.sum())
    # a lower temperature sharpens
    sharp, _ = diversity.cluster_weights(assignments, gold, generated, 3, temperature=0.1)
    assert sharp[0] > weights[0] and sharp[0] > 0.99
    with pytest.raises(ValueError, match="example 1 is not finite"):
        diversity.cluster_weights(assignments, np.array([1.0, np.nan, 0, 0, 0]), generated, 3)


def test_round_budgets_and_bad_input():
    assert diversity.round_budgets(100, 3) == [34, 33, 33]
    assert diversity.round_budgets(2, 3) == [2, 0, 0]
    with pytest.raises(ValueError, match="rounds"):
        diversity.round_budgets(10, 0)
    with pytest.raises(ValueError, match=r"cluster weights: need 3"):
        diversity.quotas(5, np.array([1, 2, 3]), np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        diversity.select(np.array([0, 2]), 1, k=2)
    with pytest.raises(ValueError, match="quality scores: need 3 finite"):
        diversity.select(np.array([0, 1, 1]), 1, scores=np.array([0.0, np.inf, 1.0]))


def test_cluster_stats():
    stats = diversity.cluster_stats(
        np.array([0, 0, 1, 2]), np.array([1, 3]), 3, scores=np.array([1.0, 3, 5, 7])
    )
    assert stats.size.tolist() == [2, 1, 1] and stats.selected.tolist() == [1, 0, 1]
    np.testing.assert_allclose(stats.mean_score_all, [2.0, 5.0, 7.0])
    assert stats.mean_score_selected[0] == 3.0 and np.isnan(stats.mean_score_selected[1])
