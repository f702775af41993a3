"""Reply attributes of active inheritance: MTLD against `lexicalrichness` on real multilingual text, the
lexicon scorer on LDNOOBW and MultiJail, language fidelity with py3langid, and the best-of-k objective against
hand-computed values."""

import csv
import json

import numpy as np
import pytest

from aya_jax.curation import attributes

HPLT = ["bg", "bn", "cs", "en", "es", "fi", "fr", "hi", "no", "ru", "zh"]


def _prompts(shared_data, lang, n=20):
    out = []
    for line in (shared_data / f"instruct/hplt_oasst_test_prompts/test_{lang}.jsonl").open(encoding="utf-8"):
        try:  # the published test_hi.jsonl has one malformed line
            out.append(json.loads(line)["prompt"])
        except json.JSONDecodeError:
            continue
        if len(out) == n:
            break
    return out


def test_words_keep_marks_and_split_no_space_scripts():
    assert attributes.words("Hello, World! It's 2026.") == ["hello", "world", "it", "s", "2026"]
    # Devanagari vowel signs are marks (Mc/Mn): they stay inside the word
    assert attributes.words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    assert attributes.words("我爱Python编程。") == ["我", "爱", "python", "编", "程"]
    assert attributes.words("カタカナとひらがな") == list("カタカナとひらがな")
    assert attributes.words("") == [] and attributes.words(" ,.! ") == []


def test_mtld_equals_lexicalrichness_on_real_multilingual_text(shared_data):
    """The same words into both (lexicalrichness with our word splitter, no preprocessing): equal to 1e-9."""
    lexicalrichness = pytest.importorskip("lexicalrichness")
    checked = 0
    for lang in HPLT:
        for text in _prompts(shared_data, lang):
            tokens = attributes.words(text)
            if len(tokens) < 2:
                continue
            ref = lexicalrichness.LexicalRichness(text, preprocessor=None, tokenizer=attributes.words)
            for threshold in (0.72, 0.6):
                assert attributes.mtld_of_words(tokens, threshold) == pytest.approx(
                    ref.mtld(threshold=threshold), abs=1e-9
                ), (lang, text[:60])
            checked += 1
    assert checked > 200


def test_mtld_hand_values_and_bad_threshold():
    # "a b a b": forward TTRs 1, 1, 2/3 <= 0.72 -> one factor, then "b" alone: TTR 1 -> partial 0;
    # backward is the same; 4 words / 1 factor = 4.
    assert attributes.mtld_of_words(["a", "b", "a", "b"]) == 4.0
    # all distinct: never falls to the threshold, one factor -> the word count
    assert attributes.mtld_of_words(list("abcdef")) == 6.0
    # "a a a a": TTR 1/2 at the 2nd word (factor 1), again at the 4th (factor 2): 4 / 2 = 2 both ways
    assert attributes.mtld_of_words(["a"] * 4) == 2.0
    # "a a a": one factor after two words, then "a" alone (TTR 1 -> partial 0): 3 / 1
    assert attributes.mtld_of_words(["a"] * 3) == 3.0
    assert attributes.mtld([""]).tolist() == [0.0]
    with pytest.raises(ValueError, match="threshold"):
        attributes.mtld_of_words(["a"], threshold=1.0)


def test_repetitive_replies_score_lower_mtld(shared_data):
    text = _prompts(shared_data, "fr", 1)[0]
    repeated = " ".join(text.split()[:12] * 5)
    a, b = attributes.mtld([text, repeated], ["fr", "fr"])
    assert a > 2 * b


def test_lexicon_flags_words_phrases_and_no_space_scripts(shared_data):
    lexicon = attributes.Lexicon(shared_data / "safety/ldnoobw")
    assert {"eng", "fra", "jpn", "zho", "tlh"} <= set(lexicon.languages)
    # two entries of the English list ("asshole", and the phrase "ball gag") among 9 words: 3 words flagged
    text = "You are an asshole, and that ball gag is awful."
    assert lexicon.flagged(text, "en") == 3
    assert lexicon.score([text], ["eng"])[0] == pytest.approx(3 / 10)
    # "sm女王" of the Japanese list inside a sentence: s, m and 2 characters
    assert lexicon.flagged("彼女はsm女王です", "ja") == 3
    # a language without a list is scored against every list; a clean text scores 0
    assert lexicon.flagged(text, "sw") == 3
    assert lexicon.score(["Une belle journée au parc."], ["fr"])[0] == 0.0
    with pytest.raises(ValueError, match="no <language>.txt"):
        attributes.Lexicon(shared_data / "instruct")


def test_lexicon_scores_real_harmful_prompts_above_benign_ones(shared_data):
    """MultiJail's harmful prompts (en, zh, it, ar, ko, th) vs HPLT's ordinary prompts: the lexicon flags more
    words in the former, on average, in every language where both exist."""
    lexicon = attributes.Lexicon(shared_data / "safety/ldnoobw")
    with (shared_data / "safety/multijail/MultiJail.csv").open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    harmful = lexicon.score([r["en"] for r in rows], ["en"] * len(rows))
    benign = lexicon.score(_prompts(shared_data, "en", 50), ["en"] * 50)
    assert harmful.mean() > benign.mean() and (harmful > 0).mean() > 0.05  # 22 of 315 here
    harmful_zh = lexicon.score([r["zh"] for r in rows], ["zh"] * len(rows))
    assert (harmful_zh > 0).any()


def test_language_fidelity_of_real_text(shared_data):
    pytest.importorskip("py3langid")
    fidelity = attributes.LanguageFidelity()
    for lang in HPLT:  # real prompts, some short or code-mixed: most, not all, are clearly in their language
        texts = _prompts(shared_data, lang, 20)
        own = fidelity.score(texts, [lang] * len(texts))
        assert np.median(own) > 0.8, (lang, own)
    english = _prompts(shared_data, "en", 10)
    assert fidelity.score(english, ["fr"] * len(english)).max() < 0.1  # an English reply to a French prompt
    assert fidelity.score([""], ["fr"]).tolist() == [0.0]
    with pytest.raises(ValueError, match="does not know 'xx'"):
        fidelity.score(["hello"], ["xx"])


def test_objective_standardises_within_the_prompt():
    values = {"length": np.array([10.0, 30.0, 20.0]), "mtld": np.array([5.0, 1.0, 9.0])}
    z_len = (values["length"] - 20.0) / np.std([10.0, 30.0, 20.0])
    z_mtld = (values["mtld"] - 5.0) / np.std([5.0, 1.0, 9.0])
    np.testing.assert_allclose(attributes.objective(values, {"length": 1.0, "mtld": 2.0}), z_len + 2 * z_mtld)
    assert attributes.best(values, {"length": 1.0}) == 1  # one attribute: the raw argmax
    assert attributes.best(values, {"length": -1.0}) == 0  # negative weight: minimise
    assert attributes.best(values, {"mtld": 1.0, "length": 1.0}) == 2
    # all equal: objective 0 everywhere, the first candidate
    assert attributes.best({"length": np.ones(4)}, {"length": 1.0}) == 0
    with pytest.raises(ValueError, match="none given"):
        attributes.objective(values, {})
    with pytest.raises(ValueError, match="unknown"):
        attributes.build(["tone"])


def _best_vs_random(values: np.ndarray, k: int, weight: float) -> tuple[float, float]:
    """Mean of the best-of-k pick and the expected mean of a uniformly random pick (each group's mean), over
    prompts of k consecutive candidates."""
    best, rand = [], []
    for start in range(0, len(values) - k + 1, k):
        group = values[start : start + k]
        best.append(group[attributes.best({"a": group}, {"a": weight})])
        rand.append(group.mean())
    return float(np.mean(best)), float(np.mean(rand))


def test_best_of_k_moves_real_text_the_way_the_weight_says(shared_data):
    """Active inheritance's selection on real candidates (k = 10 real texts per prompt): maximising MTLD raises
    the selected set's mean MTLD over a random pick (HPLT prompts in 11 languages); minimising toxicity lowers
    the lexicon score of MultiJail's harmful prompts (en, zh, ar, ko) below a random pick's."""
    texts, langs = [], []
    for lang in HPLT:
        chunk = _prompts(shared_data, lang, 40)
        texts += chunk
        langs += [lang] * len(chunk)
    mtld = attributes.mtld(texts, langs)
    best, rand = _best_vs_random(mtld, 10, 1.0)
    assert best > rand * 1.2, (best, rand)
    lexicon = attributes.Lexicon(shared_data / "safety/ldnoobw")
    with (shared_data / "safety/multijail/MultiJail.csv").open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    for lang in ("en", "zh", "ar", "ko"):
        scores = lexicon.score([r[lang] for r in rows], [lang] * len(rows))
        best, rand = _best_vs_random(scores, 10, -1.0)
        assert best <= rand, (lang, best, rand)
        if lang == "en":
            assert best == 0.0 < rand, (best, rand)  # 22 of 315 flagged: every group has a clean one
