"""aya_jax.evaluation.prompt_priority: the per-prompt score from per-token divergences, the top-fraction cut, and
the tie rates of judged games on the selected prompts against random subsets, all against hand computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from aya_jax.evaluation import prompt_priority as pp


def test_prompt_score_averages_tokens_then_directions():
    on_a = (np.log([0.5, 0.5, 0.5]), np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 3.0]))
    on_b = (np.log([0.5]), np.array([0.6]), np.array([4.0]))
    s = pp.prompt_score("fr/1", on_a, on_b)
    assert (s.kl_a, s.kl_b, s.tokens_a, s.tokens_b) == pytest.approx((0.2, 0.6, 3, 1))
    assert s.kl == pytest.approx(0.4) and s.cross_entropy == pytest.approx((2.0 + 4.0) / 2)


def _score(key, kl, ce=0.0):
    return pp.PromptScore(key, kl, ce, kl, kl, 1, 1)


def test_select_keeps_the_top_fraction_highest_first_ties_by_key():
    scores = [_score(f"q{i}", kl) for i, kl in enumerate([0.1, 0.9, 0.5, 0.9, 0.2, 0.3, 0.05, 0.7, 0.4, 0.6])]
    assert pp.select(scores, 0.2) == ["q1", "q3"]
    assert pp.select(scores, 0.3) == ["q1", "q3", "q7"]
    assert pp.select(scores, 0.01) == ["q1"]  # at least one
    ce = [_score(s.key, 0.0, ce=-s.kl) for s in scores]
    assert pp.select(ce, 0.1, "cross_entropy") == ["q6"]
    with pytest.raises(ValueError, match="unknown metric 'js'"):
        pp.select(scores, 0.2, "js")
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 0"):
        pp.select(scores, 0)


def _games(verdicts):
    """Judgment records: per prompt key, (game 1 verdict with a as A, game 2 verdict with b as A)."""
    records = []
    for key, (first, second) in verdicts.items():
        records.append({"question_id": key, "model_a": "a", "model_b": "b", "game": 1, "verdict": first})
        records.append({"question_id": key, "model_a": "b", "model_b": "a", "game": 2, "verdict": second})
    return records


def test_tie_rates_against_a_hand_count_and_random_subsets():
    verdicts = {
        "p0": ("A>B", "B>A"),  # a wins twice: decided
        "p1": ("A=B", "A=B"),  # two ties: undecided
        "p2": ("A>B", "A>B"),  # each side wins once (positions swapped): undecided, no tie verdict
        "p3": ("A>>B", "B>>A"),  # decided
        "p4": ("A=B", "B>A"),  # tie + a win: average 0.75, decided
    }
    records = _games(verdicts)
    records.append({"question_id": "p0", "model_a": "a", "model_b": "b", "game": 3, "judgment": "no label"})
    out = pp.tie_rates(records, ["p0", "p3"], list(verdicts), draws=400, seed=1)
    assert out["selected"] == {"prompts": 2, "games": 4, "tie_rate": 0.0, "split_rate": 0.0}
    out = pp.tie_rates(records, ["p1", "p2", "p4"], list(verdicts), draws=400, seed=1)
    assert out["selected"]["tie_rate"] == pytest.approx(3 / 6) and out["selected"][
        "split_rate"
    ] == pytest.approx(2 / 3)
    # A random 3 of the 5 prompts: every subset equally likely, so the mean over draws approaches the mean over
    # all C(5, 3) subsets, computed here exactly.
    exact = []
    for subset in itertools.combinations(verdicts, 3):
        ties = sum(v == "A=B" for k in subset for v in verdicts[k])
        exact.append(ties / 6)
    rnd = out["random"]["tie_rate"]
    assert abs(rnd["mean"] - np.mean(exact)) < 0.03 and rnd["low"] <= rnd["mean"] <= rnd["high"]
    assert out["tie_rate_reduction"] == pytest.approx(1 - 0.5 / rnd["mean"])
    again = pp.tie_rates(records, ["p1", "p2", "p4"], list(verdicts), draws=400, seed=1)
    assert again == out  # seeded
