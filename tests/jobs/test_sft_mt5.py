"""SFT of the mT5 encoder-decoder through `python -m aya_jax.main --config configs/sft_mt5.py`: it learns on a
sharded mesh, resumes exactly, checks its config; its checkpoint exports to a directory transformers loads,
and the generate job's greedy ids equal transformers' `generate` on that export."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import runs  # the helper module beside this file

REPO = pathlib.Path(__file__).resolve().parents[2]

TINY = [
    "--config.data.inputs_len=48",
    "--config.data.seq_len=32",
    "--config.train.global_batch_size=8",
    "--config.train.log_every=1",
    "--config.train.eval_every=8",
    "--config.train.eval_batches=1",
    "--config.train.progress_bar=False",
    "--config.metrics.tensorboard=False",
    "--config.data.vocab.size=2048",
    "--config.checkpoint.every=8",
    "--config.optimizer.warmup_steps=3",
    "--config.train.sample_prompts=0",
    "--config.optimizer.schedule=constant",  # so an 8-step run's schedule is the first half of a 16-step one's
]


def _run(
    workdir: pathlib.Path, data_dir: pathlib.Path, *extra: str, config: str = "configs/sft_mt5.py"
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "aya_jax.main", "--config", str(REPO / config)]
    cmd += ["--workdir", str(workdir), *(TINY if config == "configs/sft_mt5.py" else ()), *extra]
    return subprocess.run(cmd, env=runs.env(data_dir), cwd=REPO, capture_output=True, text=True, timeout=400)


def _rows(workdir: pathlib.Path, kind: str) -> dict[int, dict]:
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == kind}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted 16-step run on a (data=2, fsdp=2, tensor=2) mesh: (workdir, data dir, process)."""
    root = tmp_path_factory.mktemp("mt5_sft")
    full = _run(root / "full", root / "data", "--config.train.steps=16", "--config.mesh.shape=(2,2,2)",
                "--config.train.sample_prompts=2")  # fmt: skip
    assert full.returncode == 0, full.stderr[-3000:]
    return root / "full", root / "data", full


@pytest.mark.slow
def test_mt5_sft_learns_on_a_sharded_mesh_and_resumes_exactly(full_run, tmp_path):
    workdir, data_dir, full = full_run
    assert "model mt5-tiny" in full.stderr and "SFT finished at step 16" in full.stderr
    assert full.stderr.count("held-out prompt (") == 2  # the summary's greedy replies, through the encoder
    train = _rows(workdir, "train")
    assert sorted(train) == list(range(1, 17))
    # 16 steps, not 12: on the project vocabulary without SentencePiece's dummy prefix the drop takes longer.
    assert train[16]["loss"] < 0.85 * train[1]["loss"], {s: r["loss"] for s, r in train.items()}
    evals = _rows(workdir, "eval")
    assert evals[16]["loss"] < evals[8]["loss"]
    assert any(k.startswith("loss/") for k in evals[16])  # per-language eval loss on the decoder targets

    # Stop at 8, then continue to 16 from the checkpoint: the same losses as the uninterrupted run.
    part = tmp_path / "part"
    first = _run(part, data_dir, "--config.train.steps=8", "--config.mesh.shape=(2,2,2)")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(part, data_dir, "--config.train.steps=16", "--config.mesh.shape=(2,2,2)")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (
        f"resumed from {part / 'checkpoints'} step 8" in second.stderr and "data position 8" in second.stderr
    )
    resumed = _rows(part, "train")
    for step in range(9, 17):
        assert resumed[step]["loss"] == pytest.approx(train[step]["loss"], abs=1e-5), step


def test_mt5_config_errors_name_the_field(tmp_path):
    bad = _run(tmp_path / "w", tmp_path / "data", "--config.model.overrides.rope_theta=5.0")
    assert bad.returncode == 2
    assert (
        "config.model.overrides: ['rope_theta'] have no meaning for the mT5 preset 'mt5-tiny'" in bad.stderr
    )
    bad = _run(tmp_path / "w", tmp_path / "data", "--config.data.inputs_len=-3")
    assert bad.returncode == 2 and "config.data.inputs_len: must be >= 0" in bad.stderr


@pytest.mark.slow
def test_mt5_sft_checkpoint_exports_and_generates_like_transformers(full_run, tmp_path):
    import numpy as np
    import torch
    import transformers

    from aya_jax.data import pipeline
    from configs import sft_mt5

    workdir, data_dir, _ = full_run
    # The run's model and data overrides: its preset, vocabulary size and row format.
    vocab = ["--config.model.preset=mt5-tiny", "--config.data.vocab.size=2048", "--config.data.format=raw"]
    out = tmp_path / "hf"
    export = _run(
        tmp_path / "x", data_dir, *vocab, f"--config.hf_convert.checkpoint_dir={workdir}",
        f"--config.hf_convert.out_dir={out}", "--config.hf_convert.dtype=float32",
        config="configs/hf_convert.py:export",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    prompts = (
        "What is the word for Monday in French?",
        "Hello, how are you?",
        "¿Cómo se dice gato en inglés?",
    )
    gen = _run(
        tmp_path / "gen", data_dir, *vocab, f"--config.generate.checkpoint_dir={workdir}",
        f"--config.generate.prompts={prompts!r}", "--config.generate.max_new_tokens=16",
        "--config.model.dtype=float32", config="configs/generate.py",
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "gen" / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == list(prompts)

    # The same prompt through transformers: the run's SentencePiece vocabulary, EOS appended as in training.
    config = sft_mt5.get_config()
    config.data.vocab.size = 2048
    os.environ["AYA_DATA_DIR"] = str(data_dir)
    spec = pipeline.prepare(config.data)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out, dtype=torch.float32).eval()
    for prompt, row in zip(prompts, rows, strict=True):
        ids = [*spec.vocab.encode(prompt), spec.eos_id]
        with torch.no_grad():
            out_ = model.generate(
                torch.tensor([ids]), max_new_tokens=16, do_sample=False, num_beams=1, eos_token_id=spec.eos_id,
                output_scores=True, return_dict_in_generate=True,
            )  # fmt: skip
        want = out_.sequences[0, 1:].tolist()  # drop the decoder start token
        n = want.index(spec.eos_id) + 1 if spec.eos_id in want else len(want)
        assert row["tokens"] == want[:n], (prompt, row["tokens"], want)
        # Each chosen token's log-probability, from transformers' own (unprocessed, greedy) scores.
        want_lp = [float(torch.log_softmax(out_.scores[i][0], -1)[t]) for i, t in enumerate(want[:n])]
        np.testing.assert_allclose(row["log_probs"], want_lp, atol=1e-4)
