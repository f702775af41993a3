"""Diversity-first data selection (arXiv 2409.11378, "Diversify and Conquer"): cluster the pool's embeddings,
spend the budget across clusters, and — in the iterative variant — move the budget towards the clusters where
the model trained so far is furthest behind the gold answers.

One round, given each example's cluster (`clustering.kmeans`):
1. **Quotas.** The round's budget b is split over the K clusters by weights w (uniform 1/K in the first round):
   quota_k = b·w_k, but never more than the cluster's unselected examples. What a full cluster cannot take is
   handed to the others in proportion to their weights, until the budget is spent or the pool is (water-filling,
   so small clusters are taken whole and the budget is still spent). Integer quotas by largest remainder, ties to
   the lower cluster id: deterministic, and they sum exactly to min(b, unselected examples).
2. **Within a cluster.** `uniform`: quota_k examples drawn without replacement; `quality`: drawn without
   replacement with probabilities softmax(score / temperature) over the cluster's unselected examples (the
   paper's kMQ: quality-weighted sampling inside each cluster), by sequential draws (NumPy's weighted choice
   without replacement). Seeded: same inputs, same seed, same selection.

Iterative refinement (the paper's K = 512, 3 rounds): after a round, the model fine-tuned on everything selected
so far answers the round's prompts; a reward model scores the gold answer and the generated one; each cluster's
weight for the next round is w_k = softmax_k(mean over the cluster's scored examples of (r_gold − r_generated)):
clusters where generations trail the gold answers most get more budget. A cluster with no scored example in the
round gets the mean gap of those that have one (it neither gains nor loses on missing evidence).

Where this departs from the reference: the reference implementation divides every later round's budget by K
before drawing by the weights, so after the first round it selects about K times fewer examples than the budget
says (with K = 512, almost nothing), which reads as an accident of its per-cluster bookkeeping. Here every round
spends its whole budget (`round_budgets`: the total split evenly over the rounds, the remainder to the first),
and the weights decide only where it goes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

WITHIN = ("uniform", "quality")


def quotas(budget: int, available: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Integer examples per cluster (module docstring, step 1): sums to min(budget, Σ available), none above
    its cluster's `available`, in proportion to `weights` (uniform when None) otherwise."""
    available = np.asarray(available, np.int64)
    k = len(available)
    if budget < 0:
        raise ValueError(f"budget {budget} is negative")
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"cluster weights: need {k} finite non-negative values with a positive sum")
    target = min(int(budget), int(available.sum()))
    share = np.zeros(k, np.float64)
    open_ = (available > 0) & (w > 0)
    left = float(target)
    while left > 1e-9 and open_.any():  # water-filling: each pass fills at least one cluster, or ends
        share = np.minimum(share + left * w * open_ / np.sum(w[open_]), available)
        left = float(target - share.sum())
        open_ &= share < available - 1e-9
    if left > 1e-9:  # weight 0 on every cluster with room left: spread the rest over them by their room
        room = available - share
        share += left * room / room.sum()
    whole = np.floor(share + 1e-9).astype(np.int64)
    rest = target - int(whole.sum())
    order = sorted(range(k), key=lambda i: (-(share[i] - whole[i]), i))
    for i in order:
        if rest <= 0:
            break
        if whole[i] < available[i]:
            whole[i] += 1
            rest -= 1
    return whole


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def select(
    assignments: np.ndarray,
    budget: int,
    *,
    k: int | None = None,
    weights: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    temperature: float = 1.0,
    exclude: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Indices (sorted) of `budget` examples drawn across clusters (module docstring): `assignments` [N] the
    cluster of each example, `weights` [K] (uniform when None), `scores` [N] quality scores for softmax sampling
    inside each cluster (uniform when None), `exclude` [N] bool for examples already selected."""
    assignments = np.asarray(assignments)
    n = len(assignments)
    k = int(assignments.max()) + 1 if k is None else int(k)
    if n and (assignments.min() < 0 or assignments.max() >= k):
        raise ValueError(f"cluster assignments must lie in [0, {k})")
    if temperature <= 0:
        raise ValueError(f"temperature {temperature} must be > 0")
    free = np.ones(n, bool) if exclude is None else ~np.asarray(exclude, bool)
    if scores is not None:
        scores = np.asarray(scores, np.float64)
        if scores.shape != (n,) or not np.all(np.isfinite(scores[free])):
            raise ValueError(f"quality scores: need {n} finite values")
    available = np.bincount(assignments[free], minlength=k)
    take = quotas(budget, available, weights)
    rng = np.random.default_rng(seed)
    chosen = []
    for cluster in np.flatnonzero(take):
        members = np.flatnonzero(free & (assignments == cluster))
        p = None if scores is None else _softmax(scores[members] / temperature)
        chosen.append(rng.choice(members, size=int(take[cluster]), replace=False, p=p))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def cluster_weights(
    assignments: np.ndarray,
    gold_rewards: np.ndarray,
    generated_rewards: np.ndarray,
    k: int,
    *,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(weights [K] = softmax_k(gap_k / temperature), gaps [K]) with gap_k the mean of r_gold − r_generated
    over the scored examples of cluster k; `assignments`, `gold_rewards` and `generated_rewards` are for the
    scored examples only. A cluster without one gets the mean of the other clusters' gaps (module docstring)."""
    assignments = np.asarray(assignments)
    gap = np.asarray(gold_rewards, np.float64) - np.asarray(generated_rewards, np.float64)
    if gap.shape != assignments.shape:
        raise ValueError(f"rewards: {gap.shape} gaps for {assignments.shape} scored examples")
    if not np.all(np.isfinite(gap)):
        raise ValueError(f"rewards: example {int(np.flatnonzero(~np.isfinite(gap))[0])} is not finite")
    if not len(gap):
        raise ValueError("cluster weights: no scored examples")
    counts = np.bincount(assignments, minlength=k)
    sums = np.bincount(assignments, weights=gap, minlength=k)
    gaps = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    gaps[counts == 0] = gaps[counts > 0].mean()
    return _softmax(gaps / temperature), gaps


def round_budgets(total: int, rounds: int) -> list[int]:
    """The total budget split evenly over the rounds, the remainder to the first (module docstring)."""
    if rounds < 1 or total < 0:
        raise ValueError(f"budget {total} over {rounds} rounds")
    base, rest = divmod(int(total), int(rounds))
    return [base + (rest if i == 0 else 0) for i in range(rounds)]


@dataclasses.dataclass(frozen=True)
class ClusterStats:
    """Per cluster: pool size, selected, mean quality score of selected and of all (NaN without scores)."""

    size: np.ndarray
    selected: np.ndarray
    mean_score_selected: np.ndarray
    mean_score_all: np.ndarray


def cluster_stats(
    assignments: np.ndarray, selected: np.ndarray, k: int, scores: np.ndarray | None = None
) -> ClusterStats:
    assignments = np.asarray(assignments)
    picked = np.zeros(len(assignments), bool)
    picked[np.asarray(selected, np.int64)] = True
    size = np.bincount(assignments, minlength=k)
    chosen = np.bincount(assignments[picked], minlength=k)
    if scores is None:
        nan = np.full(k, np.nan)
        return ClusterStats(size, chosen, nan, nan)
    scores = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sel = np.bincount(assignments[picked], weights=scores[picked], minlength=k) / chosen
        mean_all = np.bincount(assignments, weights=scores, minlength=k) / size
    return ClusterStats(size, chosen, mean_sel, mean_all)
