"""aya_jax.evaluation.arena_hard: questions and answers in the published layouts (the real Arena-Hard-Auto v0.1
files and multilingual prompt files beside the repository), resumable answer generation, the two games per
question, and the style features against a hand computation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aya_jax import defaults
from aya_jax.data.sources import DataError
from aya_jax.evaluation import arena_hard, battles, judges, rows


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_reads_the_arena_hard_files_and_the_multilingual_prompts(shared_data):
    arena = shared_data / "eval/arena_hard"
    prompts = shared_data / "instruct/hplt_oasst_test_prompts"
    questions = arena_hard.read_questions(
        [f"en={arena / 'arena-hard-v0.1_question.jsonl'}"]
        + [f"{lang}={prompts / f'test_{lang}.jsonl'}" for lang in ("bg", "bn", "fr", "ru", "zh")]
    )
    english = [q for q in questions if q.language == "en"]
    assert len(english) == 500 and english[0].category == "arena-hard-v0.1"
    assert english[0].question_id == "328c149ed45a41c0b9d6f14659e63599"
    assert english[0].key == "en/328c149ed45a41c0b9d6f14659e63599"
    # The same ids in every language: the keys keep them apart. A folder names each file's language by the
    # last "_" part of its name (test_zh.jsonl -> zh).
    assert {q.language for q in questions} == {"en", "bg", "bn", "fr", "ru", "zh"}
    assert len(questions) == 500 + 5 * 50 and questions[500].question_id == questions[550].question_id
    # The published Hindi file has a malformed row (a stray quote at line 50): named, file:line.
    with pytest.raises(DataError, match=r"test_hi\.jsonl:50: not valid JSON"):
        arena_hard.read_questions([str(prompts)])
    # test_fr.jsonl named twice: the same keys again are refused.
    with pytest.raises(
        DataError, match=r"test_fr\.jsonl:1: question 'fr/.*' again \(first at .*test_fr\.jsonl:1\)"
    ):
        arena_hard.read_questions([f"fr={prompts / 'test_fr.jsonl'}"] * 2)
    v2 = arena_hard.read_questions([f"en={arena / 'arena-hard-v2.0_question.jsonl'}"])
    assert v2[0].question_id == "2edbb5f36f5b42be" and v2[0].cluster == "coding"

    answers = arena_hard.read_answers(arena / "arena-hard-v0.1_answer_gpt-4-0314.jsonl", english)
    assert len(answers) == 500
    first = json.loads((arena / "arena-hard-v0.1_answer_gpt-4-0314.jsonl").read_text().splitlines()[0])
    assert answers[f"en/{first['uid']}"] == first["messages"][-1]["content"]["answer"]


def test_the_older_layouts_the_huggingface_folder_and_bad_rows(tmp_path):
    # m-ArenaHard on the Hub: a folder per language; arena-hard-auto's older question_id + turns layout.
    _write_jsonl(tmp_path / "m/fr/test.jsonl", [{"question_id": "q1", "cluster": "c", "category": "x",
                                                 "prompt": "Bonjour ?"}])  # fmt: skip
    _write_jsonl(tmp_path / "m/hi/test.jsonl", [{"question_id": "q1", "prompt": "नमस्ते?"}])
    old = _write_jsonl(tmp_path / "old.jsonl", [{"question_id": "q9", "turns": [{"content": "Hi?"}]}])
    questions = arena_hard.read_questions([str(tmp_path / "m"), f"en={old}"])
    assert [q.key for q in questions] == ["fr/q1", "hi/q1", "en/q9"]
    answers = _write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "q1", "language": "hi", "answer": "उत्तर"},
        {"question_id": "q9", "choices": [{"turns": [{"content": "Hello."}]}]},
        {"question_id": "unasked", "answer": "ignored"},
    ])  # fmt: skip
    assert arena_hard.read_answers(answers, questions) == {"hi/q1": "उत्तर", "en/q9": "Hello."}
    _write_jsonl(
        tmp_path / "bad.jsonl", [{"question_id": "a", "prompt": "ok"}, {"question_id": "b", "prompt": " "}]
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no prompt"):
        arena_hard.read_questions([f"en={tmp_path / 'bad.jsonl'}"])
    _write_jsonl(tmp_path / "noanswer.jsonl", [{"question_id": "q9", "messages": []}])
    with pytest.raises(DataError, match=r"noanswer\.jsonl:1: no answer text"):
        arena_hard.read_answers(tmp_path / "noanswer.jsonl", questions)
    with pytest.raises(FileNotFoundError, match="no questions file or folder at"):
        arena_hard.read_questions([str(tmp_path / "nowhere")])


def test_answers_are_generated_once_and_a_killed_run_resumes(tmp_path):
    questions = [arena_hard.Question(f"q{i}", f"prompt {i}", "de") for i in range(7)]
    asked: list[str] = []

    def generate(prompts):
        asked.extend(prompts)
        if len(asked) > 4:
            raise KeyboardInterrupt  # killed during the third batch
        return [p.upper() for p in prompts]

    log = rows.KeyedLog(tmp_path / "answers" / "m.jsonl")
    with pytest.raises(KeyboardInterrupt):
        arena_hard.answer_questions(questions, "m", generate, log, batch=2)
    assert len(rows.KeyedLog(tmp_path / "answers" / "m.jsonl")) == 4  # two whole batches kept
    asked.clear()
    answers, made = arena_hard.answer_questions(
        questions,
        "m",
        lambda ps: [p.upper() for p in ps],
        rows.KeyedLog(tmp_path / "answers" / "m.jsonl"),
        batch=2,
    )
    assert made == 3 and answers == {q.key: q.prompt.upper() for q in questions}
    again, made = arena_hard.answer_questions(
        questions, "m", lambda ps: pytest.fail("asked again"), rows.KeyedLog(tmp_path / "answers" / "m.jsonl"),
        batch=2,
    )  # fmt: skip
    assert made == 0 and again == answers


def test_two_games_per_question_and_the_pairs_judged():
    questions = [arena_hard.Question(f"q{i}", f"p{i}", "sw") for i in range(3)]
    answers = {
        "base": {q.key: f"base {q.question_id}" for q in questions},
        "m1": {q.key: f"m1 {q.question_id}" for q in questions[:2]},  # no answer to q2
        "m2": {q.key: f"m2 {q.question_id}" for q in questions},
    }
    pairs = arena_hard.model_pairs(["m1", "base", "m2"], "base", every_pair=False)
    assert pairs == [("m1", "base"), ("m2", "base")]
    items, missing = arena_hard.games(questions, answers, pairs)
    assert missing == {"base": 0, "m1": 1, "m2": 0}
    assert len(items) == 2 * 2 + 2 * 3
    first, second = items[0], items[1]
    assert (first.model_a, first.model_b, first.game) == ("base", "m1", 1)  # the baseline is A in game 1
    assert (second.model_a, second.model_b, second.game) == ("m1", "base", 2)
    assert (first.answer_a, first.answer_b, first.question_id) == ("base q0", "m1 q0", "sw/q0")
    assert arena_hard.model_pairs(["m1", "base", "m2"], "base", every_pair=True) == [
        ("m1", "base"), ("m1", "m2"), ("base", "m2"),
    ]  # fmt: skip


def test_style_features_against_a_hand_computation_and_style_controlled_ratings():
    text = "# Title\n\n- one\n- two\n1. three\n\nSome **bold** and __also__ text."
    assert arena_hard.style_of(text) == {"length": float(len(text)), "markdown": 1 + 3 + 2}
    answers = {"a": {"q": text}, "b": {"q": "plain"}}
    records = [{"question_id": "q", "model_a": "a", "model_b": "b"}, {"question_id": "q", "model_a": "b",
                                                                       "model_b": "a"}]  # fmt: skip
    got = arena_hard.style_features(records, answers, ["markdown", "length"])
    n = len(text)
    np.testing.assert_allclose(got["length"], [(n - 5) / (n + 5), (5 - n) / (n + 5)], rtol=1e-12)
    np.testing.assert_allclose(got["markdown"], [1.0, -1.0], rtol=1e-12)  # (6 - 0) / (6 + 0)
    with pytest.raises(ValueError, match=r"unknown style feature\(s\) \['bold'\]"):
        arena_hard.style_features(records, answers, ["bold"])
    assert tuple(defaults.evaluation.STYLE_FEATURES) == arena_hard.STYLE_FEATURES

    # A judge that prefers the longer answer 85% of the time, whoever wrote it: the "long" model wins more
    # plainly; with length as a covariate its rating moves toward the baseline's and the coefficient is > 0.
    rng = np.random.default_rng(0)
    answers = {"long": {}, "short": {}}
    records = []
    for i in range(150):
        key = f"q{i}"
        answers["long"][key] = "x" * int(rng.integers(100, 300))
        answers["short"][key] = "x" * int(rng.integers(50, 250))
        longer_is_long = len(answers["long"][key]) > len(answers["short"][key])
        for a, b in (("short", "long"), ("long", "short")):
            long_wins = longer_is_long == (rng.random() < 0.85)
            a_wins = (a == "long") == long_wins
            records.append(
                {"question_id": key, "model_a": a, "model_b": b, "verdict": "A>B" if a_wins else "B>A"}
            )
    style = arena_hard.style_features(records, answers, ["length"])
    results = battles.evaluate(records, baseline="short", bt_rounds=20, rounds=50, permutations=5, ks=(4,),
                               style=style)  # fmt: skip
    plain = results["bradley_terry"]["ratings"]["long"]["rating"]["mean"] - 1000
    controlled = results["bradley_terry_style"]
    assert plain > 30  # 56 Elo here
    assert controlled["coefficients"]["length"] > 0.5
    assert abs(controlled["ratings"]["long"]["rating"]["mean"] - 1000) < 0.8 * plain  # 35 Elo here
    assert "style-controlled" in battles.markdown(results)


def test_model_judge_asks_the_arena_hard_prompt():
    seen = []

    def chat(conversations):
        seen.extend(conversations)
        return ["Thinking... [[A>B]] no wait [[B>>A]]" for _ in conversations]

    judge = judges.ModelJudge(chat, name="tiny", batch_size=2)
    items = judges.two_games("fr/q1", "Quelle heure ?", "m", "Midi.", "base", "Je ne sais pas.", "fr")
    texts = judge(items)
    assert [battles.parse_verdict(t) for t in texts] == ["B>>A", "B>>A"]
    assert seen[0] == judges.judge_messages(items[0]) and "Midi." in seen[0][-1]["content"]
