"""SFT of the mT5 encoder-decoder through `python -m aya_jax.main --config configs/sft_mt5.py`: it learns on a
sharded mesh, resumes exactly, and checks its config."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

TINY = [
    "--config.data.inputs_len=48",
    "--config.data.seq_len=32",
    "--config.train.global_batch_size=8",
    "--config.train.log_every=1",
    "--config.train.eval_every=6",
    "--config.train.eval_batches=1",
    "--config.train.progress_bar=False",
    "--config.metrics.tensorboard=False",
    "--config.data.vocab.size=2048",
    "--config.checkpoint.every=6",
    "--config.optimizer.warmup_steps=3",
    "--config.optimizer.schedule=constant",  # so a 6-step run's schedule is the first half of a 12-step one's
]


def _run(workdir: pathlib.Path, data_dir: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        AYA_DATA_DIR=str(data_dir),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(REPO),
    )
    cmd = [sys.executable, "-m", "aya_jax.main", "--config", str(REPO / "configs/sft_mt5.py")]
    cmd += ["--workdir", str(workdir), *TINY, *extra]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)


def _rows(workdir: pathlib.Path, kind: str) -> dict[int, dict]:
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == kind}


@pytest.mark.slow
def test_mt5_sft_learns_on_a_sharded_mesh_and_resumes_exactly(tmp_path):
    data_dir = tmp_path / "data"
    full = _run(tmp_path / "full", data_dir, "--config.train.steps=12", "--config.mesh.shape=(2,2,2)")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "model mt5-tiny" in full.stderr and "SFT finished at step 12" in full.stderr
    train = _rows(tmp_path / "full", "train")
    assert sorted(train) == list(range(1, 13))
    assert train[12]["loss"] < 0.85 * train[1]["loss"], {s: r["loss"] for s, r in train.items()}
    evals = _rows(tmp_path / "full", "eval")
    assert evals[12]["loss"] < evals[6]["loss"]
    assert any(k.startswith("loss/") for k in evals[12])  # per-language eval loss on the decoder targets

    # Stop at 6, then continue to 12 from the checkpoint: the same losses as the uninterrupted run.
    part = tmp_path / "part"
    first = _run(part, data_dir, "--config.train.steps=6", "--config.mesh.shape=(2,2,2)")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(part, data_dir, "--config.train.steps=12", "--config.mesh.shape=(2,2,2)")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "step 6 (data position 6)" in second.stderr
    resumed = _rows(part, "train")
    for step in range(7, 13):
        assert resumed[step]["loss"] == pytest.approx(train[step]["loss"], abs=1e-5), step


def test_mt5_config_errors_name_the_field(tmp_path):
    bad = _run(tmp_path / "w", tmp_path / "data", "--config.model.overrides.rope_theta=5.0")
    assert bad.returncode == 2
    assert (
        "config.model.overrides: ['rope_theta'] have no meaning for the mT5 preset 'mt5-tiny'" in bad.stderr
    )
    bad = _run(tmp_path / "w", tmp_path / "data", "--config.data.inputs_len=-3")
    assert bad.returncode == 2 and "config.data.inputs_len: must be >= 0" in bad.stderr
