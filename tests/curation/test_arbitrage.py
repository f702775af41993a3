"""Routing of multilingual arbitrage: tables and argmax choices against hand-computed ones, the learned router
against scikit-learn's LogisticRegression on the same objective, and the reports' counts."""

import numpy as np
import pytest

from aya_jax.curation import arbitrage
from aya_jax.data import languages

TEACHERS = ["euro", "indic", "cjk"]


def test_fixed_routing_follows_the_table_and_names_an_unrouted_prompt():
    table = arbitrage.parse_table(("fr=euro", "deu=euro", "Hindi=indic", "*=cjk"), TEACHERS, "f")
    fr, de, hi = (languages.lookup(c).code for c in ("fr", "de", "hi"))
    assert table == {fr: 0, de: 0, hi: 1, "*": 2}
    route = arbitrage.route_fixed([fr, hi, "ja", de, "sw"], table, [f"p:{i}" for i in range(5)])
    assert route.tolist() == [0, 1, 2, 0, 2]  # ja and sw: the "*" teacher
    no_default = arbitrage.parse_table(("fr=euro", "hi=indic"), TEACHERS, "f")
    with pytest.raises(ValueError, match=r"^p:2: language 'ja' has no teacher in the routing table"):
        arbitrage.route_fixed([fr, hi, "ja"], no_default, ["p:0", "p:1", "p:2"])
    for bad, message in ((("fr=nobody",), "fr=nobody"), (("fr=euro", "fra=cjk"), "twice"), ((), "needs"),
                         (("xx=euro",), "'xx' is not a known language")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            arbitrage.parse_table(bad, TEACHERS, "config.curation.route_table")


def test_reward_routing_takes_the_best_score_and_the_first_of_equals():
    scores = np.array([[0.1, 0.9, 0.3], [2.0, 2.0, 1.0], [-1.0, -3.0, -0.5], [0.0, 0.0, 0.0]])
    assert arbitrage.best(scores).tolist() == [1, 0, 2, 0]
    with pytest.raises(ValueError, match="prompt 1 has a non-finite score"):
        arbitrage.best(np.array([[0.0, 1.0], [np.nan, 0.0]]))


def test_random_routing_is_seeded_and_uses_every_teacher():
    a, b = arbitrage.route_random(600, 3, seed=4), arbitrage.route_random(600, 3, seed=4)
    np.testing.assert_array_equal(a, b)
    assert set(a.tolist()) == {0, 1, 2} and np.all(np.abs(np.bincount(a) - 200) < 50)


def test_choice_table_and_strategy_scores_by_hand():
    langs = ["fr", "hi", "fr", "ja", "hi"]
    table = arbitrage.choice_table(langs, np.array([0, 1, 2, 2, 1]), TEACHERS)
    assert table == {"fr": {"euro": 1, "indic": 0, "cjk": 1}, "hi": {"euro": 0, "indic": 2, "cjk": 0},
                     "ja": {"euro": 0, "indic": 0, "cjk": 1}}  # fmt: skip
    scores = np.arange(15.0).reshape(5, 3)
    out = arbitrage.strategy_scores(scores, {"single": np.zeros(5, int), "mixed": np.array([2, 1, 0, 1, 2])})
    assert out["single"].tolist() == [0.0, 3.0, 6.0, 9.0, 12.0]
    assert out["mixed"].tolist() == [2.0, 4.0, 6.0, 10.0, 14.0]


def test_round_robin_plays_both_orders_and_points_follow_the_verdicts():
    items = arbitrage.round_robin(["q1", "q2"], ["p1", "p2"], [["e1", "i1", "c1"], ["e2", "i2", "c2"]], TEACHERS,
                                  ["fr", "hi"])  # fmt: skip
    assert len(items) == 2 * 3 * 2  # T (T - 1) games per prompt
    assert [(it.model_a, it.model_b, it.game) for it in items[:2]] == [
        ("euro", "indic", 1),
        ("indic", "euro", 2),
    ]
    assert (items[1].answer_a, items[1].answer_b, items[1].language) == ("i1", "e1", "fr")
    pairs = {(it.question_id, it.model_a, it.model_b) for it in items}
    assert len(pairs) == len(items)  # every ordered pair once
    # q1: indic beats euro in both orders (one strong), cjk ties euro, cjk and indic each win as A (position
    # bias: 1 point each); q2: every judgment unparsed but one tie
    verdicts = {("q1", "euro", "indic"): "[[B>A]]", ("q1", "indic", "euro"): "[[A>>B]]",
                ("q1", "euro", "cjk"): "[[A=B]]", ("q1", "cjk", "euro"): "[[B=A]]",
                ("q1", "indic", "cjk"): "[[A>B]]", ("q1", "cjk", "indic"): "[[A>B]]",
                ("q2", "cjk", "indic"): "[[A=B]]"}  # fmt: skip
    records = [{"question_id": it.question_id, "model_a": it.model_a, "model_b": it.model_b,
                "judgment": verdicts.get((it.question_id, it.model_a, it.model_b), "no label")} for it in items]  # fmt: skip
    points = arbitrage.round_robin_points(records, ["q1", "q2"], TEACHERS)
    assert points.tolist() == [[1.0, 3.0, 2.0], [0.0, 0.5, 0.5]]
    assert arbitrage.best(points).tolist() == [1, 1]  # q2: indic and cjk tie, the first of them wins
    # as preference pairs: q1 indic over euro; q2 indic (first of the best) over euro
    assert arbitrage.ranked_pairs(points) == [(0, 1, 0), (1, 1, 0)]
    # a tie makes no pair
    assert arbitrage.ranked_pairs(np.array([[1.0, 1.0, 1.0], [0.2, 0.1, 0.3]])) == [(1, 2, 1)]


def test_router_matches_scikit_learns_logistic_regression():
    """Three teachers, each best on one cluster of prompt features (overlapping): the same L2-penalised
    multinomial objective fitted by scikit-learn (C = 1 / (n * l2), standardised features) gives the same
    probabilities to 2e-3 and the same choices."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 1.5
    y = rng.integers(0, 3, size=300)
    x = centres[y] + rng.normal(size=(300, 16)) + 5.0  # offset: the router standardises
    l2 = 1e-2
    router = arbitrage.fit_router(x, y, 3, l2=l2, max_iter=1000, tol=1e-7)
    assert router.grad_norm < 1e-5
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    reference = sklearn.LogisticRegression(C=1 / (len(x) * l2), tol=1e-10, max_iter=10000).fit(z, y)
    test = centres[rng.integers(0, 3, size=200)] + rng.normal(size=(200, 16)) + 5.0
    ours = np.exp(router.logits(test))
    ours /= ours.sum(axis=1, keepdims=True)
    theirs = reference.predict_proba((test - x.mean(axis=0)) / x.std(axis=0))
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    np.testing.assert_array_equal(router.predict(test), theirs.argmax(axis=1))
    assert np.mean(router.predict(x) == y) > 0.8
    with pytest.raises(ValueError, match="choices outside"):
        arbitrage.fit_router(x, y + 1, 3)
