"""Multi-host jobs on one CPU machine: 2 processes x 4 CPU devices, coordinated by jax.distributed on localhost.

Each process is a real `python -m aya_jax.main` with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID set (what a hand-made cluster sets; TPU VMs and SLURM need none of them), cross-process
collectives over gloo (jax's default CPU implementation). The same command on one process with 8 devices is the
reference: with a fixed `config.data.num_shards` the global batches are identical, so the losses must be too.
Checked that way here for SFT (and that a process killed mid-run ends the job, and the rerun resumes); for DPO
and RLOO in test_multihost_preference.py.
"""

import json
import pathlib
import signal
import subprocess
import time

import numpy as np
import pytest
import runs  # the helper module beside this file

from aya_jax.data import pipeline
from configs import common

STEPS = 10

# The quickstart shrunk (as in tests/jobs/test_sft.py), on a (data=2, fsdp=2, tensor=2) mesh that spans
# both processes, with two logical data shards (one per process in the 2-process runs).
ARGS = [
    "--config.model.overrides.num_layers=2",
    "--config.data.seq_len=64",
    "--config.data.vocab.size=2048",
    "--config.data.num_shards=2",
    "--config.train.global_batch_size=8",
    f"--config.train.steps={STEPS}",
    "--config.train.log_every=1",
    "--config.train.eval_every=1000",
    "--config.train.eval_batches=1",
    "--config.train.progress_bar=False",
    "--config.train.plot=False",
    "--config.checkpoint.every=4",
    "--config.metrics.tensorboard=False",
    "--config.metrics.peak_flops_per_device=1e12",  # skip the start-up matmul measurement
    "--config.mesh.shape=(2,2,2)",
    "--config.train.sample_prompts=2",  # the summary's greedy replies: sampling on every process at the end
]


def _launch_two(workdir, data_dir, logs, *extra) -> list[subprocess.Popen]:
    return runs.launch_two("configs/quickstart.py", workdir, data_dir, logs, *ARGS, *extra)


def _metrics(workdir: pathlib.Path, kind: str) -> dict[int, float]:
    """Per-step loss of `kind` rows; a resumed run appends, and a redone step replaces what it redid."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == kind}


@pytest.mark.slow
def test_two_processes_match_one_and_a_dead_process_ends_the_job(tmp_path):
    data_dir = tmp_path / "data"

    # ---- reference: one process, 8 devices ------------------------------------------------------------------
    single = tmp_path / "single"
    ref = runs.run("configs/quickstart.py", single, data_dir, *ARGS)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "reads shards [0, 2) of 2, 8 rows" in ref.stderr
    reference = _metrics(single, "train")
    assert sorted(reference) == list(range(1, STEPS + 1))

    # ---- 2 processes x 4 devices; SIGKILL process 1 mid-run ------------------------------------------------
    multi = tmp_path / "multi"
    # As on a pod: checkpoints in a directory of their own that every process shares (gs:// there).
    shared = f"--config.checkpoint.directory={tmp_path / 'shared' / 'checkpoints'}"
    procs = _launch_two(multi, data_dir, tmp_path / "logs_killed", shared)
    try:
        deadline = time.time() + 300
        while max(_metrics(multi, "train") or [0]) < 6:  # checkpoint 4 is written by then
            assert all(p.poll() is None for p in procs), (tmp_path / "logs_killed/0.log").read_text()[-3000:]
            assert time.time() < deadline, "the 2-process run did not reach step 6"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.time()
        try:
            procs[0].wait(timeout=runs.DEAD_PEER_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still running {runs.DEAD_PEER_BOUND_S} s after process 1 was killed")
        waited = time.time() - killed_at
    finally:
        runs.stop(procs)
    survivor_log = (tmp_path / "logs_killed/0.log").read_text()
    assert procs[0].returncode != 0, survivor_log[-3000:]
    assert "another task died" in survivor_log, survivor_log[-3000:]
    first_part = _metrics(multi, "train")
    assert max(first_part) < STEPS, "the run finished before the kill; the test proves nothing"
    print(f"survivor exited with {procs[0].returncode} {waited:.1f} s after its peer was killed")

    # ---- the same command again: resumes from the 2-process checkpoint and finishes ------------------------
    procs = _launch_two(multi, data_dir, tmp_path / "logs_resumed", shared)
    try:
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        runs.stop(procs)
    logs = [(tmp_path / f"logs_resumed/{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert all(f"resumed from {tmp_path / 'shared' / 'checkpoints'} step" in log for log in logs)
    assert not (multi / "checkpoints").exists()
    # Each process reads only its own shard: 4 of the 8 rows of every global batch.
    assert "process 0 of 2 reads shards [0, 1) of 2, 4 rows" in logs[0]
    assert "process 1 of 2 reads shards [1, 2) of 2, 4 rows" in logs[1]

    losses = _metrics(multi, "train")
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        np.testing.assert_allclose(losses[step], reference[step], rtol=0, atol=1e-6, err_msg=f"step {step}")
    for step, loss in first_part.items():  # the steps run before the kill, too
        np.testing.assert_allclose(loss, reference[step], rtol=0, atol=1e-6, err_msg=f"pre-kill step {step}")
    np.testing.assert_allclose(_metrics(multi, "eval")[STEPS], _metrics(single, "eval")[STEPS], atol=1e-6)


def test_host_shards_concatenate_to_the_one_host_batch(tmp_path):
    """Host 0 reading shard 0 and host 1 reading shard 1 give, side by side, what one host reading both does:
    the property that makes the global batch independent of the host count."""
    config = common.base_config().data
    config.data_dir = str(tmp_path)
    config.vocab.size = 2000
    config.seq_len = 64
    config.shuffle_buffer = 256
    spec = pipeline.prepare(config)

    def take(shards: range, start: int = 0) -> list[dict[str, np.ndarray]]:
        kwargs = dict(shard_batch_size=2, num_shards=2, seed=3, start_position=start)
        iterator = pipeline.HostTrainIterator(spec, config, shards=shards, **kwargs)
        return [next(iterator) for _ in range(3)]

    one_host = take(range(0, 2))
    host0, host1 = take(range(0, 1)), take(range(1, 2))
    for whole, part0, part1 in zip(one_host, host0, host1, strict=True):
        assert whole["decoder_target_tokens"].shape == (4, 64)
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([part0[key], part1[key]]))
    assert not np.array_equal(host0[0]["decoder_target_tokens"], host1[0]["decoder_target_tokens"])
    # A resumed iterator continues the same global stream.
    resumed = take(range(0, 2), start=1)
    for key in one_host[1]:
        np.testing.assert_array_equal(resumed[0][key], one_host[1][key])


def test_one_process_holds_every_batch_row():
    from aya_jax import sharding

    rules = sharding.normalize_rules(common.default_rules())
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    assert sharding.process_batch_rows(mesh, rules, 8) == range(0, 8)


def test_bad_distributed_settings_fail_before_initializing(monkeypatch):
    from aya_jax import sharding

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(sharding.ShardingError, match=r"\$JAX_NUM_PROCESSES: expected an integer, got 'two'"):
        sharding.maybe_initialize_distributed("auto")
    with pytest.raises(sharding.ShardingError, match="config.mesh.heartbeat_timeout_seconds: must be >= 1"):
        sharding.maybe_initialize_distributed("on", heartbeat_timeout_seconds=0)
    with pytest.raises(sharding.ShardingError, match="config.mesh.distributed: 'yes' is not one of"):
        sharding.maybe_initialize_distributed("yes")
    assert sharding.maybe_initialize_distributed("off") is False
