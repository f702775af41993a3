"""The perplexity analysis against an independent NumPy re-derivation and hand-computed literals, with
table-driven scorers (word-level "tokenizers" whose log-probs come from a table: the analysis, not a model,
is under test); reading the real NTREX-128 subset; bad inputs named in one line."""

import json
import math

import numpy as np
import pytest

from aya_jax import plots
from aya_jax.data.sources import DataError
from aya_jax.evaluation import perplexity as ppl
from aya_jax.evaluation import report

WORDS = {"a": 1, "b": 2, "c": 3, "d": 4, "é": 5, "日本": 6}
NAMES = {v: k for k, v in WORDS.items()}
LOGP_BEFORE = {1: -1.0, 2: -2.0, 3: -0.5, 4: -3.0, 5: -0.25, 6: -4.0}
LOGP_AFTER = {1: -1.5, 2: -1.5, 3: -1.5, 4: -3.0, 5: -0.25, 6: -4.0}


def table_scorer(logp: dict[int, float], words: dict[str, int] = WORDS):
    """Tokens = whitespace-separated words; each word's log-prob from `logp`, whatever precedes it."""

    def score(texts: list[str]) -> list[ppl.TokenScores]:
        out = []
        for text in texts:
            ids = np.asarray([words[w] for w in text.split()], np.int64)
            out.append(ppl.TokenScores(ids, np.asarray([logp[i] for i in ids], np.float64)))
        return out

    return score


TEXTS = {
    "xx": ["a b a", "c a", "d d d d", "b", "a c é"],
    "yy": ["日本 a", "b b c", "é é"],
    "zz": ["c", "a b c d 日本", "d a", "b c"],
}


def reference(texts_by_language, logp, rounds, confidence, seed):
    """Re-derived from the definitions: per-text NLL sums and token counts, the ratio bootstrap over texts."""
    alpha = (1 - confidence) / 2
    per = {}
    for lang, texts in texts_by_language.items():
        nll = np.array([-sum(logp[WORDS[w]] for w in t.split()) for t in texts])
        n = np.array([len(t.split()) for t in texts], float)
        nbytes = sum(len(t.encode()) for t in texts)
        idx = np.random.default_rng(seed).integers(0, len(texts), size=(rounds, len(texts)))
        reps = nll[idx].sum(1) / n[idx].sum(1)
        per[lang] = dict(
            nll=nll, n=n, bytes=nbytes, point=nll.sum() / n.sum(), q=np.quantile(reps, [alpha, 1 - alpha])
        )
    rng = np.random.default_rng(seed)
    num, den, ratios = 0.0, 0.0, []
    for lang in sorted(per):
        p = per[lang]
        idx = rng.integers(0, p["nll"].size, size=(rounds, p["nll"].size))
        s, t = p["nll"][idx].sum(1), p["n"][idx].sum(1)
        num, den = num + s, den + t
        ratios.append(s / t)
    micro_q = np.quantile(num / den, [alpha, 1 - alpha])
    macro_q = np.quantile(np.mean(ratios, 0), [alpha, 1 - alpha])
    return per, micro_q, macro_q


def test_perplexity_matches_numpy_rederivation():
    rounds, confidence, seed = 400, 0.9, 7
    res = ppl.perplexity(TEXTS, table_scorer(LOGP_BEFORE), rounds=rounds, confidence=confidence, seed=seed)
    per, micro_q, macro_q = reference(TEXTS, LOGP_BEFORE, rounds, confidence, seed)
    assert res["kind"] == "perplexity" and list(res["languages"]) == ["xx", "yy", "zz"]
    for lang, p in per.items():
        got = res["languages"][lang]
        assert (got["texts"], got["tokens"], got["bytes"]) == (len(TEXTS[lang]), p["n"].sum(), p["bytes"])
        assert got["nll"]["mean"] == pytest.approx(p["point"], abs=1e-12)
        assert (got["nll"]["low"], got["nll"]["high"]) == pytest.approx(tuple(p["q"]), abs=1e-12)
        assert got["perplexity"]["mean"] == pytest.approx(math.exp(p["point"]), rel=1e-12)
        assert got["perplexity"]["low"] == pytest.approx(math.exp(p["q"][0]), rel=1e-12)
        assert got["perplexity"]["high"] == pytest.approx(math.exp(p["q"][1]), rel=1e-12)
        assert got["bits_per_byte"] == pytest.approx(p["nll"].sum() / math.log(2) / p["bytes"], rel=1e-12)
        assert got["nll"]["low"] <= got["nll"]["mean"] <= got["nll"]["high"]
    # "xx" by hand: NLL sums 4, 1.5, 12, 2, 1.75 over 3+2+4+1+3 tokens; bytes 5+3+7+1+6 ("é" is 2 bytes)
    assert res["languages"]["xx"]["nll"]["mean"] == pytest.approx(21.25 / 13)
    assert res["languages"]["xx"]["bits_per_byte"] == pytest.approx(21.25 / math.log(2) / 22)

    micro, macro = res["overall"]["micro"], res["overall"]["macro"]
    all_nll = sum(p["nll"].sum() for p in per.values())
    all_tok = sum(p["n"].sum() for p in per.values())
    all_bytes = sum(p["bytes"] for p in per.values())
    assert (micro["texts"], micro["tokens"], micro["bytes"]) == (12, all_tok, all_bytes)
    assert micro["nll"]["mean"] == pytest.approx(all_nll / all_tok)
    assert (micro["nll"]["low"], micro["nll"]["high"]) == pytest.approx(tuple(micro_q), abs=1e-12)
    assert micro["bits_per_byte"] == pytest.approx(all_nll / math.log(2) / all_bytes)
    macro_nll = np.mean([p["point"] for p in per.values()])
    assert macro["nll"]["mean"] == pytest.approx(macro_nll)
    assert (macro["nll"]["low"], macro["nll"]["high"]) == pytest.approx(tuple(macro_q), abs=1e-12)
    assert macro["perplexity"]["mean"] == pytest.approx(
        np.exp(np.mean(np.log([res["languages"][k]["perplexity"]["mean"] for k in per])))
    )  # the geometric mean of the languages' perplexities
    assert macro["bits_per_byte"] == pytest.approx(
        np.mean([res["languages"][k]["bits_per_byte"] for k in per])
    )

    # batching changes nothing but the calls; progress counts every text once
    done = []
    again = ppl.perplexity(
        TEXTS, table_scorer(LOGP_BEFORE), rounds=rounds, confidence=confidence, seed=seed, batch=2,
        progress=done.append,
    )  # fmt: skip
    assert again == res and done == [2, 2, 1, 2, 1, 2, 2] and sum(done) == 12
    # a language's interval does not depend on the other languages in the run
    alone = ppl.perplexity(
        {"yy": TEXTS["yy"]}, table_scorer(LOGP_BEFORE), rounds=rounds, confidence=0.9, seed=7
    )
    assert alone["languages"]["yy"] == res["languages"]["yy"]
    json.dumps(res, allow_nan=False)  # plain JSON values (all finite here)


COMPARE_TEXTS = {"xx": ["a b a", "c a"], "yy": ["b b c"]}


def test_compare_against_hand_computed_literals(tmp_path):
    res = ppl.compare(
        COMPARE_TEXTS, table_scorer(LOGP_BEFORE), table_scorer(LOGP_AFTER), NAMES.get, top=2, rounds=50
    )
    # Δloss per occurrence = logp_before - logp_after: a +0.5, b -0.5, c +1.0
    xx, yy = res["languages"]["xx"], res["languages"]["yy"]
    # xx: a x3 (sum 1.5), b x1 (-0.5), c x1 (1.0); total rise 2.5
    assert xx["total_rise"] == pytest.approx(2.5)
    assert xx["top_tokens"] == [
        {"id": 1, "text": "a", "count": 3, "mean_delta": pytest.approx(0.5), "sum_delta": pytest.approx(1.5),
         "share": pytest.approx(0.6)},
        {"id": 3, "text": "c", "count": 1, "mean_delta": pytest.approx(1.0), "sum_delta": pytest.approx(1.0),
         "share": pytest.approx(0.4)},
    ]  # fmt: skip
    # yy: b x2 (-1.0, a fall: not listed), c x1 (+1.0) carries the whole rise
    assert yy["total_rise"] == pytest.approx(1.0)
    assert [(r["id"], r["count"], r["share"]) for r in yy["top_tokens"]] == [(3, 1, pytest.approx(1.0))]
    # NLL change: xx (1.5 - 0.5 + 1.0) / 5 tokens = 0.4; yy 0 / 3 = 0
    assert xx["nll_change"]["mean"] == pytest.approx(0.4)
    assert xx["perplexity_ratio"]["mean"] == pytest.approx(math.exp(0.4))
    assert yy["nll_change"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert res["before"]["languages"]["xx"]["nll"]["mean"] == pytest.approx(5.5 / 5)
    assert res["after"]["languages"]["xx"]["nll"]["mean"] == pytest.approx(7.5 / 5)
    assert res["largest_rise"] == "xx"
    # all languages: a x3 (1.5), b x3 (-1.5), c x2 (2.0); total rise 3.5; c outranks a
    overall = res["overall"]["micro"]
    assert overall["total_rise"] == pytest.approx(3.5)
    assert [(r["id"], r["count"], r["sum_delta"], r["share"]) for r in overall["top_tokens"]] == [
        (3, 2, pytest.approx(2.0), pytest.approx(4 / 7)),
        (1, 3, pytest.approx(1.5), pytest.approx(3 / 7)),
    ]
    assert overall["nll_change"]["mean"] == pytest.approx(2.0 / 8)
    assert res["overall"]["macro"]["nll_change"]["mean"] == pytest.approx(0.2)
    # top=1 keeps the largest; a falling token's share is negative; ties go to the smaller id
    one = ppl.compare(COMPARE_TEXTS, table_scorer(LOGP_BEFORE), table_scorer(LOGP_AFTER), NAMES.get, top=1)
    assert [r["id"] for r in one["languages"]["xx"]["top_tokens"]] == [1]
    deltas = ppl.token_deltas(*(table_scorer(p)(COMPARE_TEXTS["xx"]) for p in (LOGP_BEFORE, LOGP_AFTER)))
    assert deltas.ids.tolist() == [1, 2, 3] and deltas.counts.tolist() == [3, 1, 1]
    assert deltas.shares == pytest.approx([0.6, -0.2, 0.4])
    tie = ppl.TokenDeltas(np.array([5, 4, 9]), np.array([1.0, 1.0, 0.0]))
    assert [r["id"] for r in tie.top(5, str)] == [4, 5]  # 9's sum is 0: nothing rose
    assert np.isnan(ppl.TokenDeltas(np.array([1]), np.array([-1.0])).shares).all()

    text = ppl.markdown(res, {"xx": "Ex"})
    assert "xx (Ex)" in text and "all (token-weighted)" in text and '"c"' in text and "0.400 [" in text
    assert "### xx: top 2 rising tokens" in text
    single = ppl.markdown(res["before"])
    assert "Perplexity per language" in single and "all (macro)" in single
    assert report.write(tmp_path / "out", res, text)["results"].is_file()
    assert plots.perplexity_change(res, tmp_path / "change.png").stat().st_size > 0
    assert plots.perplexity_by_language(res["after"], tmp_path / "ppl.png").stat().st_size > 0


def test_read_ntrex_subset(shared_data):
    path = shared_data / "parallel" / "ntrex128_subset" / "ntrex128_first300_40langs.jsonl"
    every = ppl.read_parallel(path)
    assert len(every) == 40 and {len(v) for v in every.values()} == {300}
    assert "line" not in every and "doc_id" not in every
    langs = ("eng", "arb", "zho-CN", "hin", "amh", "kor")
    some = ppl.read_parallel(path, languages=langs, max_per_language=7)
    assert tuple(some) == langs and {len(v) for v in some.values()} == {7}
    assert some["eng"][0] == "Welsh AMs worried about 'looking like muppets'"
    assert some["arb"] == every["arb"][:7]
    assert all("\u0600" <= ch <= "\u06ff" for ch in some["arb"][0] if ch.isalpha())
    assert any("\u4e00" <= ch <= "\u9fff" for ch in some["zho-CN"][0])
    assert any("\u0900" <= ch <= "\u097f" for ch in some["hin"][0])
    assert any("\u1200" <= ch <= "\u137f" for ch in some["amh"][0])
    names = ppl.language_names(path)
    assert names["amh"] == "Amharic" and names["arb"] == "Arabic"

    # one character = one token at log p = -ln 2: bits per byte = characters / UTF-8 bytes, per script
    def chars(texts):
        return [ppl.TokenScores(np.array([ord(c) for c in t]), np.full(len(t), -math.log(2))) for t in texts]

    res = ppl.perplexity(some, chars, rounds=20)
    for lang, texts in some.items():
        n_chars, n_bytes = sum(map(len, texts)), sum(len(t.encode()) for t in texts)
        assert res["languages"][lang]["bits_per_byte"] == pytest.approx(n_chars / n_bytes)
        assert res["languages"][lang]["perplexity"]["mean"] == pytest.approx(2.0)
    assert res["languages"]["zho-CN"]["bits_per_byte"] < 0.4 < res["languages"]["eng"]["bits_per_byte"]
    assert "zho-CN" in ppl.markdown(res, names)


def write_jsonl(path, rows):
    path.write_text(
        "".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    return path


def test_read_jsonl(tmp_path):
    rows = [
        {"inputs": "q", "targets": "one", "language_code": "fra"},
        {"inputs": "q", "targets": "ሰላም", "language_code": "amh"},
        "\n",
        {"inputs": "q", "targets": "two", "language_code": "fra"},
        {"inputs": "q", "targets": "three", "language_code": "fra"},
    ]
    path = write_jsonl(tmp_path / "aya.jsonl", rows)
    assert ppl.read_jsonl(path, "targets") == {"fra": ["one", "two", "three"], "amh": ["ሰላም"]}
    assert ppl.read_jsonl(path, "targets", languages=("amh", "fra"), max_per_language=2) == {
        "amh": ["ሰላም"], "fra": ["one", "two"]
    }  # fmt: skip
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"text": "x", "language_code": "deu"}])
    assert ppl.read_jsonl(plain) == {"deu": ["x"]}


def test_bad_input_is_named(tmp_path):
    before = table_scorer(LOGP_BEFORE)
    other = dict(WORDS, c=4)  # the "after" checkpoint splits "c" into another id
    after = table_scorer(LOGP_AFTER, other)
    texts = {"de": ["a b"], "fr": ["a", "b", "a b", "b c", "a"]}
    with pytest.raises(
        DataError, match=r"^the two checkpoints tokenise text 3 of 'fr' differently; compare needs"
    ):
        ppl.compare(texts, before, after, NAMES.get)

    path = write_jsonl(tmp_path / "aya.jsonl", [{"targets": "x", "language_code": "fra"}])
    with pytest.raises(DataError, match=r"aya.jsonl: language 'swa' not found \(present: fra\)"):
        ppl.read_jsonl(path, "targets", languages=("fra", "swa"))
    with pytest.raises(DataError, match=r"aya.jsonl:1: no field 'text' \(fields: targets, language_code\)"):
        ppl.read_jsonl(path)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "language_code": "fra"}, {"text": "y"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: no field 'language_code'"):
        ppl.read_jsonl(bad)
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"text": " ", "language_code": "fra"}])
    with pytest.raises(DataError, match=r"blank.jsonl:1: field 'text' is blank"):
        ppl.read_jsonl(blank)
    broken = write_jsonl(tmp_path / "broken.jsonl", ['{"text": "x", "language_code": "fra"}\n', "{oops\n"])
    with pytest.raises(DataError, match=r"broken.jsonl:2: not valid JSON"):
        ppl.read_jsonl(broken)

    parallel = write_jsonl(
        tmp_path / "ntrex.jsonl",
        [
            {"line": 0, "doc_id": "d", "eng": "a", "fra": "b"},
            {"line": 1, "doc_id": "d", "eng": "c", "fra": 3},
        ],
    )
    with pytest.raises(DataError, match=r"ntrex.jsonl: language 'deu' not found \(present: eng, fra\)"):
        ppl.read_parallel(parallel, languages=("deu",))
    with pytest.raises(DataError, match=r"ntrex.jsonl:2: field 'fra' is int, not a string"):
        ppl.read_parallel(parallel)
    assert ppl.read_parallel(parallel, languages=("eng",)) == {"eng": ["a", "c"]}

    def short(texts):
        return before(texts)[:-1]

    with pytest.raises(ValueError, match=r"'fr': token_scores returned 4 results for 5 texts"):
        ppl.perplexity({"fr": texts["fr"]}, short)
    with pytest.raises(ValueError, match="not a perplexity results|not perplexity results"):
        ppl.markdown({"kind": "other"})
