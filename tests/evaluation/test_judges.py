"""aya_jax.evaluation.judges: the endpoint judge through the official `openai` client against a real HTTP server on
127.0.0.1 (rate limits, server errors, client errors, the API key), the reward-model judge's thresholds, and the
on-disk cache across interrupted and repeated runs."""

from __future__ import annotations

import json
import logging

import endpoint as endpoint_lib  # tests/endpoint.py
import numpy as np
import pytest

from aya_jax.evaluation import battles, judges, rows

pytest.importorskip("openai")

KEY_VAR = "AYA_JAX_TEST_JUDGE_KEY"
SECRET = "sk-test-4f9c2e7a-never-in-any-output"


def _arena_answer(user: str) -> str:
    """A judge that prefers the answer starting with "good"."""
    answer_a = user.split("Assistant A's Answer|>\n", 1)[1]
    return "Mine. [[A>B]]" if answer_a.startswith("good") else "Mine. [[B>A]]"


@pytest.fixture
def endpoint(request):
    with endpoint_lib.Endpoint(_arena_answer, **getattr(request, "param", {})) as server:
        yield server


def _items(n=6):
    out = []
    for q in range(n):
        good_first = q % 2 == 0
        a, b = ("good answer", "poor answer") if good_first else ("poor answer", "good answer")
        out.append(judges.PairwiseItem(f"q{q}", f"Frage {q}: Was ist 2 + {q}?", a, b, "m", "base", 1, "de"))
    return out


@pytest.mark.parametrize("endpoint", [{"failures": (429, 503)}], indirect=True)
def test_endpoint_judge_retries_rate_limits_and_server_errors_and_never_leaks_the_key(
    endpoint, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv(KEY_VAR, SECRET)
    judge = judges.EndpointJudge(
        endpoint.url, "judge-model", api_key_env=KEY_VAR, batch_size=4, backoff_s=0.01
    )
    cache = rows.KeyedLog(tmp_path / "judgments.jsonl")
    with caplog.at_level(logging.DEBUG):
        records, requested = judges.judge_pairs(_items(), judge, cache)
    assert requested == 6
    assert [battles.parse_verdict(r["judgment"]) for r in records] == ["A>B", "B>A"] * 3
    assert sorted(endpoint.seen.values()) == [3] * 6  # 429, 503, then the answer, for every item
    assert set(endpoint.auth) == {f"Bearer {SECRET}"}
    for text in (caplog.text, (tmp_path / "judgments.jsonl").read_text(), repr(judge), str(vars(judge))):
        assert SECRET not in text


@pytest.mark.parametrize("endpoint", [{"status_always": 400}], indirect=True)
def test_endpoint_judge_fails_at_once_on_a_client_error(endpoint):
    judge = judges.EndpointJudge(endpoint.url, "judge-model", batch_size=1, backoff_s=0.01)
    with pytest.raises(judges.JudgeError, match="question q0 game 1: HTTP 400"):
        judge(_items(1))
    assert sum(endpoint.seen.values()) == 1


@pytest.mark.parametrize("endpoint", [{"status_always": 429}], indirect=True)
def test_endpoint_judge_gives_up_after_its_retries(endpoint):
    judge = judges.EndpointJudge(endpoint.url, "judge-model", batch_size=1, max_retries=2, backoff_s=0.01)
    with pytest.raises(judges.JudgeError, match="RateLimitError after 3 attempts"):
        judge(_items(1))
    assert sum(endpoint.seen.values()) == 3


def test_endpoint_judge_names_a_missing_key_variable(monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(ValueError, match=f"environment variable '{KEY_VAR}' is not set"):
        judges.EndpointJudge("http://127.0.0.1:9/v1", "m", api_key_env=KEY_VAR)


def test_cache_resumes_an_interrupted_run_and_never_requests_a_judgment_twice(endpoint, tmp_path):
    path = tmp_path / "judgments.jsonl"
    judge = judges.EndpointJudge(endpoint.url, "judge-model", batch_size=2, backoff_s=0.01)
    items = _items(10)

    class Interrupted(RuntimeError):
        pass

    calls = {"n": 0}

    def dies_after_two_batches(batch):
        calls["n"] += 1
        if calls["n"] > 2:
            raise Interrupted
        return judge(batch)

    dies_after_two_batches.name, dies_after_two_batches.batch_size = judge.name, judge.batch_size
    with pytest.raises(Interrupted):
        judges.judge_pairs(items, dies_after_two_batches, rows.KeyedLog(path))
    assert len(path.read_text().splitlines()) == 4

    # A kill in the middle of a write leaves a torn line: it is cut off and that judgment requested again.
    with open(path, "a") as f:
        f.write('{"key": "torn')
    records, requested = judges.judge_pairs(items, judge, rows.KeyedLog(path))
    assert requested == 6
    assert sum(endpoint.seen.values()) == 10  # every item requested exactly once over both runs
    assert [battles.parse_verdict(r["judgment"]) for r in records] == ["A>B", "B>A"] * 5

    again, requested = judges.judge_pairs(items, judge, rows.KeyedLog(path))
    assert requested == 0 and again == records
    assert sum(endpoint.seen.values()) == 10
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_reward_judge_turns_score_differences_into_labels():
    grid = {
        0.0: "A=B",
        0.099: "A=B",
        -0.099: "A=B",
        0.1: "A>B",
        -0.5: "B>A",
        0.999: "A>B",
        1.0: "A>>B",
        -3.0: "B>>A",
    }
    for d, label in grid.items():
        assert judges.verdict_of_difference(d, 0.1, 1.0) == label
    with pytest.raises(ValueError, match="non-finite"):
        judges.verdict_of_difference(float("nan"), 0.1, 1.0)
    with pytest.raises(ValueError, match="need 0 <= tie < strong"):
        judges.RewardJudge(lambda p, c: np.zeros(len(p)), tie=1.0, strong=0.5)

    # A reward that is the completion's length in words: longer answers win, by how much decides the strength.
    def words(prompts, completions):
        return np.array([len(c.split()) for c in completions], dtype=float)

    judge = judges.RewardJudge(words, tie=0.5, strong=3.0)
    items = [
        judges.PairwiseItem("q0", "p", "one two three four", "one", "x", "y"),
        judges.PairwiseItem("q1", "p", "one", "one two", "x", "y"),
        judges.PairwiseItem("q2", "p", "uno dos", "eins zwei", "x", "y"),
    ]
    assert [battles.parse_verdict(t) for t in judge(items)] == ["A>>B", "B>A", "A=B"]


def test_two_games_swap_positions():
    g1, g2 = judges.two_games("q7", "prompt", "aya", "mine", "gemma", "theirs", "sw")
    assert (g1.model_a, g1.answer_a, g1.game) == ("gemma", "theirs", 1)
    assert (g2.model_a, g2.answer_a, g2.game) == ("aya", "mine", 2)
    assert g1.key("j") != g2.key("j")


def test_choice_messages_and_parse_choice():
    item = judges.PairwiseItem("q", "Wie spät ist es?", "Es ist drei.", "Keine Ahnung.", "x", "y")
    system, user = judges.choice_messages(item)
    assert "[[A]]" in system["content"] and "Wie spät ist es?" in user["content"]
    assert user["content"].index("Es ist drei.") < user["content"].index("Keine Ahnung.")
    assert judges.parse_choice("I prefer A: [[A]]") == "A"
    assert judges.parse_choice("[[A]] at first, but finally [[ B ]]") == "B"
    assert judges.parse_choice("[[A>B]]") is None and judges.parse_choice(None) is None
