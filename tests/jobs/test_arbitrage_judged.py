"""arbitrage routed by a pairwise judge, end to end through main: two endpoint teachers and an endpoint judge
(real HTTP servers, the official `openai` client) on real prompts in four languages. The judge's verdicts follow
a rule of the prompt, so the round robin's winners are known by hand — including a judge that always prefers
the first answer, whose two games cancel to a tie that goes to the first teacher. Every judgment is asked once;
a judge failing on one game stops with one line and keeps the others, and the rerun asks only for that one; a
rerun asks nothing; the same job on two processes (jax.distributed on localhost) asks every teacher and judge
request once, not once per host, and writes the same dataset."""

import json
import re

import endpoint as endpoint_lib  # tests/endpoint.py
import pytest
import runs  # the helper module beside this file

from aya_jax.evaluation import judges

pytestmark = pytest.mark.slow

LANGS = ("fr", "hi", "zh", "en")
DATASET = "arbitrage/dataset/train-00000-of-00001.jsonl"
_GAME = re.compile(
    r"<\|User Prompt\|>\n(.*)\n\n<\|The Start of Assistant A's Answer\|>\n(.*)\n<\|The End of Assistant A's "
    r"Answer\|>\n\n<\|The Start of Assistant B's Answer\|>\n(.*)\n<\|The End of Assistant B's Answer\|>",
    re.S,
)


def preferred(prompt: str) -> str | None:
    """The rule the judge follows: by len(prompt) mod 3, alpha's reply wins, beta's wins (strongly), or None —
    the judge then always prefers answer A, whatever it is."""
    return ("alpha", "beta", None)[len(prompt) % 3]


def verdict(message: str) -> str:
    prompt, a, b = _GAME.fullmatch(message).groups()
    want = preferred(prompt)
    if want is None:
        return "Position first. [[A>B]]"
    if want == "alpha":
        return "[[A>B]]" if a.startswith("alpha") else "[[B>A]]"
    return "My final verdict is [[B>>A]]" if b.startswith("beta") else "[[A>>B]]"


def _args(pool, alpha, beta, judge, *extra):
    return (f"--config.curation.pool=('{pool}',)", "--config.curation.routing=reward",
            f"--config.curation.teachers=('alpha={alpha};model=a', 'beta={beta};model=b')",
            f"--config.curation.judge=referee={judge};model=j;concurrency=2", "--config.curation.gen_batch=4",
            *extra)  # fmt: skip


def test_judge_routing_by_hand_resumes_and_asks_once_on_two_hosts(tmp_path, data_dir, shared_data):
    pool = tmp_path / "pool.jsonl"
    rows = runs.prompt_pool(pool, shared_data, LANGS, 3)
    prompts = [r["inputs"] for r in rows]
    assert {preferred(p) for p in prompts} == {"alpha", "beta", None}  # every case is exercised
    want = ["beta" if preferred(p) == "beta" else "alpha" for p in prompts]  # a tie goes to the first teacher

    def servers(fail_on=()):
        return (endpoint_lib.Endpoint(lambda m: f"alpha says {m[:12]}"),
                endpoint_lib.Endpoint(lambda m: f"beta says {m[-12:]}"),
                endpoint_lib.Endpoint(verdict, fail_on=fail_on))  # fmt: skip

    # One process; the judge fails (HTTP 400) on one game: one line, the other judgments are kept.
    alpha, beta, judge = servers()
    with alpha, beta, judge:
        first = prompts[2]  # game 1 (alpha's reply first) of the third prompt: in the third batch
        game = judges.PairwiseItem("q", first, alpha.answer(first), beta.answer(first), "alpha", "beta")
        failing = judges.judge_messages(game)[-1]["content"]
        judge.fail_on.add(failing)
        args = _args(pool, alpha.url, beta.url, judge.url)
        proc = runs.run("configs/arbitrage.py", tmp_path / "one", data_dir, *args)
        lines = runs.error_lines(proc.stderr)
        assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
        assert "config.curation.judge: judge referee:j@" in lines[0] and "HTTP 400" in lines[0]
        kept = tmp_path / "one/arbitrage/judgments.jsonl"
        assert "the 4 judgments so far are kept in" in lines[0] and len(kept.read_text().splitlines()) == 4
        judge.fail_on.clear()
        asked = dict(judge.seen)
        proc = runs.run("configs/arbitrage.py", tmp_path / "one", data_dir, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        # 2 games per prompt (two teachers, both orders): the 4 kept are not asked again; the failing batch's
        # two games (the failed one and its batch-mate, not kept) are asked once more; the rest once
        assert len(judge.seen) == 2 * len(rows) and sum(judge.seen.values()) == 2 * len(rows) + 2
        assert judge.seen[failing] == 2 and sum(asked.values()) == 6
        assert all(n == 1 for n in alpha.seen.values()) and len(alpha.seen) == len(rows)
        assert all(n == 1 for n in beta.seen.values()) and len(beta.seen) == len(rows)
        out = [
            json.loads(line) for line in (tmp_path / "one" / DATASET).read_text(encoding="utf-8").splitlines()
        ]
        assert [r["teacher"] for r in out] == want
        assert [r["judge_points"] for r in out] == [1.0 if preferred(p) is None else 2.0 for p in prompts]
        results = json.loads((tmp_path / "one/arbitrage/results.json").read_text())
        assert results["scorer"] == "judge referee" and "strategy_scores" in results
        assert (
            results["strategy_scores"]["reward"]["mean"] >= results["strategy_scores"]["single:alpha"]["mean"]
        )
        # A rerun asks nobody anything and writes the same bytes.
        before = (tmp_path / "one" / DATASET).read_bytes()
        seen = (dict(alpha.seen), dict(beta.seen), dict(judge.seen))
        proc = runs.run("configs/arbitrage.py", tmp_path / "one", data_dir, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (dict(alpha.seen), dict(beta.seen), dict(judge.seen)) == seen
        assert (tmp_path / "one" / DATASET).read_bytes() == before

    # Two processes of one job: every request once (process 0 asks, the other host is handed the replies).
    alpha, beta, judge = servers()
    with alpha, beta, judge:
        procs = runs.launch_two("configs/arbitrage.py", tmp_path / "two", data_dir, tmp_path / "logs",
                                *_args(pool, alpha.url, beta.url, judge.url))  # fmt: skip
        try:
            codes = [p.wait(timeout=600) for p in procs]
        finally:
            runs.stop(procs)
        logs = [(tmp_path / f"logs/{i}.log").read_text()[-2000:] for i in range(2)]
        assert codes == [0, 0], logs
        assert sorted(alpha.seen.values()) == [1] * len(rows) and sorted(beta.seen.values()) == [1] * len(
            rows
        )
        assert sorted(judge.seen.values()) == [1] * (2 * len(rows))
        assert (tmp_path / "two" / DATASET).read_bytes() == before
