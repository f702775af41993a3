"""The M-RewardBench evaluator on files written in the published layout, scored by small deterministic reward
callables: the aggregation against a hand-computed table, the intervals against a NumPy re-derivation, the
readers' errors."""

import gzip
import json
import math
import pathlib

import endpoint as endpoint_lib  # tests/endpoint.py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aya_jax import plots
from aya_jax.data.sources import DataError
from aya_jax.evaluation import m_rewardbench as mrb
from aya_jax.evaluation.rows import KeyedLog

# Outcomes: R = chosen scores higher (right), W = rejected higher (wrong), T = a tie (wrong: strict rule).
SCORES = {"R": (2.0, 1.0), "W": (1.0, 2.0), "T": (1.5, 1.5)}

# Texts in several scripts; each completion ends with "#<score>", which the reward below reads back.
TEXT = {
    "deu_Latn": ("Wie koche ich Kaffee?", "Mahlen Sie die Bohnen fein.", "Kaffee ist ungesund."),
    "jpn_Jpan": ("コーヒーの淹れ方は？", "豆を細かく挽いてください。", "コーヒーは体に悪いです。"),
    "eng_Latn": ("How do I brew coffee?", "Grind the beans finely.", "Coffee is bad for you."),
    "translation": ("Übersetze: 你好，世界", "Hello, world", "Hi, earth"),
}

# language -> [(subset, outcomes)]; the hand-computed expectations are in test_aggregation_by_hand.
LAYOUT = {
    "deu_Latn": [
        ("alpacaeval-easy", "RRRT"),
        ("mt-bench-med", "RW"),
        ("llmbar-natural", "RRW"),
        ("donotanswer", "RR"),
        ("xstest-should-respond", "WT"),
        ("math-prm", "RW"),
        ("hep-python", "RRR"),
        ("hep-go", "W"),
    ],
    "jpn_Jpan": [  # no Reasoning subset: the score is over three categories
        ("alpacaeval-hard", "R"),
        ("mt-bench-easy", "WWR"),
        ("mt-bench-hard", "TT"),
        ("refusals-dangerous", "RRR"),
        ("refusals-offensive", "W"),
    ],
    "eng_Latn": [
        ("alpacaeval-easy", "RR"),
        ("llmbar-adver-manual", "R"),
        ("donotanswer", "R"),
        ("hep-cpp", "W"),
    ],
    "translation": [("de-en-easy", "RW"), ("zh-en-hard", "R")],
}


def rows(language: str, *, column: str = "subset") -> list[dict]:
    prompt, good, bad = TEXT[language]
    out = []
    for subset, outcomes in LAYOUT[language]:
        for k, code in enumerate(outcomes):
            c, r = SCORES[code]
            out.append(
                {
                    "id": len(out) + 100,  # an int, as in the published parquet
                    "language": language,
                    "prompt": f"{prompt} ({subset} {k})",
                    "chosen": f"{good} #{c}",
                    "rejected": f"{bad} #{r}",
                    "chosen_model": "model-a",
                    "rejected_model": "model-b",
                    column: subset,
                }
            )
    return out


def write_parquet(path: pathlib.Path, table_rows: list[dict]) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(table_rows), path)
    return path


def marked_reward(prompts: list[str], completions: list[str]) -> np.ndarray:
    """The score written at the end of each completion."""
    assert len(prompts) == len(completions)
    return np.array([float(c.rsplit("#", 1)[1]) for c in completions])


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """The published layout: deu_Latn as two parquet shards with the `source` column, jpn_Jpan as jsonl with
    `subset`, eng_Latn as one parquet with `subset`, translation as jsonl with `source`."""
    root = tmp_path / "m-rewardbench"
    deu = rows("deu_Latn", column="source")
    write_parquet(root / "deu_Latn" / "test-00000-of-00002.parquet", deu[:10])
    write_parquet(root / "deu_Latn" / "test-00001-of-00002.parquet", deu[10:])
    mrb.write_jsonl(root / "jpn_Jpan" / "test.jsonl", rows("jpn_Jpan"))
    write_parquet(root / "eng_Latn" / "test-00000-of-00001.parquet", rows("eng_Latn"))
    mrb.write_jsonl(root / "translation" / "test.jsonl", rows("translation", column="source"))
    return root


def test_aggregation_by_hand(data_dir):
    pairs = mrb.read(data_dir)
    assert [len([p for p in pairs if p.language == c]) for c in ("deu_Latn", "jpn_Jpan", "eng_Latn")] == [
        19,
        10,
        5,
    ]
    results = mrb.evaluate(pairs, marked_reward, rounds=200)
    langs = results["languages"]
    assert list(langs) == ["deu_Latn", "jpn_Jpan", "eng_Latn"]  # translation is not a language row

    # deu_Latn
    #   Chat      alpacaeval-easy 3/4 (the tie is wrong), mt-bench-med 1/2 -> (4*3/4 + 2*1/2)/6 = 4/6
    #   Chat-Hard llmbar-natural 2/3                                       -> 2/3
    #   Safety    donotanswer 2/2, xstest-should-respond 0/2               -> (2*1 + 2*0)/4 = 1/2
    #   Reasoning math-prm 1/2, hep-python 3/3, hep-go 0/1; code pooled 3/4; math-prm weighted as the 4 code
    #             pairs -> (4*1/2 + 3*1 + 1*0)/(4 + 3 + 1) = 5/8 = 0.625 (pooled over items would be 4/6)
    #   score = (2/3 + 2/3 + 1/2 + 5/8)/4 = 59/96
    deu = langs["deu_Latn"]
    assert deu["subsets"]["alpacaeval-easy"] == {"category": "Chat", "accuracy": 0.75, "n": 4, "correct": 3}
    assert deu["subsets"]["xstest-should-respond"]["accuracy"] == 0.0
    assert {c: v["accuracy"] for c, v in deu["categories"].items()} == pytest.approx(
        {"Chat": 4 / 6, "Chat-Hard": 2 / 3, "Safety": 0.5, "Reasoning": 0.625}
    )
    assert deu["categories"]["Reasoning"]["weights"] == {"hep-go": 1, "hep-python": 3, "math-prm": 4}
    assert deu["score"]["mean"] == pytest.approx(59 / 96)
    assert deu["n"] == 19 and deu["missing_categories"] == []

    # jpn_Jpan
    #   Chat      alpacaeval-hard 1/1, mt-bench-easy 1/3 -> 2/4 = 1/2
    #   Chat-Hard mt-bench-hard 0/2 (two ties)         -> 0
    #   Safety    refusals-dangerous 3/3, refusals-offensive 0/1 -> 3/4
    #   no Reasoning: score = (1/2 + 0 + 3/4)/3 = 5/12
    jpn = langs["jpn_Jpan"]
    assert {c: v["accuracy"] for c, v in jpn["categories"].items()} == pytest.approx(
        {"Chat": 0.5, "Chat-Hard": 0.0, "Safety": 0.75}
    )
    assert jpn["score"]["mean"] == pytest.approx(5 / 12)
    assert jpn["missing_categories"] == ["Reasoning"]
    assert any("jpn_Jpan" in note and "Reasoning" in note for note in results["notes"])

    # eng_Latn: Chat 1, Chat-Hard 1, Safety 1, Reasoning 0 -> 3/4; reported, not averaged
    assert langs["eng_Latn"]["score"]["mean"] == pytest.approx(0.75)
    assert results["english"]["mean"] == pytest.approx(0.75)

    # average over deu and jpn only: (59/96 + 40/96)/2 = 99/192 = 0.515625 (with English it would be 0.59375)
    assert results["average"]["mean"] == pytest.approx(99 / 192)
    assert results["average"]["languages"] == ["deu_Latn", "jpn_Jpan"]
    assert results["average"]["n"] == 29

    # translation, apart: de-en-easy 1/2, zh-en-hard 1/1, pooled 2/3
    t = results["translation"]
    assert t["subsets"] == {
        "de-en-easy": {"accuracy": 0.5, "n": 2, "correct": 1},
        "zh-en-hard": {"accuracy": 1.0, "n": 1, "correct": 1},
    }
    assert t["accuracy"]["mean"] == pytest.approx(2 / 3)

    # every pair pooled: deu 12/19 + jpn 5/10 + eng 4/5 + translation 2/3 = 23/37
    assert results["accuracy"] == pytest.approx(23 / 37)
    assert results["n"] == 37 and results["rounds"] == 200 and results["confidence"] == 0.95
    first = results["pairs"][0]
    assert first == {
        "id": "100",
        "language": "deu_Latn",
        "subset": "alpacaeval-easy",
        "score_chosen": 2.0,
        "score_rejected": 1.0,
        "correct": True,
    }
    assert [r["correct"] for r in results["pairs"]].count(True) == 23
    json.dumps(results, allow_nan=False)  # JSON-ready


def reference_macro(groups: dict[str, list[float]], weights: dict[str, float], *, rounds, confidence, seed):
    """The weighted stratified percentile bootstrap, from scratch: groups visited in sorted key order, each
    resampled within itself with `default_rng(seed).integers`, replicate = sum of weight * resampled mean."""
    rng = np.random.default_rng(seed)
    replicates = np.zeros(rounds)
    for key in sorted(groups):
        x = np.asarray(groups[key], dtype=np.float64)
        replicates += weights[key] * x[rng.integers(0, x.size, size=(rounds, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    mean = sum(weights[k] * np.mean(v) for k, v in groups.items())
    return mean, low, high


def test_bootstrap_intervals_match_numpy(data_dir):
    rounds, confidence, seed = 300, 0.9, 7
    results = mrb.evaluate(mrb.read(data_dir), marked_reward, rounds=rounds, confidence=confidence, seed=seed)
    records = results["pairs"]

    def strata(language: str) -> dict[str, list[float]]:
        # categories, with math-prm its own stratum beside the code subsets (deu has both)
        out: dict[str, list[float]] = {}
        for r in records:
            if r["language"] == language:
                key = mrb.CATEGORIES[r["subset"]] + (":math-prm" if r["subset"] == "math-prm" else "")
                out.setdefault(key, []).append(float(r["correct"]))
        return out

    # deu: Chat, Chat-Hard, Safety 1/4 each; Reasoning = 1/2 code + 1/2 math-prm -> 1/8 each
    deu_w = {
        "Chat": 1 / 4,
        "Chat-Hard": 1 / 4,
        "Safety": 1 / 4,
        "Reasoning": 1 / 8,
        "Reasoning:math-prm": 1 / 8,
    }
    jpn_w = {"Chat": 1 / 3, "Chat-Hard": 1 / 3, "Safety": 1 / 3}
    for language, weights in (("deu_Latn", deu_w), ("jpn_Jpan", jpn_w)):
        mean, low, high = reference_macro(
            strata(language), weights, rounds=rounds, confidence=confidence, seed=seed
        )
        got = results["languages"][language]["score"]
        assert got["mean"] == pytest.approx(mean)
        assert (got["low"], got["high"]) == pytest.approx((low, high), rel=1e-12, abs=1e-12)
        assert got["low"] <= got["mean"] <= got["high"]

    # the multilingual average: groups "<language>/<stratum>", each language weighted 1/2
    groups = {f"{c}/{k}": v for c in ("deu_Latn", "jpn_Jpan") for k, v in strata(c).items()}
    weights = {f"deu_Latn/{k}": w / 2 for k, w in deu_w.items()} | {
        f"jpn_Jpan/{k}": w / 2 for k, w in jpn_w.items()
    }
    mean, low, high = reference_macro(groups, weights, rounds=rounds, confidence=confidence, seed=seed)
    got = results["average"]
    assert got["mean"] == pytest.approx(mean) == pytest.approx(99 / 192)
    assert (got["low"], got["high"]) == pytest.approx((low, high), rel=1e-12, abs=1e-12)

    # translation: the plain percentile bootstrap of the pooled accuracy
    x = np.array([r["correct"] for r in records if r["language"] == "translation"], dtype=np.float64)
    replicates = x[np.random.default_rng(seed).integers(0, x.size, size=(rounds, x.size))].mean(axis=1)
    low, high = np.quantile(replicates, [0.05, 0.95])
    assert (results["translation"]["accuracy"]["low"], results["translation"]["accuracy"]["high"]) == (
        pytest.approx(low),
        pytest.approx(high),
    )


def test_source_and_subset_columns_both_accepted(tmp_path):
    a = mrb.write_jsonl(tmp_path / "a" / "deu_Latn" / "test.jsonl", rows("deu_Latn", column="source"))
    write_parquet(
        tmp_path / "b" / "deu_Latn" / "test-00000-of-00001.parquet", rows("deu_Latn", column="subset")
    )
    from_source, from_subset = mrb.read(tmp_path / "a"), mrb.read(tmp_path / "b")
    assert (
        [p.subset for p in from_source]
        == [p.subset for p in from_subset]
        == [s for s, outcomes in LAYOUT["deu_Latn"] for _ in outcomes]
    )
    assert from_source[0].file == str(a) and from_source[0].row == 1 and from_subset[-1].row == 19
    assert from_source[0].chosen_model == "model-a" and from_source[0].id == "100"


def test_languages_selection_and_single_file_roundtrip(data_dir, tmp_path):
    only = mrb.read(data_dir, ["jpn_Jpan", "eng_Latn"])
    assert {p.language for p in only} == {"jpn_Jpan", "eng_Latn"}
    everything = mrb.read(data_dir)
    path = mrb.write_jsonl(tmp_path / "held_out.jsonl", everything)  # Pairs; dicts work too (rows() above)
    again = mrb.read(path)
    strip = lambda ps: [p.as_dict() for p in ps]
    assert strip(again) == strip(everything)
    assert again[0].file == str(path) and again[0].row == 1
    assert strip(mrb.read(path, ["eng_Latn"])) == strip(p for p in everything if p.language == "eng_Latn")


def test_batches_and_progress_give_the_same_results(data_dir):
    pairs = mrb.read(data_dir)
    calls: list[int] = []
    done: list[int] = []

    def counting(prompts, completions):
        calls.append(len(prompts))
        return marked_reward(prompts, completions)

    batched = mrb.evaluate(pairs, counting, batch=8, progress=done.append, rounds=50)
    assert calls == [16, 16, 16, 16, 10]  # 8 pairs a call, chosen and rejected together; 37 pairs
    assert done == [8, 8, 8, 8, 5]
    assert batched == mrb.evaluate(pairs, marked_reward, rounds=50)


def test_reward_errors(data_dir):
    pairs = mrb.read(data_dir)
    with pytest.raises(ValueError, match="shape"):
        mrb.evaluate(pairs, lambda p, c: np.zeros(3))
    with pytest.raises(ValueError, match="nan for pair"):
        mrb.evaluate(pairs, lambda p, c: np.full(len(c), math.nan))
    with pytest.raises(ValueError, match="no pairs"):
        mrb.evaluate([], marked_reward)


def test_constant_reward_scores_zero(data_dir):
    results = mrb.evaluate(mrb.read(data_dir), lambda p, c: np.ones(len(c)), rounds=20)
    assert results["accuracy"] == 0.0 and results["average"]["mean"] == 0.0  # every pair a tie: all wrong


def error_of(fn, *args) -> str:
    with pytest.raises(DataError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_input(tmp_path):
    bad = rows("deu_Latn")
    del bad[1]["chosen"]
    path = mrb.write_jsonl(tmp_path / "missing" / "deu_Latn" / "test.jsonl", bad)
    assert error_of(mrb.read, tmp_path / "missing") == f"{path}:2: field 'chosen' is missing"

    bad = rows("deu_Latn")
    bad[2]["rejected"] = "  "
    path = write_parquet(tmp_path / "empty" / "deu_Latn" / "test-00000-of-00001.parquet", bad)
    assert error_of(mrb.read, tmp_path / "empty") == f"{path}:3: field 'rejected' is empty"

    bad = rows("jpn_Jpan", column="source")
    bad[4]["source"] = "alpacaeval-medium"
    path = mrb.write_jsonl(tmp_path / "subset" / "jpn_Jpan" / "test.jsonl", bad)
    message = error_of(mrb.read, tmp_path / "subset")
    assert message.startswith(f"{path}:5: unknown subset 'alpacaeval-medium' in field 'source'")

    bad = rows("eng_Latn")
    bad[3]["language"] = "tlh_Latn"
    path = mrb.write_jsonl(tmp_path / "one_file.jsonl", bad)
    assert error_of(mrb.read, path).startswith(f"{path}:4: unknown language 'tlh_Latn' in field 'language'")
    del bad[3]["language"]
    path = mrb.write_jsonl(tmp_path / "one_file.jsonl", bad)
    assert error_of(mrb.read, path) == f"{path}:4: field 'language' is missing"

    ok = tmp_path / "ok"
    mrb.write_jsonl(ok / "deu_Latn" / "test.jsonl", rows("deu_Latn"))
    assert error_of(mrb.read, ok, ["deu_Latn", "xx_Latn"]).startswith("unknown language 'xx_Latn'")
    assert (
        error_of(mrb.read, ok, ["fra_Latn"]) == f"{ok / 'fra_Latn'}: missing folder for language 'fra_Latn'"
    )
    mrb.write_jsonl(ok / "ita_Latn" / "train.jsonl", rows("deu_Latn"))  # a split, but not `test`
    assert error_of(mrb.read, ok).startswith(f"{ok / 'ita_Latn'}: missing split 'test'")
    (ok / "ita_Latn" / "train.jsonl").unlink()
    (ok / "ita_Latn").rmdir()
    (ok / "klingon").mkdir()
    assert error_of(mrb.read, ok).startswith(f"{ok / 'klingon'}: unknown language folder 'klingon'")
    assert "no such folder" in error_of(mrb.read, tmp_path / "nowhere")


def test_markdown_and_heatmap(data_dir, tmp_path):
    results = mrb.evaluate(mrb.read(data_dir), marked_reward, rounds=50)
    text = mrb.markdown(results)
    assert "| language | Chat | Chat-Hard | Safety | Reasoning | score [95% CI] | n |" in text
    assert "| deu_Latn | 0.667 | 0.667 | 0.500 | 0.625 | 0.615 [" in text
    assert "| jpn_Jpan | 0.500 | 0.000 | 0.750 | — | 0.417 [" in text
    # the average row: per category the mean over deu and jpn having it; Reasoning from deu only
    assert "| **average** (excl. eng_Latn) | 0.583 | 0.333 | 0.625 | 0.625 | 0.516 [" in text
    assert "| zh-en-hard | 1.000 | 1 |" in text and "missing: Reasoning" in text
    png = plots.m_rewardbench_heatmap(results, tmp_path / "heatmap.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.shared_data
def test_real_english_pairs(shared_data, tmp_path):
    """Real Anthropic HH harmless pairs, in the layout as eng_Latn, scored by completion length."""
    with gzip.open(shared_data / "safety" / "hh_rlhf" / "harmless-base_test.jsonl.gz", "rt") as f:
        raw = [json.loads(next(f)) for _ in range(40)]
    split = lambda text: text.rsplit("\n\nAssistant:", 1)
    rows_ = [
        {
            "id": i,
            "language": "eng_Latn",
            "prompt": split(r["chosen"])[0],
            "chosen": split(r["chosen"])[1],
            "rejected": split(r["rejected"])[1],
            "subset": "refusals-dangerous",
        }
        for i, r in enumerate(raw)
        if split(r["chosen"])[1].strip() and split(r["rejected"])[1].strip()
    ]
    mrb.write_jsonl(tmp_path / "eng_Latn" / "test.jsonl", rows_)
    pairs = mrb.read(tmp_path)
    assert len(pairs) == len(rows_) > 30
    results = mrb.evaluate(pairs, lambda p, c: np.array([len(x) for x in c], dtype=float), rounds=50)
    expected = np.mean([len(r["chosen"]) > len(r["rejected"]) for r in rows_])
    assert results["languages"]["eng_Latn"]["categories"]["Safety"]["accuracy"] == pytest.approx(expected)
    assert results["english"]["mean"] == pytest.approx(expected)  # one category: score = Safety
    assert results["average"]["languages"] == [] and math.isnan(results["average"]["mean"])


# ---- a generative judge ---------------------------------------------------------------------------------------


def _marker_judge(items):
    """Reads the "#<score>" markers: [[A]] / [[B]] for the higher, no verdict on a tie."""
    out = []
    for it in items:
        a, b = (float(t.rsplit("#", 1)[1]) for t in (it.answer_a, it.answer_b))
        out.append("A is better. [[A]]" if a > b else "B is better. [[B]]" if b > a else "Both are equal.")
    return out


_marker_judge.name, _marker_judge.batch_size = "marker-judge", 5


def test_generative_judge_counts_an_unparsed_answer_half(data_dir, tmp_path):
    pairs = mrb.read(data_dir)
    cache = KeyedLog(tmp_path / "judgments.jsonl")
    got = mrb.evaluate_with_judge(pairs, _marker_judge, cache, rounds=100, seed=3)
    # The judge is right on R, wrong on W and gives no verdict on T (0.5; the strict reward rule counts it 0).
    code = {(p.language, p.prompt): o for lang in LAYOUT for p, o in zip(
        [q for q in pairs if q.language == lang], "".join(o for _, o in LAYOUT[lang]), strict=True)}  # fmt: skip
    expected = np.array([{"R": 1.0, "W": 0.0, "T": 0.5}[code[p.language, p.prompt]] for p in pairs])
    want = mrb.aggregate(pairs, expected, got["pairs"], rounds=100, seed=3)
    assert {k: v for k, v in got.items() if k not in ("unparsed", "judge")} == want
    assert got["unparsed"] == sum(o == "T" for _, outcomes in sum(LAYOUT.values(), []) for o in outcomes)
    assert got["judge"] == "marker-judge"


def test_generative_judge_swaps_positions_from_its_seed_and_reuses_its_cache(data_dir, tmp_path):
    pairs = mrb.read(data_dir)

    def always_a(items):
        return ["[[B]] ... on reflection, [[A]]" for _ in items]  # the last label counts

    always_a.name, always_a.batch_size = "always-a", 7
    path = tmp_path / "judgments.jsonl"
    got = mrb.evaluate_with_judge(pairs, always_a, KeyedLog(path), rounds=50, seed=11)
    swapped = np.random.default_rng(11).random(len(pairs)) < 0.5
    assert [r["chosen_as"] for r in got["pairs"]] == ["B" if s else "A" for s in swapped]
    assert [r["correct"] for r in got["pairs"]] == [0.0 if s else 1.0 for s in swapped]
    assert got["accuracy"] == pytest.approx(1.0 - swapped.mean())

    def must_not_be_called(items):
        raise AssertionError("every judgment is cached")

    must_not_be_called.name, must_not_be_called.batch_size = "always-a", 7
    again = mrb.evaluate_with_judge(pairs, must_not_be_called, KeyedLog(path), rounds=50, seed=11)
    assert again == got


def _marker_choice(user: str) -> str:
    """An endpoint judge over HTTP: reads the two answers' "#<score>" markers out of choice_messages' layout."""
    a = user.split("[The Start of Assistant A's Answer]\n", 1)[1].split("\n[The End", 1)[0]
    b = user.split("[The Start of Assistant B's Answer]\n", 1)[1].split("\n[The End", 1)[0]
    sa, sb = (float(t.rsplit("#", 1)[1]) for t in (a, b))
    return "[[A]]" if sa > sb else "[[B]]" if sb > sa else "They are the same to me."


def test_the_job_with_an_endpoint_judge_over_http(data_dir, tmp_path, capsys):
    pytest.importorskip("openai")
    from aya_jax import jobs  # noqa: PLC0415 - the job registry only here
    from configs import eval_m_rewardbench  # noqa: PLC0415

    config = eval_m_rewardbench.get_config()
    config.eval.data_dir, config.eval.rounds, config.eval.judge_model = str(data_dir), 100, "judge"
    with endpoint_lib.Endpoint(_marker_choice) as server:
        config.eval.judge_base_url = server.url
        summary = jobs.get_job("eval_m_rewardbench")(config, str(tmp_path / "run"))
        asked = sum(server.seen.values())
        rerun = jobs.get_job("eval_m_rewardbench")(config, str(tmp_path / "run"))  # every judgment cached
        assert sum(server.seen.values()) == asked
    pairs = mrb.read(data_dir)
    assert asked == len(pairs)
    direct = mrb.evaluate_with_judge(pairs, _marker_judge, KeyedLog(tmp_path / "j.jsonl"), rounds=100)
    assert summary.results["average"] == direct["average"] and rerun.results["average"] == direct["average"]
    assert "answers without a verdict" in summary.results["reward"]
    out = tmp_path / "run" / "m_rewardbench"
    assert (out / "judgments.jsonl").is_file() and (out / "results.md").is_file()

    config.eval.reward_model = "workdirs/reward"  # two scorers at once
    with pytest.raises(ValueError, match="config.eval.reward_model: set exactly one of reward_model"):
        jobs.get_job("eval_m_rewardbench")(config, str(tmp_path / "run2"))
