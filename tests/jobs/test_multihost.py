"""Multi-host jobs on one CPU machine: 2 processes x 4 CPU devices, coordinated by jax.distributed on localhost.

Each process is a real `python -m aya_jax.main` with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID set (what a hand-made cluster sets; TPU VMs and SLURM need none of them), cross-process
collectives over gloo (jax's default CPU implementation). The same command on one process with 8 devices is the
reference: with a fixed `config.data.num_shards` the global batches are identical, so the losses must be too.
SFT, DPO (offline + online) and RLOO are checked that way, and that a process killed mid-run ends the job.
"""

import json
import pathlib
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import runs  # the helper module beside this file

from aya_jax.data import pipeline
from configs import common

REPO = pathlib.Path(__file__).resolve().parents[2]
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
# Short failure bounds so that a dead process ends the job within seconds, not jax's default 100 s.
DISTRIBUTED_ARGS = [
    "--config.mesh.distributed=on",
    "--config.mesh.heartbeat_timeout_seconds=10",
    "--config.mesh.initialization_timeout_seconds=120",
    "--config.mesh.shutdown_timeout_seconds=30",
]
DEAD_PEER_BOUND_S = 60


_env = runs.env


def _cmd(workdir: pathlib.Path, *extra: str, config: str = "configs/quickstart.py", args=ARGS) -> list[str]:
    return runs.command(config, workdir, *args, *extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch_two(
    workdir: pathlib.Path, data_dir: pathlib.Path, logs: pathlib.Path, *extra: str, **command
) -> list[subprocess.Popen]:
    """Both processes of one 2-process job; stderr of process i goes to logs/<i>.log (files, not pipes:
    a process blocked on a full pipe would look like a hang)."""
    logs.mkdir(parents=True, exist_ok=True)
    address = f"localhost:{_free_port()}"
    procs = []
    for process_id in range(2):
        env = _env(
            data_dir,
            4,
            JAX_COORDINATOR_ADDRESS=address,
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(process_id),
        )
        with open(logs / f"{process_id}.log", "w") as err:
            procs.append(
                subprocess.Popen(
                    _cmd(workdir, *DISTRIBUTED_ARGS, *extra, **command),
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    return procs


def _metrics(workdir: pathlib.Path, kind: str) -> dict[int, float]:
    """Per-step loss of `kind` rows; a resumed run appends, and a redone step replaces what it redid."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == kind}


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_processes_match_one_and_a_dead_process_ends_the_job(tmp_path):
    data_dir = tmp_path / "data"

    # ---- reference: one process, 8 devices ------------------------------------------------------------------
    single = tmp_path / "single"
    ref = subprocess.run(
        _cmd(single), env=_env(data_dir, 8), cwd=REPO, capture_output=True, text=True, timeout=300
    )
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
            procs[0].wait(timeout=DEAD_PEER_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still running {DEAD_PEER_BOUND_S} s after process 1 was killed")
        waited = time.time() - killed_at
    finally:
        _stop(procs)
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
        _stop(procs)
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


# ---- preference training: DPO (offline + online) and RLOO on 2 processes x 4 devices -----------------------
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
    ref = subprocess.run(_cmd(single, config=config, args=args), env=_env(data_dir, 8), cwd=REPO,
                         capture_output=True, text=True, timeout=400)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    multi = tmp_path / f"{name}_multi"
    procs = _launch_two(multi, data_dir, tmp_path / f"logs_{name}", config=config, args=args)
    try:
        for proc in procs:
            proc.wait(timeout=400)
    finally:
        _stop(procs)
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
    procs = _launch_two(killed, data_dir, tmp_path / "logs_killed", "--config.train.steps=100",
                        config="configs/rloo.py", args=rloo)  # fmt: skip
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
            procs[0].wait(timeout=DEAD_PEER_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still running {DEAD_PEER_BOUND_S} s after process 1 was killed")
    finally:
        _stop(procs)
    assert procs[0].returncode != 0
    assert "another task died" in (tmp_path / "logs_killed/0.log").read_text()
