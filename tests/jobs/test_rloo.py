"""RLOO end to end through `python -m aya_jax.main`: pulse on a (data=2, fsdp=2, tensor=2) mesh, exact resume
after SIGKILL, rerun after the end, bad input; and (slow) held-out reward rising from a small SFT policy.

Each run is a real subprocess; the SFT policy it starts from is made here by the `sft` job (the quickstart
shrunk), so nothing depends on files outside the test's temporary directories.
"""

import math
import pathlib

import pytest
import runs  # the helper module beside this file

SFT_TINY = [
    "--config.model.overrides.num_layers=2",
    "--config.data.seq_len=64",
    "--config.data.vocab.size=2048",
    "--config.train.global_batch_size=8",
    "--config.train.log_every=5",
    "--config.train.eval_batches=0",
    "--config.train.progress_bar=False",
    "--config.metrics.tensorboard=False",
    "--config.train.sample_prompts=0",
]
# RLOO on the same model and data config (the vocabulary is found in the shared data cache).
RLOO_TINY = [
    "--config.model.overrides.num_layers=2",
    "--config.data.seq_len=64",
    "--config.data.vocab.size=2048",
    "--config.rloo.prompts_per_step=4",
    "--config.rloo.k=2",
    "--config.rloo.max_new_tokens=8",
    "--config.rloo.max_prompt_tokens=16",
    "--config.rloo.eval_prompts=4",
    "--config.rloo.eval_samples=2",
    "--config.train.eval_every=2",
    "--config.checkpoint.every=2",
    "--config.train.progress_bar=False",
    "--config.metrics.tensorboard=False",
    "--config.mesh.shape=(2,2,2)",
]


_run = runs.run  # every run here is on the shrunk model (runs.TINY_MODEL) and a test's own data directory


def _rloo_args(sft_dir: pathlib.Path, *extra: str) -> list[str]:
    return [*RLOO_TINY, f"--config.checkpoint.init_from={sft_dir}", *extra]


_metrics = runs.metrics


@pytest.fixture(scope="module")
def sft_dir(sft_run):
    """The session's tiny SFT policy (conftest.py): any policy will do for the mechanics."""
    return sft_run


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_dir, sft_dir):
    """An uninterrupted 6-step run."""
    workdir = tmp_path_factory.mktemp("rloo")
    proc = _run("configs/rloo.py", workdir, data_dir, *_rloo_args(sft_dir, "--config.train.steps=6"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


TRAIN_KEYS = {
    "reward", "reward_shaped", "reward_minus_kl", "kl", "entropy", "completion_length", "eos_rate", "loss",
    "grad_norm", "clip_fraction", "time_generation", "time_scoring", "time_update", "new_tokens_per_second",
}  # fmt: skip


@pytest.mark.slow
def test_pulse_logs_evaluates_checkpoints_and_plots(reference_run):
    workdir, proc = reference_run
    train = _metrics(workdir)
    assert sorted(train) == list(range(1, 7))
    for row in train.values():
        assert TRAIN_KEYS <= set(row)
        assert all(math.isfinite(row[k]) for k in TRAIN_KEYS)
        assert 1 <= row["completion_length"] <= 8 and 0 <= row["eos_rate"] <= 1
    evals = _metrics(workdir, "eval")
    assert sorted(evals) == [0, 2, 4, 6]  # step 0 is the SFT policy
    assert all({"reward", "reward_greedy", "eos_rate", "completion_length"} <= set(r) for r in evals.values())
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "6"]
    assert (workdir / "rloo_curves.png").stat().st_size > 10_000
    log = proc.stderr
    for needle in (
        "memory per device: policy state",
        "memory per device: reference params",
        "memory per device: total",
        "= generation",
        "held-out reward (sampled)",
    ):
        assert needle in log, needle
    # memory is reported before the first step runs
    assert log.index("memory per device: total") < log.index("step 1:")


@pytest.mark.slow
def test_rerun_after_the_end_resumes_and_does_not_retrain(reference_run, data_dir, sft_dir):
    workdir, _ = reference_run
    before = (workdir / "metrics.jsonl").read_text()
    proc = _run("configs/rloo.py", workdir, data_dir, *_rloo_args(sft_dir, "--config.train.steps=6"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed the policy from" in proc.stderr and "step 6" in proc.stderr
    assert (workdir / "metrics.jsonl").read_text() == before  # nothing retrained, nothing re-evaluated


@pytest.mark.slow
def test_sigkill_then_rerun_continues_and_matches_uninterrupted(reference_run, data_dir, sft_dir, tmp_path):
    ref_dir, _ = reference_run
    args = _rloo_args(sft_dir, "--config.train.steps=6", "--config.checkpoint.async_save=False")
    runs.kill_when("configs/rloo.py", tmp_path, data_dir, args, lambda w: 3 in _metrics(w), 300)
    assert max(_metrics(tmp_path)) < 6
    rerun = _run("configs/rloo.py", tmp_path, data_dir, *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed the policy from" in rerun.stderr  # continued from a checkpoint, not from step 0
    assert "step 1:" not in rerun.stderr
    got, want = _metrics(tmp_path), _metrics(ref_dir)
    assert sorted(got) == list(range(1, 7))
    for step in range(1, 7):
        for key in ("reward", "kl", "loss", "entropy", "completion_length"):
            assert got[step][key] == want[step][key], (step, key)
    assert _metrics(tmp_path, "eval")[6]["reward"] == _metrics(ref_dir, "eval")[6]["reward"]


@pytest.mark.slow
def test_bad_config_and_missing_sft_run_are_one_line_errors(data_dir, sft_dir, tmp_path):
    proc = _run(
        "configs/rloo.py", tmp_path / "a", data_dir, *_rloo_args(sft_dir, "--config.rloo.k=1"), timeout=120
    )
    assert proc.returncode == 2 and "error: config.rloo.k: must be >= 2, got 1" in proc.stderr
    proc = _run(
        "configs/rloo.py",
        tmp_path / "b",
        data_dir,
        *RLOO_TINY,
        f"--config.checkpoint.init_from={tmp_path}/none",
    )
    assert proc.returncode == 2
    assert (
        "config.checkpoint.init_from: no checkpoint at" in proc.stderr
        and "run the quickstart first" in proc.stderr
    )
    proc = _run(
        "configs/rloo.py", tmp_path / "c", data_dir, *_rloo_args(sft_dir, "--config.rloo.prompts_per_step=3")
    )
    assert proc.returncode == 2 and "config.rloo.prompts_per_step" in proc.stderr


@pytest.mark.slow
def test_rloo_raises_held_out_reward_from_a_small_sft_policy(data_dir, tmp_path):
    """The end-to-end claim, shrunk to about two minutes on one CPU device: an 80-step SFT policy, then 40
    RLOO steps with the verifiable `script` reward; the held-out mean reward (64 prompts x 4 samples, the same
    draws at every evaluation) rises clearly while the KL to the reference stays small and finite."""
    sft = tmp_path / "sft"
    proc = _run(
        "configs/quickstart.py",
        sft,
        data_dir,
        *SFT_TINY,
        "--config.train.global_batch_size=16",
        "--config.train.steps=80",
        "--config.optimizer.warmup_steps=10",
        "--config.checkpoint.every=1000",
        devices=1,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rl = tmp_path / "rloo"
    proc = _run(
        "configs/rloo.py",
        rl,
        data_dir,
        "--config.model.overrides.num_layers=2",
        "--config.data.seq_len=64",
        "--config.data.vocab.size=2048",
        f"--config.checkpoint.init_from={sft}",
        "--config.rloo.prompts_per_step=16",
        "--config.rloo.max_new_tokens=16",
        "--config.rloo.max_prompt_tokens=24",
        "--config.rloo.eval_prompts=64",
        "--config.rloo.eval_samples=4",
        "--config.rloo.eval_greedy=False",
        "--config.rloo.missing_eos_penalty=0",
        "--config.optimizer.learning_rate=3e-3",
        "--config.train.steps=40",
        "--config.train.eval_every=10",
        "--config.train.progress_bar=False",
        "--config.metrics.tensorboard=False",
        devices=1,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = {step: row["reward"] for step, row in _metrics(rl, "eval").items()}
    assert sorted(evals) == [0, 10, 20, 30, 40]
    assert evals[40] > evals[0] + 0.03, evals  # the SFT policy is step 0
    kls = [row["kl"] for row in _metrics(rl).values()]
    assert all(math.isfinite(k) for k in kls)
    assert max(abs(k) for k in kls) < 10.0, kls  # nats per completion of at most 16 tokens
