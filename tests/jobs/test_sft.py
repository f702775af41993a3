"""SFT end to end through `python -m aya_jax.main`: pulse, exact resume after SIGKILL, SIGTERM, bad input.

Each run is a real subprocess on a tiny config (the quickstart shrunk), so what is tested is what a user runs.
"""

import json
import pathlib
import re
import shutil
import signal
import subprocess

import faults  # tests/faults.py
import numpy as np
import pytest
import runs  # the helper module beside this file

# The quickstart, shrunk (runs.TINY_MODEL: 2 layers, a 2048-piece vocabulary), every step logged.
TINY = [
    "--config.data.seq_len=64",
    "--config.train.global_batch_size=8",
    "--config.train.log_every=1",
    "--config.train.eval_every=1000",
    "--config.train.eval_batches=1",
]


def _run(workdir, data_dir, *extra, timeout=300):
    return runs.run("configs/quickstart.py", workdir, data_dir, *TINY, *extra, timeout=timeout)


def _losses(workdir: pathlib.Path) -> dict[int, float]:
    """Per-step train loss; a resumed run appends, and a re-done step must match what it replaced."""
    return {step: row["loss"] for step, row in runs.metrics(workdir).items()}


def _start_and_wait_for_step(workdir, data_dir, args, step, timeout=240) -> subprocess.Popen:
    """Start a run in the background and return once `step` is in its metrics (the run is still going)."""
    return runs.start_and_wait("configs/quickstart.py", workdir, data_dir, [*TINY, *args],
                               lambda w: max(_losses(w) or [0]) >= step, timeout)  # fmt: skip


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_dir):
    """An uninterrupted 12-step run on a (data=2, fsdp=2, tensor=2) mesh."""
    workdir = tmp_path_factory.mktemp("reference")
    proc = _run(
        workdir,
        data_dir,
        "--config.train.steps=12",
        "--config.checkpoint.every=4",
        "--config.mesh.shape=(2,2,2)",
        "--config.train.sample_prompts=3",  # the summary's greedy replies, as the quickstart shows them
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


def test_pulse_trains_logs_checkpoints_and_plots(reference_run):
    workdir, proc = reference_run
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, 13))
    assert all(np.isfinite(v) for v in losses.values())
    assert losses[12] < losses[1], losses  # it learns
    assert (workdir / "loss_curve.png").stat().st_size > 1000
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["12", "4", "8"]
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_row = next(r for r in rows if r["kind"] == "train" and r["step"] == 5)
    for key in (
        "loss",
        "accuracy",
        "grad_norm",
        "learning_rate",
        "tokens_per_second",
        "mfu",
        "data_position",
    ):
        assert key in train_row, key
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    assert eval_rows and any(k.startswith("loss/") for k in eval_rows[-1])  # per-language eval loss
    for what in ("SFT finished at step 12", "checkpoints", "metrics", "loss curve", "tokens/s"):
        assert what in proc.stderr, what
    # The summary shows greedy replies to three held-out prompts, each in another language.
    replies = re.findall(r"held-out prompt \((\w+)\): ", proc.stderr)
    assert len(replies) == 3 and len(set(replies)) == 3, proc.stderr[-3000:]
    assert "greedy replies to held-out prompts:" in proc.stderr


def test_rerun_after_the_end_resumes_and_does_not_retrain(reference_run, data_dir):
    workdir, _ = reference_run
    before = (workdir / "metrics.jsonl").read_text()
    proc = _run(
        workdir,
        data_dir,
        "--config.train.steps=12",
        "--config.checkpoint.every=4",
        "--config.mesh.shape=(2,2,2)",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr and "step 12" in proc.stderr
    new_train_rows = [
        r
        for r in (workdir / "metrics.jsonl").read_text()[len(before) :].splitlines()
        if '"kind": "train"' in r
    ]
    assert new_train_rows == []


@pytest.mark.slow
def test_sigkill_then_rerun_matches_uninterrupted(reference_run, data_dir, tmp_path):
    ref_dir, _ = reference_run
    workdir = tmp_path / "killed"
    args = ["--config.train.steps=12", "--config.checkpoint.every=4", "--config.mesh.shape=(2,2,2)"]
    # Kill once step 6 is logged: checkpoint 4 exists, steps 5-6 will be redone from it.
    proc = _start_and_wait_for_step(workdir, data_dir, args, 6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_losses(workdir))
    assert killed_at < 12, "the run finished before the kill; the test proves nothing"
    first_part = _losses(workdir)

    proc2 = _run(workdir, data_dir, *args)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert "resumed from" in proc2.stderr
    resumed = _losses(workdir)
    reference = _losses(ref_dir)
    assert sorted(resumed) == list(range(1, 13))
    for step in range(1, 13):
        np.testing.assert_allclose(resumed[step], reference[step], rtol=0, atol=1e-6, err_msg=f"step {step}")
    for step, loss in first_part.items():
        np.testing.assert_allclose(loss, reference[step], rtol=0, atol=1e-6, err_msg=f"pre-kill step {step}")


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint_and_exits_zero(data_dir, tmp_path):
    workdir = tmp_path / "preempted"
    args = ["--config.train.steps=400", "--config.checkpoint.every=1000"]
    proc = _start_and_wait_for_step(workdir, data_dir, args, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "preempted: saved step" in err
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and 3 <= steps[0] < 400
    # Loadable: a rerun resumes from exactly that step.
    proc2 = _run(
        workdir, data_dir, "--config.train.steps=" + str(steps[0] + 1), "--config.checkpoint.every=1000"
    )
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    assert f"resumed from {workdir / 'checkpoints'} step {steps[0]}" in proc2.stderr


def test_bad_config_fails_before_compiling_with_one_line(data_dir, tmp_path):
    proc = _run(tmp_path / "bad", data_dir, "--config.mesh.shape=(1,3,2)", timeout=120)
    assert proc.returncode == 2
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and "config.mesh.shape" in err_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_unloadable_checkpoints_are_an_error_not_a_restart(reference_run, data_dir, tmp_path):
    ref_dir, _ = reference_run
    workdir = tmp_path / "corrupt"
    shutil.copytree(ref_dir / "checkpoints", workdir / "checkpoints")
    for path in (workdir / "checkpoints").rglob("*"):
        if path.is_file() and "/state/" in str(path):
            path.write_bytes(b"corrupt")
    proc = _run(
        workdir,
        data_dir,
        "--config.train.steps=12",
        "--config.checkpoint.every=4",
        "--config.mesh.shape=(2,2,2)",
        timeout=200,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "none loads" in proc.stderr and "refusing to restart from step 0" in proc.stderr
    assert (
        not (workdir / "metrics.jsonl").exists()
        or '"kind": "train"' not in (workdir / "metrics.jsonl").read_text()
    )


def test_init_from_starts_a_new_run_from_another_runs_params(reference_run, data_dir, tmp_path):
    ref_dir, _ = reference_run
    workdir = tmp_path / "from_ref"
    proc = _run(
        workdir,
        data_dir,
        "--config.train.steps=2",
        "--config.checkpoint.every=4",
        "--config.mesh.shape=(2,2,2)",
        f"--config.checkpoint.init_from={ref_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"initialised the params of {ref_dir} step 12" in proc.stderr
    new, reference = _losses(workdir), _losses(ref_dir)
    assert sorted(new) == [1, 2]  # a new run: step 0, fresh optimiser, data from the start
    # Same first batch as the reference's step 1, but the trained params: a clearly lower loss, and close to
    # where the reference ended.
    assert new[1] < reference[1] - 0.1, (new, reference)
    assert abs(new[1] - reference[12]) < 0.5, (new, reference)


# ---- fault injection: damaged checkpoints, a full disk, a kill during an async save, two runs at once ---------

REF_ARGS = ["--config.train.steps=12", "--config.checkpoint.every=4", "--config.mesh.shape=(2,2,2)"]


def _assert_same_losses(losses: dict[int, float], reference: dict[int, float], steps) -> None:
    assert sorted(losses) == list(steps), sorted(losses)
    for step in steps:
        np.testing.assert_allclose(losses[step], reference[step], rtol=0, atol=1e-6, err_msg=f"step {step}")


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize(
    "newest,older", [("overwritten bytes", "truncated file"), ("missing file", "garbage metadata")]
)
def test_damaged_checkpoints_fall_back_and_the_rerun_matches(
    reference_run, data_dir, tmp_path, newest, older
):
    """Checkpoints 8 and 12 damaged: the rerun warns naming each, sets them aside, resumes from 4 — never from 0 —
    and its losses from step 5 on equal the uninterrupted run's."""
    ref_dir, _ = reference_run
    workdir = tmp_path / "damaged"
    shutil.copytree(ref_dir, workdir)
    faults.DAMAGE[newest](workdir / "checkpoints" / "12")
    faults.DAMAGE[older](workdir / "checkpoints" / "8")
    before = (workdir / "metrics.jsonl").read_text()
    proc = _run(workdir, data_dir, *REF_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = {step: row["loss"] for (_, step), row in runs.appended_rows(workdir, before).items()}
    for step in (12, 8):
        assert re.search(rf"checkpoint step {step} in \S+ (fails verification: tensor \S+|does not load|holds non-finite)",
                         proc.stderr), proc.stderr[-3000:]  # fmt: skip
    assert f"resumed from {workdir / 'checkpoints'} step 4" in proc.stderr
    _assert_same_losses(rerun, _losses(ref_dir), range(5, 13))
    names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert names == ["12", "12.corrupt", "4", "8", "8.corrupt"], (
        names
    )  # nothing deleted; 4 kept while resumed from


@pytest.mark.faults
@pytest.mark.slow
def test_full_disk_then_kill_during_an_async_save_then_rerun_matches(reference_run, data_dir, tmp_path):
    """(1) The disk fills while step 8 is saved: one line naming the step and the reason, exit 2, step 4 intact.
    (2) Space again, asynchronous saves: SIGKILL while a save is being written. (3) The rerun resumes from the
    newest complete step and its losses equal the uninterrupted run's."""
    ref_dir, _ = reference_run
    workdir = tmp_path / "faulty"
    shutil.copytree(ref_dir, workdir, ignore=shutil.ignore_patterns("8", "12", "metrics.jsonl"))
    checkpoints = workdir / "checkpoints"
    assert faults.step_dirs(checkpoints) == [4]

    proc = runs.run_on_a_full_disk("configs/quickstart.py", workdir, data_dir, *TINY, *REF_ARGS)
    errors = runs.error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert re.match(r"error: checkpoint step 8 could not be written to \S+ \((No space left on device|File too large)\)",
                    errors[0]), errors[0]  # fmt: skip
    assert "Traceback" not in proc.stderr and faults.step_dirs(checkpoints) == [4]

    runs.kill_during_an_async_save("configs/quickstart.py", workdir, data_dir, *TINY, *REF_ARGS)
    complete = faults.step_dirs(checkpoints)

    proc = _run(workdir, data_dir, *REF_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {checkpoints} step {complete[-1]}" in proc.stderr
    losses, reference = _losses(workdir), _losses(ref_dir)  # the last row of each step: the rerun's
    _assert_same_losses(losses, reference, range(5, 13))
    assert not any(".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir())


@pytest.mark.faults
def test_a_second_run_on_a_busy_workdir_refuses_with_one_line(reference_run, data_dir, tmp_path):
    """While a run holds its workdir, a second one started on it exits 2 before touching anything."""
    workdir = tmp_path / "busy"
    first = _start_and_wait_for_step(
        workdir, data_dir, ["--config.train.steps=400", "--config.checkpoint.every=1000"], 1
    )
    try:
        listing = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if "metrics" not in p.name)
        second = _run(workdir, data_dir, "--config.train.steps=400", timeout=120)
        errors = runs.error_lines(second.stderr)
        assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
        assert re.match(
            rf"error: --workdir: {workdir} is in use by a running job \(pid {first.pid} ", errors[0]
        )
        assert (
            sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if "metrics" not in p.name)
            == listing
        )
    finally:
        first.kill()
        first.wait()
