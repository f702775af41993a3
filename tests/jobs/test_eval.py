"""The evaluation jobs end to end through main, on the tiny SFT run of the session (the quickstart's model and
SentencePiece vocabulary): Global-MMLU on files in the published layout (parquet and jsonl, 1-shot, 8 simulated
devices), perplexity on real NTREX-128 sentences (one checkpoint, and two compared), lm-eval tasks in local files
through the `eval_harness` job; and their bad input — each one line, exit 2, nothing written."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import runs  # the helper module beside this file

pytestmark = pytest.mark.slow

MESH = "--config.mesh.shape=(2,2,2)"
SFT = (
    "--config.data.seq_len=64",
)  # runs.tiny_sft's data flags (the vocabulary is the same whatever seq_len)


def test_global_mmlu_job_writes_results_table_and_plot(tmp_path, data_dir, sft_run, global_mmlu_dir):
    proc = runs.run(
        "configs/eval_global_mmlu.py", tmp_path, data_dir, *SFT, MESH, f"--config.eval.checkpoint={sft_run}",
        f"--config.eval.data_dir={global_mmlu_dir}", "--config.eval.num_fewshot=1", "--config.eval.rounds=200",
        "--config.eval.batch_size=8",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "global_mmlu"
    results = json.loads((out / "results.json").read_text())
    assert set(results["per_language"]) == set(runs.GLOBAL_MMLU_QUESTIONS)
    assert len(results["predictions"]) == 18
    for p in results["predictions"]:
        assert len(p["loglikelihoods"]) == 4 and all(x < 0 for x in p["loglikelihoods"])
    acc = [p["correct"] for p in results["predictions"]]
    assert results["overall"]["micro"]["all"]["mean"] == pytest.approx(sum(acc) / len(acc), abs=1e-12)
    assert (out / "results.md").read_text().count("|") > 20
    assert (out / "cs_ca_by_language.png").stat().st_size > 1000
    assert "Global-MMLU: accuracy" in proc.stdout and str(out / "results.json") in proc.stdout
    assert "item" in proc.stderr  # the progress bar's unit


def test_perplexity_job_on_ntrex_and_a_comparison(tmp_path, data_dir, sft_run, shared_data):
    ntrex = shared_data / "parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl"
    common = (*SFT, MESH, f"--config.eval.texts={ntrex}", "--config.eval.languages=('eng','fra','hin','arb')",
              "--config.eval.max_texts=6", "--config.eval.rounds=100", f"--config.eval.checkpoint={sft_run}")  # fmt: skip
    proc = runs.run("configs/eval_perplexity.py", tmp_path / "one", data_dir, *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "one/perplexity/results.json").read_text())
    per_language = results["languages"] if "languages" in results else results["per_language"]
    assert set(per_language) == {"eng", "fra", "hin", "arb"}
    assert (tmp_path / "one/perplexity/perplexity_by_language.png").is_file()
    # The same checkpoint compared with itself: no change, no token rose.
    proc = runs.run("configs/eval_perplexity.py", tmp_path / "two", data_dir, *common,
                    f"--config.eval.compare_to={sft_run}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    compared = json.loads((tmp_path / "two/perplexity/results.json").read_text())
    assert compared["kind"] == "perplexity_compare"
    assert (tmp_path / "two/perplexity/perplexity_change.png").is_file()


@pytest.mark.parametrize(
    "flags, culprit",
    [
        (("--config.eval.checkpoint=/nonexistent/run",), "config.eval.checkpoint"),
        (("--config.eval.data_dir=/nonexistent/gmmlu",), "/nonexistent/gmmlu"),
        (("--config.eval.languages=('xx',)",), "'xx'"),
        (("--config.eval.num_fewshot=1", "BAD_DEV"), "'dev'"),
        (("BAD_ANSWER",), "field 'answer'"),
    ],
)
def test_global_mmlu_bad_input_is_one_line(tmp_path, data_dir, sft_run, global_mmlu_dir, flags, culprit):
    data = tmp_path / "data"
    (data / "fr").mkdir(parents=True)
    rows = [runs.global_mmlu_row("fr", i, 0, "CA") for i in range(3)]
    if "BAD_ANSWER" in flags:
        rows[1]["answer"] = "E"
    pq.write_table(pa.Table.from_pylist(rows), data / "fr" / "test-00000-of-00001.parquet")
    flags = [f for f in flags if f not in ("BAD_ANSWER", "BAD_DEV")]
    args = [*SFT, f"--config.eval.checkpoint={sft_run}", f"--config.eval.data_dir={data}", *flags]
    proc = runs.run("configs/eval_global_mmlu.py", tmp_path / "out", data_dir, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = runs.error_lines(proc.stderr)
    assert len(errors) == 1 and culprit in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "out" / "global_mmlu").exists()


def test_an_hf_checkpoint_without_a_tokenizer_is_one_line(tmp_path, data_dir, global_mmlu_dir):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "cohere"}))
    (hf_dir / "model.safetensors").write_bytes(b"")
    proc = runs.run("configs/eval_global_mmlu.py", tmp_path / "out", data_dir, f"--config.eval.checkpoint={hf_dir}",
                    f"--config.eval.data_dir={global_mmlu_dir}")  # fmt: skip
    assert proc.returncode == 2
    errors = runs.error_lines(proc.stderr)
    assert len(errors) == 1 and "config.eval.checkpoint" in errors[0] and "tokenizer.json" in errors[0], (
        errors
    )


def test_benchmarks_run_inside_training_and_go_to_the_metrics(
    tmp_path, data_dir, global_mmlu_dir, shared_data
):
    """config.evals: Global-MMLU and perplexity every 10 steps and at the end of a 15-step SFT run, written to
    metrics.jsonl as "eval" rows (so TensorBoard gets them too) and shown in the summary."""
    ntrex = shared_data / "parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl"
    proc = runs.run(
        "configs/quickstart.py", tmp_path, data_dir, "--config.train.steps=15", "--config.data.seq_len=64",
        "--config.train.eval_batches=1", "--config.train.eval_every=1000", "--config.checkpoint.every=1000",
        "--config.train.sample_prompts=0", "--config.evals.names=('global_mmlu','perplexity')",
        "--config.evals.every=10", f"--config.evals.data_dir={global_mmlu_dir}", "--config.evals.max_items=4",
        f"--config.evals.texts={ntrex}", "--config.evals.text_languages=('fra','swa','hin')",
        "--config.evals.max_texts=3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["step"]: r for r in runs.metric_rows(tmp_path, "eval") if "global_mmlu/accuracy" in r}
    assert sorted(rows) == [10, 15]
    for row in rows.values():
        assert 0 <= row["global_mmlu/accuracy"] <= 1 and {
            "global_mmlu/fr",
            "global_mmlu/sw",
            "global_mmlu/hi",
        } <= set(row)
        assert row["perplexity"] > 1 and {"perplexity/fra", "perplexity/swa", "perplexity/hin"} <= set(row)
    assert "benchmarks    global_mmlu/accuracy" in proc.stderr + proc.stdout


def test_two_processes_score_what_one_does(tmp_path, data_dir, sft_run, global_mmlu_dir):
    """Multi-host: 2 processes x 4 devices, each placing its share of every batch, results gathered and written
    by process 0, give the per-item log-likelihoods of 1 process x 8 devices (1e-5: the same arithmetic on
    another device layout)."""
    args = (*SFT, MESH, f"--config.eval.checkpoint={sft_run}", f"--config.eval.data_dir={global_mmlu_dir}",
            "--config.eval.rounds=50", "--config.eval.batch_size=8")  # fmt: skip
    one = runs.run("configs/eval_global_mmlu.py", tmp_path / "one", data_dir, *args)
    assert one.returncode == 0, one.stderr[-3000:]
    procs = runs.launch_two(
        "configs/eval_global_mmlu.py", tmp_path / "two", data_dir, tmp_path / "logs", *args
    )
    try:
        for proc in procs:
            assert proc.wait(timeout=300) == 0, (tmp_path / "logs" / "0.log").read_text()[-3000:]
    finally:
        runs.stop(procs)
    a, b = (
        json.loads((tmp_path / d / "global_mmlu/results.json").read_text())["predictions"]
        for d in ("one", "two")
    )
    assert [p["sample_id"] for p in a] == [p["sample_id"] for p in b]
    for p, q in zip(a, b, strict=True):
        assert p["loglikelihoods"] == pytest.approx(q["loglikelihoods"], abs=1e-5)
