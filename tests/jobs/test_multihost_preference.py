"""Multi-host DPO (offline + one online iteration) and RLOO on one CPU machine: 2 processes x 4 CPU devices
(runs.launch_two) against 1 process x 8 devices from the same SFT policy and reward model. Every host holds the
iteration's whole prompt batch and the same sampling keys, the rollouts are sharded over all 8 devices, and each
host scores the rows its devices hold: every logged metric must equal the one-process run's. A process killed
mid-run ends the other with an error.
"""

import json
import pathlib
import signal
import subprocess
import time

import numpy as np
import pytest
import runs  # the helper module beside this file

TINY = ["--config.model.overrides.num_layers=2", "--config.data.seq_len=64", "--config.data.vocab.size=2048",
        "--config.train.progress_bar=False", "--config.train.plot=False", "--config.metrics.tensorboard=False",
        "--config.mesh.shape=(2,2,2)", "--config.metrics.peak_flops_per_device=1e12"]  # fmt: skip
DPO = [*TINY, "--config.dpo.prompt_len=32", "--config.dpo.max_new_tokens=8", "--config.dpo.offline_steps=2",
       "--config.dpo.iterations=1", "--config.dpo.prompts_per_iteration=8", "--config.dpo.samples_per_prompt=2",
       "--config.dpo.epochs_per_iteration=1", "--config.dpo.eval_prompts=4", "--config.dpo.eval_samples=1",
       "--config.dpo.missing_eos_penalty=0", "--config.train.global_batch_size=8", "--config.checkpoint.every=2",
       "--config.data.num_shards=2"]  # fmt: skip
RLOO = [*TINY, "--config.rloo.prompts_per_step=4", "--config.rloo.k=2", "--config.rloo.max_new_tokens=8",
        "--config.rloo.max_prompt_tokens=16", "--config.rloo.eval_prompts=4", "--config.rloo.eval_samples=2",
        "--config.train.eval_every=2", "--config.checkpoint.every=2"]  # fmt: skip
# Wall-clock figures differ between any two runs; everything else a row records must not.
TIMING = ("time_", "_per_second", "mfu", "elapsed")


def _rows(workdir: pathlib.Path) -> dict[tuple[str, int], dict[str, float]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        (r["kind"], r["step"]): {
            k: v for k, v in r.items() if isinstance(v, int | float) and not any(t in k for t in TIMING)
        }
        for r in rows
    }


def _one_and_two(tmp_path, data_dir, name, config, args) -> tuple[dict, dict]:
    """The metrics of `config` run as 1 process x 8 devices and as 2 processes x 4 devices."""
    single = tmp_path / f"{name}_single"
    ref = runs.run(config, single, data_dir, *args)
    assert ref.returncode == 0, ref.stderr[-3000:]
    multi = tmp_path / f"{name}_multi"
    procs = runs.launch_two(config, multi, data_dir, tmp_path / f"logs_{name}", *args)
    try:
        for proc in procs:
            proc.wait(timeout=400)
    finally:
        runs.stop(procs)
    logs = [(tmp_path / f"logs_{name}/{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    return _rows(single), _rows(multi)


def _assert_same_metrics(one: dict, two: dict) -> None:
    assert sorted(two) == sorted(one) and one
    for key, row in one.items():
        assert sorted(two[key]) == sorted(row), key
        for name, value in row.items():
            np.testing.assert_allclose(two[key][name], value, rtol=1e-5, atol=1e-5, err_msg=f"{key} {name}")


@pytest.mark.slow
def test_dpo_and_rloo_on_two_processes_match_one_and_a_dead_process_ends_the_job(
    tmp_path, data_dir, sft_run, tiny_reward_model
):
    sft, rm = sft_run, tiny_reward_model  # the session's (conftest.py)
    dpo = [*DPO, f"--config.checkpoint.init_from={sft}", f"--config.dpo.reward_model={rm}"]
    one, two = _one_and_two(tmp_path, data_dir, "dpo", "configs/dpo.py", dpo)
    assert {kind for kind, _ in one} >= {"train", "online"}  # offline steps and one online iteration
    _assert_same_metrics(one, two)

    rloo = [*RLOO, f"--config.checkpoint.init_from={sft}"]
    one, two = _one_and_two(tmp_path, data_dir, "rloo", "configs/rloo.py", [*rloo, "--config.train.steps=3"])
    assert ("train", 3) in one and ("eval", 2) in one
    _assert_same_metrics(one, two)

    # A process that dies mid-run ends the other with an error, not a hang in a collective.
    killed = tmp_path / "rloo_killed"
    procs = runs.launch_two("configs/rloo.py", killed, data_dir, tmp_path / "logs_killed", *rloo,
                            "--config.train.steps=100")  # fmt: skip
    try:
        deadline = time.time() + 300
        while (
            not (killed / "metrics.jsonl").exists() or "train" not in (killed / "metrics.jsonl").read_text()
        ):
            assert all(p.poll() is None for p in procs), (tmp_path / "logs_killed/0.log").read_text()[-3000:]
            assert time.time() < deadline, "the 2-process RLOO run did not reach its first step"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        try:
            procs[0].wait(timeout=runs.DEAD_PEER_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still running {runs.DEAD_PEER_BOUND_S} s after process 1 was killed")
    finally:
        runs.stop(procs)
    assert procs[0].returncode != 0
    assert "another task died" in (tmp_path / "logs_killed/0.log").read_text()
