"""The `eval_m_rewardbench` job end to end through `python -m aya_jax.main` (configs/eval_m_rewardbench.py): a
trained reward model (the session's `tiny_reward_model`) scored on pairs in the M-RewardBench layout.

* The reward job's own held-out pairs, written as M-RewardBench data, score exactly the accuracy the reward
  job's last evaluation logged (overall and per language): the evaluator formats and cuts pairs as training did.
* Real English pairs (Anthropic hh-rlhf, harmless-base test) run through the job.
* Bad input: one `error:` line naming the culprit, exit status 2.
"""

from __future__ import annotations

import collections
import gzip
import json
import math
import pathlib
import subprocess

import pytest
import runs  # the helper module beside this file

from aya_jax.data import languages, sources
from aya_jax.evaluation import m_rewardbench as mrb

CONFIG = "configs/eval_m_rewardbench.py"
# The shapes of the session's tiny reward model (tests/jobs/conftest.py `tiny_reward_model`).
REWARD_ARGS = ("--config.data.seq_len=64", "--config.eval.prompt_len=32", "--config.mesh.shape=(2,2,2)")
MAX_EVAL_PAIRS = 16  # that run's config.reward.max_eval_pairs
# fp32 scores of one pair in two programs differ by rounding only: a smaller margin could flip.
MIN_MARGIN = 1e-5
# Any RewardBench subset: one category, so a language's score is its pooled accuracy.
SUBSET = "alpacaeval-easy"


def evaluate(workdir: pathlib.Path, data_dir: pathlib.Path, eval_data: pathlib.Path, *extra: str,
             reward_model: pathlib.Path | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    flags = [*REWARD_ARGS, f"--config.eval.data_dir={eval_data}", "--config.eval.rounds=100", *extra]
    if reward_model is not None:
        flags.append(f"--config.eval.reward_model={reward_model}")
    return runs.run(CONFIG, workdir, data_dir, *flags, timeout=300)


def results_of(workdir: pathlib.Path, proc: subprocess.CompletedProcess) -> dict:
    """results.json, having checked that results.md and the heatmap exist and the summary names all three."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = workdir / "m_rewardbench"
    files = [out / "results.json", out / "results.md", out / "language_by_category.png"]
    for path in files:
        assert path.is_file() and path.stat().st_size > 0, path
        assert str(path) in proc.stdout, (path, proc.stdout[-2000:])
    assert "M-RewardBench: average accuracy" in proc.stdout, proc.stdout[-2000:]
    return json.loads(files[0].read_text())


def held_out_pairs(data_dir: pathlib.Path) -> list[dict[str, str]]:
    """The pairs the reward job's evaluation scored: one process, so one data shard (`Run.data_shards`), read
    unshuffled by the preference task's reader (the `held_out_rows` count, the first max_eval_pairs of them)."""
    path = data_dir / "aya_default_preference" / "validation.jsonl"
    reader = sources.RowReader([str(path)], strict=False, schema=sources.PREFERENCE, max_chars=65_536)
    rows = list(reader)
    assert len(rows) > MAX_EVAL_PAIRS
    return rows[:MAX_EVAL_PAIRS]


@pytest.mark.slow
def test_same_accuracy_as_the_reward_jobs_held_out_evaluation(tiny_reward_model, data_dir, tmp_path):
    last = runs.metric_rows(tiny_reward_model, "eval")[-1]
    assert last["step"] == 4 and last["pairs"] == MAX_EVAL_PAIRS, last
    pairs = held_out_pairs(data_dir)
    codes = [languages.lookup(r["language_code"]).iso639_3 for r in pairs]  # the reward job's metric keys
    counts = collections.Counter(codes)
    # The same pairs: the reward job's per-language counts are those of the derived pairs.
    assert {k[len("pairs/") :]: int(v) for k, v in last.items() if k.startswith("pairs/")} == counts

    # One M-RewardBench configuration per held-out language (any distinct names: M-RewardBench's are FLORES
    # configurations, `read` accepts only those), one subset, so every figure compares.
    config_of = dict(zip(sorted(counts), [c for c in mrb.CONFIGS if c != mrb.TRANSLATION], strict=False))
    assert len(config_of) == len(counts), "more held-out languages than M-RewardBench configurations"
    bench = tmp_path / "bench"
    for language, config in config_of.items():
        rows = [
            {"id": r.get("id") or str(i), "language": config, "prompt": r["prompt"], "chosen": r["chosen"],
             "rejected": r["rejected"], "chosen_model": "", "rejected_model": "", "subset": SUBSET}
            for i, (r, c) in enumerate(zip(pairs, codes, strict=True)) if c == language
        ]  # fmt: skip
        mrb.write_jsonl(bench / config / "test.jsonl", rows)

    workdir = tmp_path / "eval"
    results = results_of(workdir, evaluate(workdir, data_dir, bench, reward_model=tiny_reward_model))
    assert results["n"] == MAX_EVAL_PAIRS
    records = results["pairs"]
    margins = [abs(p["score_chosen"] - p["score_rejected"]) for p in records]
    # The reward job counts a tie 1/2, M-RewardBench 0; and a margin within fp32 rounding could flip: neither.
    assert min(margins) > MIN_MARGIN, sorted(margins)[:3]
    correct = sum(p["correct"] for p in records)
    print(
        f"\nheld-out pairs: reward job accuracy {last['accuracy']:.4f} ({last['accuracy'] * MAX_EVAL_PAIRS:g}/"
        f"{MAX_EVAL_PAIRS}), eval_m_rewardbench {results['accuracy']:.4f} ({correct}/{len(records)})"
    )
    assert correct == round(last["accuracy"] * MAX_EVAL_PAIRS) == last["accuracy"] * MAX_EVAL_PAIRS
    assert results["accuracy"] == correct / MAX_EVAL_PAIRS
    # The scores themselves, not only their order: the reward job's held-out Bradley-Terry loss.
    loss = sum(math.log1p(math.exp(-(p["score_chosen"] - p["score_rejected"]))) for p in records) / len(
        records
    )
    assert loss == pytest.approx(last["loss"], abs=1e-5), (loss, last["loss"])
    for language, config in config_of.items():
        subset = results["languages"][config]["subsets"][SUBSET]
        assert subset["n"] == counts[language]
        assert subset["accuracy"] == pytest.approx(last[f"accuracy/{language}"], abs=1e-6), (language, config)


def hh_rlhf_pairs(path: pathlib.Path, n: int) -> list[dict[str, str]]:
    """The first `n` usable pairs: the transcript up to the last "\\n\\nAssistant:" is the prompt (both sides
    share it), what follows each side's is its reply."""
    marker = "\n\nAssistant:"
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            cut = row["chosen"].rfind(marker)
            prefix = row["chosen"][:cut]
            if cut < 0 or row["rejected"].rfind(marker) != cut or not row["rejected"].startswith(prefix):
                continue
            chosen, rejected = (row[k][cut + len(marker) :].strip() for k in ("chosen", "rejected"))
            if not (prefix.strip() and chosen and rejected):
                continue
            out.append(
                {"id": f"hh-{len(out)}", "language": mrb.ENGLISH, "prompt": prefix.strip(), "chosen": chosen,
                 "rejected": rejected, "chosen_model": "", "rejected_model": "", "subset": "refusals-dangerous"}
            )  # fmt: skip
            if len(out) == n:
                break
    return out


@pytest.mark.slow
def test_real_english_pairs(shared_data, tiny_reward_model, data_dir, tmp_path):
    pairs = hh_rlhf_pairs(shared_data / "safety" / "hh_rlhf" / "harmless-base_test.jsonl.gz", 200)
    assert len(pairs) == 200
    mrb.write_jsonl(tmp_path / "bench" / mrb.ENGLISH / "test.jsonl", pairs)
    workdir = tmp_path / "eval"
    results = results_of(
        workdir, evaluate(workdir, data_dir, tmp_path / "bench", reward_model=tiny_reward_model)
    )
    assert results["n"] == 200
    assert 0.0 <= results["accuracy"] <= 1.0
    assert results["english"]["mean"] == results["accuracy"]  # one subset: the language score is the accuracy
    print(f"\nhh-rlhf harmless-base test, 200 pairs: accuracy {results['accuracy']:.3f} (tiny reward model)")


# ---- bad input: one line naming the culprit, exit 2 ---------------------------------------------------------


def fails(proc: subprocess.CompletedProcess, workdir: pathlib.Path) -> str:
    assert not (workdir / "m_rewardbench").exists()  # stopped before writing anything
    errors = runs.error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    print(f"\n{errors[0]}")
    return errors[0]


def one_pair(tmp_path: pathlib.Path, **drop: bool) -> pathlib.Path:
    row = {"id": "1", "language": mrb.ENGLISH, "prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away.",
           "subset": SUBSET}  # fmt: skip
    rows = [row, {k: v for k, v in row.items() if k not in drop}]
    return mrb.write_jsonl(tmp_path / "bench" / mrb.ENGLISH / "test.jsonl", rows)


@pytest.mark.slow
def test_a_pair_without_chosen(tiny_reward_model, data_dir, tmp_path):
    path = one_pair(tmp_path, chosen=True)
    error = fails(
        evaluate(tmp_path / "eval", data_dir, tmp_path / "bench", reward_model=tiny_reward_model),
        tmp_path / "eval",
    )
    assert f"{path}:2: field 'chosen' is missing" in error, error


@pytest.mark.slow
def test_an_sft_run_as_the_reward_model(sft_run, data_dir, tmp_path):
    one_pair(tmp_path)
    error = fails(
        evaluate(tmp_path / "eval", data_dir, tmp_path / "bench", reward_model=sft_run), tmp_path / "eval"
    )
    assert error.startswith(f"error: config.eval.reward_model: {sft_run}: no reward_model.json"), error


@pytest.mark.slow
def test_no_model_to_evaluate(data_dir, tmp_path):
    one_pair(tmp_path)
    error = fails(evaluate(tmp_path / "eval", data_dir, tmp_path / "bench"), tmp_path / "eval")
    assert "config.eval.reward_model" in error and "set exactly one of reward_model" in error, error
