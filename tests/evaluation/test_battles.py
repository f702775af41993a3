"""aya_jax.evaluation.battles: verdict parsing on judge-style texts, win rates and their intervals against a NumPy
re-derivation, Bradley–Terry against choix's maximum-likelihood fit, Elo against the update written out by hand,
and the reliability measures on battle logs whose answer is known."""

from __future__ import annotations

import json
import math

import choix
import numpy as np
import pytest

from aya_jax.evaluation import battles as bt

# --------------------------------------------------------------------------------------------------
# Verdict parsing
# --------------------------------------------------------------------------------------------------

JUDGE_TEXTS = [
    # A judgment as GPT-4-style judges write them: its own answer, then the comparison, then the label.
    (
        "My answer: the capital is Canberra.\n\nAssistant A says Sydney, which is wrong. Assistant B gives "
        "Canberra with a short explanation.\n\nMy final verdict is: [[B>>A]]",
        "B>>A",
    ),
    # The format restated before the answer: the last label counts.
    (
        "I must output one of [[A>>B]], [[A>B]], [[A=B]], [[B>A]], [[B>>A]].\n... Both are correct and "
        "equally concise. Final verdict: [[A=B]]",
        "A=B",
    ),
    ("Verdict: [[ A > B ]].", "A>B"),
    ("[[B=A]]", "A=B"),
    ("Assistant A is slightly better: [[A>B]]\n\nCorrection after rereading: [[A>>B]]", "A>>B"),
    ("[[A>B]] and then a broken one [[A>A]]", "A>B"),  # a label naming one side twice is no verdict
    # Malformed: no verdict.
    ("My final verdict is A>B.", None),
    ("Final verdict: [A>>B]", None),
    ("[[A>>>B]]", None),
    ("[[C>A]]", None),
    ("[[A<B]]", None),
    ("Los dos asistentes responden bien; no puedo decidir.", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize("text,label", JUDGE_TEXTS)
def test_parse_verdict_on_judge_style_texts(text, label):
    assert bt.parse_verdict(text) == label


def test_battles_from_judgments_scores_weights_and_counts_the_unparsed():
    records = [
        {
            "question_id": "q1",
            "model_a": "base",
            "model_b": "m",
            "game": 1,
            "judgment": "[[B>>A]]",
            "language": "de",
        },
        {
            "question_id": "q1",
            "model_a": "m",
            "model_b": "base",
            "game": 2,
            "judgment": "no label",
            "language": "de",
        },
        {"question_id": "q2", "model_a": "base", "model_b": "m", "game": 1, "verdict": "A=B"},
    ]
    battles, unparsed = bt.battles_from_judgments(records)
    assert [(b.question_id, b.score_a, b.weight, b.score_of("m")) for b in battles] == [
        ("q1", 0.0, 3.0, 1.0),
        ("q2", 0.5, 1.0, 0.5),
    ]
    assert unparsed == [bt.Unparsed("q1", "m", "base", "de", 2)]
    with pytest.raises(ValueError, match=r"judgment 0: missing field\(s\) \['model_b'\]"):
        bt.battles_from_judgments([{"question_id": "q", "model_a": "x", "verdict": "A>B"}])
    with pytest.raises(ValueError, match="judgment 0: verdict 'A>>>B' is not one of"):
        bt.battles_from_judgments([{"question_id": "q", "model_a": "x", "model_b": "y", "verdict": "A>>>B"}])


# --------------------------------------------------------------------------------------------------
# Win rate
# --------------------------------------------------------------------------------------------------


def _random_games(rng, questions=40, languages=("de", "ja", "sw"), p_unparsed=0.1):
    """Two games per question (positions swapped) between model "m" and "base", random labels."""
    labels = list(bt.LABELS)
    records = []
    for lang in languages:
        for q in range(questions):
            for game, (a, b) in enumerate((("base", "m"), ("m", "base")), start=1):
                text = "unparseable" if rng.random() < p_unparsed else f"[[{labels[rng.integers(5)]}]]"
                records.append(
                    {"question_id": f"{lang}-{q}", "language": lang, "game": game, "model_a": a, "model_b": b,
                     "judgment": text}
                )  # fmt: skip
    return records


def test_win_rate_and_interval_match_a_numpy_rederivation():
    rng = np.random.default_rng(0)
    battles, unparsed = bt.battles_from_judgments(_random_games(rng))
    result = bt.win_rates_by_language(battles, "m", "base", unparsed=unparsed, rounds=200, seed=7)
    assert set(result) == {"de", "ja", "sw", "overall"}
    for language, wr in result.items():
        mine = [b for b in battles if language in ("overall", b.language)]
        qs = sorted({b.question_id for b in mine})
        # m's score per game, from the labels alone: A-side labels mean "base" won when base is A.
        m_score = {id(b): b.score_a if b.model_a == "m" else 1 - b.score_a for b in mine}
        num = np.array([sum(b.weight * m_score[id(b)] for b in mine if b.question_id == q) for q in qs])
        den = np.array([sum(b.weight for b in mine if b.question_id == q) for q in qs])
        np.testing.assert_allclose(wr.win_rate.mean, num.sum() / den.sum(), rtol=1e-12)
        idx = np.random.default_rng(7).integers(0, len(qs), size=(200, len(qs)))
        reps = num[idx].sum(axis=1) / den[idx].sum(axis=1)
        low, high = np.quantile(reps, [0.025, 0.975])
        np.testing.assert_allclose([wr.win_rate.low, wr.win_rate.high], [low, high], rtol=1e-12)
        assert wr.win_rate.n == len(qs)
        assert wr.games == len(mine)
        assert wr.unparsed == sum(1 for u in unparsed if language in ("overall", u.language))
        wins = sum(b.weight for b in mine if b.score_of("m") == 1.0)
        ties = sum(b.weight for b in mine if b.score_a == 0.5)
        assert (wr.wins, wr.ties, wr.losses) == (wins, ties, den.sum() - wins - ties)
    # Rerun with the same seed: the same interval (arena-hard-auto's bootstrap is unseeded).
    again = bt.win_rate(battles, "m", "base", rounds=200, seed=7)
    assert again.win_rate == result["overall"].win_rate


def test_a_question_with_one_unparsed_game_keeps_its_other_game():
    battles, unparsed = bt.battles_from_judgments(
        [
            {"question_id": "q1", "model_a": "base", "model_b": "m", "game": 1, "judgment": "[[B>A]]"},
            {"question_id": "q1", "model_a": "m", "model_b": "base", "game": 2, "judgment": "I cannot tell."},
            {"question_id": "q2", "model_a": "base", "model_b": "m", "game": 1, "judgment": "[[A>>B]]"},
            {"question_id": "q2", "model_a": "m", "model_b": "base", "game": 2, "judgment": "[[B>A]]"},
        ]
    )
    wr = bt.win_rate(battles, "m", "base", unparsed=unparsed, rounds=50)
    assert wr.win_rate.n == 2 and wr.games == 3 and wr.unparsed == 1
    assert wr.win_rate.mean == pytest.approx(1.0 / 5.0)  # q1: 1 of weight 1; q2: 0 of weights 3 + 1


# --------------------------------------------------------------------------------------------------
# Bradley–Terry
# --------------------------------------------------------------------------------------------------

MODELS = ["aya", "base", "gemma", "llama"]
STRENGTH = {"aya": 1.2, "base": 0.0, "gemma": 0.6, "llama": -0.4}  # log-odds


def _bt_battles(rng, n=600, ties=True, strength=STRENGTH, mean_length=None, length_bias=0.0):
    """Random battles from the Bradley–Terry model with `strength`; with `mean_length`, every answer gets a
    length (its model's mean + N(0, 1)) and the judge adds length_bias x (A's length - B's) to the log-odds. Returns the
    battles and the per-battle length differences."""
    out, diffs = [], []
    for i in range(n):
        a, b = (str(m) for m in rng.choice(MODELS, size=2, replace=False))
        logit = strength[a] - strength[b]
        diff = 0.0
        if mean_length is not None:
            diff = (mean_length[a] + rng.normal()) - (mean_length[b] + rng.normal())
            logit += length_bias * diff
        p = 1.0 / (1.0 + math.exp(-logit))
        u = rng.random()
        if ties and abs(u - p) < 0.1:
            score, weight = 0.5, 1.0
        else:
            score = 1.0 if u < p else 0.0
            weight = 3.0 if rng.random() < 0.3 else 1.0
        out.append(bt.Battle(f"q{i // 2}", a, b, score, weight))
        diffs.append(diff)
    return out, diffs


def _choix_pairs(battles):
    """(winner, loser) index pairs for choix: a battle of weight w is 2w pairs, a tie w pairs each way (so the
    doubled likelihood has the same maximiser)."""
    index = {m: i for i, m in enumerate(MODELS)}
    pairs = []
    for b in battles:
        a, c, w = index[b.model_a], index[b.model_b], int(b.weight)
        if b.score_a == 0.5:
            pairs += [(a, c)] * w + [(c, a)] * w
        else:
            pairs += [(a, c) if b.score_a == 1.0 else (c, a)] * (2 * w)
    return pairs


@pytest.mark.parametrize("ties", [False, True])
def test_bradley_terry_matches_choix_maximum_likelihood(ties):
    battles, _ = _bt_battles(np.random.default_rng(1), ties=ties)
    fit = bt.bradley_terry(battles, anchor="base")
    assert fit.ratings["base"] == 1000.0
    ref = choix.opt_pairwise(len(MODELS), _choix_pairs(battles), alpha=0.0, tol=1e-10)
    ref = ref - ref[MODELS.index("base")]  # choix centres its parameters; anchor them as ours
    ours = np.array([(fit.ratings[m] - 1000.0) * math.log(10) / 400.0 for m in MODELS])
    np.testing.assert_allclose(ours, ref, atol=1e-4)  # log-odds units; choix's tolerance is far below this
    # The headline score: predicted win rate against the anchor.
    assert fit.win_probability("aya", "base") == pytest.approx(1 / (1 + math.exp(-ours[0])), rel=1e-12)


def test_bradley_terry_without_anchor_centres_on_1000_and_refuses_what_has_no_mle():
    battles, _ = _bt_battles(np.random.default_rng(2), n=200)
    fit = bt.bradley_terry(battles)
    assert np.mean(list(fit.ratings.values())) == pytest.approx(1000.0)
    anchored = bt.bradley_terry(battles, anchor="gemma")
    for m in MODELS:  # the same differences, only shifted
        assert fit.ratings[m] - fit.ratings["gemma"] == pytest.approx(anchored.ratings[m] - 1000.0, abs=1e-8)
    sweep = [bt.Battle(f"q{i}", "aya", "base", 1.0) for i in range(5)] + [
        bt.Battle("r", "base", "llama", 0.5)
    ]
    with pytest.raises(
        ValueError,
        match=r"no finite maximum-likelihood ratings \(a model wins or loses every battle: \['aya'\]",
    ):
        bt.bradley_terry(sweep)
    apart = [bt.Battle("q", "aya", "base", 1.0), bt.Battle("r", "gemma", "llama", 0.5)]
    with pytest.raises(ValueError, match=r"separate groups \[\['aya', 'base'\], \['gemma', 'llama'\]\]"):
        bt.bradley_terry(apart)
    finite = bt.bradley_terry(sweep, l2=1e-3)
    assert finite.ratings["aya"] > finite.ratings["base"]
    with pytest.raises(ValueError, match="anchor 'gpt' is in no battle"):
        bt.bradley_terry(sweep, anchor="gpt")


def test_style_control_with_a_single_feature_removes_a_length_bias():
    """Equal models; the judge prefers longer answers and "llama" writes longer ones: without style control it
    rates far above the others; with the length feature alone the ratings are close to equal and the length
    coefficient is clearly positive."""
    equal = {m: 0.0 for m in MODELS}
    mean_length = {"aya": 0.0, "base": 0.0, "gemma": 0.0, "llama": 1.5}
    battles, diff = _bt_battles(
        np.random.default_rng(3), n=3000, ties=False, strength=equal, mean_length=mean_length, length_bias=1.0
    )
    plain = bt.bradley_terry(battles, anchor="base")
    styled = bt.bradley_terry(battles, anchor="base", style={"length": diff})
    assert plain.ratings["llama"] - 1000.0 > 150.0
    assert all(abs(r - 1000.0) < 40.0 for r in styled.ratings.values())
    assert styled.style["length"] > 0.5
    with pytest.raises(ValueError, match=r"style feature\(s\) \['markdown'\] are zero in every battle"):
        bt.bradley_terry(battles, style={"length": diff, "markdown": [0.0] * len(battles)})


def test_bootstrap_bradley_terry_is_seeded_and_brackets_the_fit():
    battles, _ = _bt_battles(np.random.default_rng(4), n=300)
    one = bt.bootstrap_bradley_terry(battles, anchor="base", rounds=30, seed=5)
    two = bt.bootstrap_bradley_terry(battles, anchor="base", rounds=30, seed=5)
    assert one == two
    assert one["failed_rounds"] == {"count": 0, "rounds": 30}
    for m in MODELS:
        r = one[m]["rating"]
        assert r.low <= r.mean <= r.high
        w = one[m]["win_rate_vs_anchor"]
        assert 0.0 <= w.low <= w.mean <= w.high <= 1.0
    assert one["aya"]["rating"].low > one["llama"]["rating"].high  # 1.6 log-odds apart over 300 battles


# --------------------------------------------------------------------------------------------------
# Elo and its reliability
# --------------------------------------------------------------------------------------------------


def test_elo_update_written_out():
    units = [("x", "y", 1.0), ("y", "z", 0.5), ("z", "x", 0.0)]
    ra = rb = rc = 1000.0
    k = 32.0
    e = 1 / (1 + 10 ** ((rb - ra) / 400))  # x beats y
    ra, rb = ra + k * (1 - e), rb - k * (1 - e)
    e = 1 / (1 + 10 ** ((rc - rb) / 400))  # y ties z
    rb, rc = rb + k * (0.5 - e), rc - k * (0.5 - e)
    e = 1 / (1 + 10 ** ((ra - rc) / 400))  # z loses to x
    rc, ra = rc + k * (0.0 - e), ra - k * (0.0 - e)
    got = bt.elo(units, k)
    np.testing.assert_allclose([got["x"], got["y"], got["z"]], [ra, rb, rc], rtol=1e-14)


def test_elo_reliability_on_a_clear_order_and_on_a_cycle():
    rng = np.random.default_rng(6)
    clear, _ = _bt_battles(rng, n=300, ties=False)
    rel = bt.elo_reliability(clear, ks=(1, 16, 64), permutations=40, seed=0)
    assert rel == bt.elo_reliability(clear, ks=(1, 16, 64), permutations=40, seed=0)
    assert rel["bradley_terry_ranking"] == ["aya", "gemma", "base", "llama"]
    sd = [np.mean(list(rel["by_k"][k]["rating_sd"].values())) for k in ("1", "16", "64")]
    assert sd[0] < sd[1] < sd[2]  # a larger K follows the last battles more: the order matters more
    assert rel["by_k"]["16"]["modal_ranking"] == ["aya", "gemma", "base", "llama"]
    assert 0.0 < rel["by_k"]["64"]["modal_ranking_share"] <= rel["by_k"]["1"]["modal_ranking_share"] <= 1.0
    assert rel["by_k"]["16"]["transitivity"]["cyclic_triples"] == 0
    assert rel["by_k"]["16"]["transitivity"]["triples"] == 4

    # Rock, paper, scissors: every pair has a strict majority and the three form a cycle; some pair's Elo order
    # must then contradict its head-to-head.
    cycle = [
        bt.Battle(f"{a}{b}{i}", a, b, 1.0 if i < 3 else 0.0) for a, b in ("rp", "ps", "sr") for i in range(4)
    ]
    t = bt.elo_reliability(cycle, ks=(8,), permutations=10)["by_k"]["8"]["transitivity"]
    assert (t["triples"], t["cyclic_triples"]) == (1, 1)
    assert t["rating_order_violations"] >= 1


def test_elo_refuses_fractional_weights():
    with pytest.raises(ValueError, match="whole numbers"):
        bt.elo_reliability([bt.Battle("q", "a", "b", 1.0, weight=1.5)], permutations=2)


# --------------------------------------------------------------------------------------------------
# A judgment log -> one report (and the eval_battles job)
# --------------------------------------------------------------------------------------------------


def _log(tmp_path, rng, n_questions=30):
    """Two games per question for each of "aya" and "gemma" against "base", in two languages; aya mostly wins,
    some judgments without a label."""
    lines = []
    for model, p_win in (("aya", 0.75), ("gemma", 0.45)):
        for q in range(n_questions):
            lang = "sw" if q % 2 else "tr"
            for game, (a, b) in enumerate((("base", model), (model, "base")), start=1):
                won = rng.random() < p_win
                label = ("B>A" if won else "A>B") if a == "base" else ("A>B" if won else "B>A")
                text = "I am not sure." if rng.random() < 0.05 else f"Reasoning... [[{label}]]"
                lines.append({"question_id": f"{lang}{q}", "language": lang, "game": game, "model_a": a,
                              "model_b": b, "judgment": text})  # fmt: skip
    path = tmp_path / "judgments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path, lines


def test_evaluate_a_log_reports_win_rates_ratings_and_elo(tmp_path):
    path, lines = _log(tmp_path, np.random.default_rng(8))
    records = bt.read_judgments(path)
    assert records == lines
    results = bt.evaluate(records, baseline="base", ks=(4, 32), permutations=20, bt_rounds=20, rounds=100)
    parsed, unparsed = bt.battles_from_judgments(records)
    assert (results["parsed"], results["unparsed"]) == (len(parsed), len(unparsed))
    assert set(results["win_rates"]) == {"aya", "gemma"}
    direct = bt.win_rate(parsed, "aya", "base", unparsed=unparsed, rounds=100)
    assert results["win_rates"]["aya"]["overall"] == direct.as_dict()
    ratings = results["bradley_terry"]["ratings"]
    assert ratings["base"]["rating"]["mean"] == pytest.approx(1000.0)
    assert ratings["aya"]["rating"]["mean"] > ratings["gemma"]["rating"]["mean"]
    assert set(results["elo"]["by_k"]) == {"4", "32"}
    text = bt.markdown(results)
    assert (
        "## aya vs base: win rate" in text
        and "| overall |" in text
        and "## Elo over 20 random orders" in text
    )


def test_read_judgments_names_the_bad_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(
        '{"question_id": "q", "model_a": "x", "model_b": "y", "verdict": "A>B"}\n{"question_id": \n'
    )
    with pytest.raises(ValueError, match=r"j.jsonl:2: not valid JSON"):
        bt.read_judgments(path)
    path.write_text('\n{"question_id": "q", "model_a": "x", "verdict": "A>B"}\n')
    with pytest.raises(ValueError, match=r"j.jsonl:2: missing field\(s\) \['model_b'\]"):
        bt.read_judgments(path)
    with pytest.raises(FileNotFoundError, match="no judgments file at"):
        bt.read_judgments(tmp_path / "missing.jsonl")


def test_eval_battles_job_writes_results_markdown_and_plots(tmp_path, capsys):
    from aya_jax import jobs  # noqa: PLC0415 - the job registry (jax) only for this test
    from configs import eval_battles  # noqa: PLC0415

    path, _ = _log(tmp_path, np.random.default_rng(9))
    config = eval_battles.get_config()
    config.eval.judgments = str(path)
    config.eval.baseline = "base"
    config.eval.elo_k = (4, 16)
    config.eval.elo_permutations = 10
    config.eval.bt_rounds = 10
    config.eval.rounds = 100
    summary = jobs.get_job("eval_battles")(config, str(tmp_path / "out"))
    out = tmp_path / "out" / "battles"
    for name in ("results.json", "results.md", "win_rate_by_language.png", "elo_by_k.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["models"] == ["aya", "base", "gemma"]
    assert "win rate vs base: aya" in summary.headline
    assert str(out / "results.md") in capsys.readouterr().out

    config.eval.baseline = "gpt-4"
    with pytest.raises(ValueError, match=r"config.eval.baseline: baseline 'gpt-4' is in no battle"):
        jobs.get_job("eval_battles")(config, str(tmp_path / "out2"))
    config.eval.baseline, config.eval.judgments = "base", str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=r"config.eval.judgments: no judgments file at"):
        jobs.get_job("eval_battles")(config, str(tmp_path / "out3"))
