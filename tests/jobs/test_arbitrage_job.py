"""arbitrage end to end through main: two teachers (the session's tiny SFT run at 120 and at 40 steps) answer
real prompts in four languages (HPLT OASST test prompts as Aya Dataset rows), the tiny reward model scores every
reply and each prompt keeps the best. The choices equal the argmax of the kept scores; killed while the second
teacher generates and rerun, nothing is generated twice and the dataset equals the uninterrupted run's; fixed,
random and learned routing in the same workdir reuse the replies (a table checked by hand); bad input stops with
one line, and a failing endpoint keeps what it answered."""

import collections
import json

import endpoint as endpoint_lib  # tests/endpoint.py
import numpy as np
import pytest
import runs  # the helper module beside this file

from aya_jax.data import languages

pytestmark = pytest.mark.slow

SFT = ("--config.data.seq_len=64",)  # runs.tiny_sft's data flags
LANGS = ("fr", "hi", "zh", "en")
PER_LANGUAGE = 6
DATASET = "arbitrage/dataset/train-00000-of-00001.jsonl"


def teacher_args(pool, strong, weak, *extra):
    return (
        *SFT, f"--config.curation.pool=('{pool}',)", f"--config.curation.teachers=('strong={strong}', 'weak={weak}')",
        "--config.curation.max_new_tokens=16", "--config.curation.gen_batch=4", "--config.curation.batch_size=8",
        *extra,
    )  # fmt: skip


def _lines(path):
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    )


def test_reward_routing_resumes_and_other_strategies_reuse_the_replies(
    tmp_path, data_dir, shared_data, sft_run, early_sft_run, tiny_reward_model
):  # fmt: skip
    pool = tmp_path / "pool.jsonl"
    rows = runs.prompt_pool(pool, shared_data, LANGS, PER_LANGUAGE)
    n = len(rows)
    args = teacher_args(pool, sft_run, early_sft_run, f"--config.curation.reward_model={tiny_reward_model}",
                        "--config.curation.routing=reward")  # fmt: skip
    whole = tmp_path / "whole"
    proc = runs.run("configs/arbitrage.py", whole, data_dir, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = whole / "arbitrage"
    results = json.loads((out / "results.json").read_text())
    assert results["generated_now"] == 2 * n
    assert {t: v["generated"] for t, v in results["generation"].items()} == {"strong": n, "weak": n}
    # every choice is the argmax of the kept scores, the first teacher of equals
    scores = {tuple(json.loads(r["key"])[1:]): r["scores"][0] for r in _lines(out / "scores.jsonl")}
    chosen = _lines(whole / DATASET)
    assert len(chosen) == n
    for i, row in enumerate(chosen):
        where = f"{pool}:{i + 1}"
        s = [scores[(where, "strong")], scores[(where, "weak")]]
        assert row["teacher"] == ["strong", "weak"][int(np.argmax(s))] and row["score"] == max(s)
        assert row["inputs"] == rows[i]["inputs"] and row["source"] == where
        assert row["annotation_type"] == "arbitrage-reward" and row["user_id"] == row["teacher"]
        assert row["language_code"] == languages.lookup(rows[i]["language_code"]).code
        assert row["targets"] == _lines(out / f"generations/{row['teacher']}/samples.jsonl")[i]["samples"][0]
    # the preference pairs: each prompt's higher-scored reply chosen, the other rejected (none on a tie)
    pairs = {p["id"]: p for p in _lines(out / "preference/train-00000-of-00001.jsonl")}
    for i, row in enumerate(rows):
        where = f"{pool}:{i + 1}"
        s = {t: scores[(where, t)] for t in ("strong", "weak")}
        if s["strong"] == s["weak"]:
            assert where not in pairs
            continue
        best, worst = sorted(s, key=s.get, reverse=True)
        pair = pairs[where]
        assert (pair["chosen_teacher"], pair["rejected_teacher"], pair["prompt"]) == (
            best,
            worst,
            row["inputs"],
        )
        assert pair["margin"] == pytest.approx(s[best] - s[worst], abs=1e-9) and pair["margin"] > 0
        assert pair["chosen"] == _lines(out / f"generations/{best}/samples.jsonl")[i]["samples"][0]
    assert results["preference_pairs"]["pairs"] == len(pairs)
    counts = collections.Counter((r["language_code"], r["teacher"]) for r in chosen)
    assert {(g, t): c for g, row in results["choices"].items() for t, c in row.items() if c} == dict(counts)
    assert set(results["strategy_scores"]) == {"single:strong", "single:weak", "random", "reward"}
    assert results["strategy_scores"]["reward"]["mean"] >= max(
        results["strategy_scores"][f"single:{t}"]["mean"] for t in ("strong", "weak")
    )
    assert (out / "routing.png").stat().st_size > 1000 and "arbitrage:" in proc.stdout

    # Killed while the second teacher generates, then rerun: nothing is generated twice, the same dataset.
    killed_dir = tmp_path / "killed"
    weak_log = killed_dir / "arbitrage/generations/weak/samples.jsonl"
    runs.kill_when("configs/arbitrage.py", killed_dir, data_dir, args, lambda w: len(_lines(weak_log)) >= 4)
    had = len(_lines(weak_log))
    assert 4 <= had < n
    again = runs.run("configs/arbitrage.py", killed_dir, data_dir, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((killed_dir / "arbitrage/results.json").read_text())
    assert resumed["generation"]["strong"]["generated"] == 0
    assert resumed["generation"]["weak"]["generated"] == n - had
    assert (killed_dir / DATASET).read_bytes() == (whole / DATASET).read_bytes()

    # Fixed, random and learned routing in the whole run's workdir: no reply is generated again.
    fixed = runs.run("configs/arbitrage.py", whole, data_dir, *args, "--config.curation.routing=fixed",
                     "--config.curation.route_table=('fr=weak', 'zh=weak', '*=strong')")  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["generated_now"] == 0
    by_hand = {"fr": "weak", "zh": "weak", "hi": "strong", "en": "strong"}
    for i, row in enumerate(_lines(whole / DATASET)):
        assert row["teacher"] == by_hand[rows[i]["language_code"]]
        assert row["score"] == scores[(f"{pool}:{i + 1}", row["teacher"])]
    assert results["choices"] == {
        languages.lookup(g).code: {
            "strong": PER_LANGUAGE * (t == "strong"),
            "weak": PER_LANGUAGE * (t == "weak"),
        }
        for g, t in sorted(by_hand.items(), key=lambda kv: languages.lookup(kv[0]).code)
    }
    learned = runs.run("configs/arbitrage.py", whole, data_dir, *args, "--config.curation.routing=learned",
                       f"--config.curation.embed_checkpoint={sft_run}", "--config.curation.max_length=64",
                       "--config.curation.router_fraction=0.5")  # fmt: skip
    assert learned.returncode == 0, learned.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["generated_now"] == 0 and results["router"]["fit_prompts"] + results["router"][
        "held_out_prompts"] == n // 2  # fmt: skip
    assert (
        0 <= results["router"]["held_out_accuracy"] <= 1 and results["router"]["routed_prompts"] == n - n // 2
    )


@pytest.mark.bad_input
def test_bad_input_is_one_line_and_a_failing_endpoint_keeps_its_replies(
    tmp_path, data_dir, shared_data, sft_run
):
    pool = tmp_path / "pool.jsonl"
    rows = runs.prompt_pool(pool, shared_data, ("fr", "en"), 3)
    empty = tmp_path / "empty.jsonl"
    damaged = [dict(r) for r in rows]
    damaged[2]["inputs"] = ""
    empty.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in damaged), encoding="utf-8")
    unknown = tmp_path / "unknown.jsonl"
    damaged = [dict(r) for r in rows]
    damaged[1]["language_code"] = "xx"
    unknown.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in damaged), encoding="utf-8")
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    single = ("--config.curation.routing=single", "--config.curation.single_teacher=strong")
    cases = [
        (
            teacher_args(empty, sft_run, sft_run, *single),
            f"{empty}:3: 'inputs' (config.curation.text_field) is missing or empty",
        ),
        (
            teacher_args(unknown, sft_run, sft_run, *single),
            f"{unknown}:2: language_code 'xx' is not a known language",
        ),
        (teacher_args(pool, sft_run, tmp_path / "gone", *single), "teacher weak: no checkpoint at"),
        (teacher_args(pool, not_a_run, sft_run, *single), "config.curation.teachers (strong): "),
        (
            teacher_args(
                pool,
                sft_run,
                sft_run,
                "--config.curation.routing=single",
                "--config.curation.single_teacher=nobody",
            ),
            "'nobody' is none of the teachers",
        ),  # fmt: skip
        (
            teacher_args(
                pool,
                sft_run,
                sft_run,
                "--config.curation.routing=fixed",
                "--config.curation.route_table=('fr=weak',)",
            ),
            f"{pool}:4: language 'eng' has no teacher",
        ),  # fmt: skip
        (
            teacher_args(pool, sft_run, sft_run, "--config.curation.routing=reward"),
            "config.curation.reward_model: reward routing",
        ),  # fmt: skip
    ]
    for args, message in cases:
        proc = runs.run("configs/arbitrage.py", tmp_path / "w", data_dir, *args)
        lines = runs.error_lines(proc.stderr)
        assert proc.returncode != 0 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    # An endpoint teacher that fails on the fifth prompt: the error names the teacher and the prompt; every
    # other prompt it answered stays in its log (the sixth too, asked in the failing one's chunk), and a rerun
    # asks only for the fifth.
    failing = rows[4]["inputs"]
    with endpoint_lib.Endpoint(lambda m: f"reply: {m[:20]}", fail_on={failing}) as server:
        args = (*SFT, f"--config.curation.pool=('{pool}',)", "--config.curation.routing=single",
                f"--config.curation.teachers=('api={server.url};model=m;concurrency=1',)",
                "--config.curation.single_teacher=api", "--config.curation.gen_batch=2")  # fmt: skip
        proc = runs.run("configs/arbitrage.py", tmp_path / "api", data_dir, *args)
        lines = runs.error_lines(proc.stderr)
        assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
        assert f"teacher api ({server.url}): prompt {pool}:5: HTTP 400" in lines[0]
        assert "the 5 prompts answered so far are kept in" in lines[0]
        log_ = tmp_path / "api/arbitrage/generations/api/samples.jsonl"
        assert [r["key"] for r in _lines(log_)] == [f"{pool}:{i}" for i in (1, 2, 3, 4, 6)]
        asked = dict(server.seen)
        server.fail_on.clear()
        proc = runs.run("configs/arbitrage.py", tmp_path / "api", data_dir, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert all(server.seen[r["inputs"]] == asked[r["inputs"]] for r in rows if r["inputs"] != failing)
        results = json.loads((tmp_path / "api/arbitrage/results.json").read_text())
        assert results["generation"]["api"]["generated"] == 1 and results["generation"]["api"]["read"] == 5
