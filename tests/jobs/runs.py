"""Subprocess runs of `python -m aya_jax.main` for the end-to-end job tests: the environment (a data directory of
the test's own, N simulated CPU devices), the command on the shrunk model, metric rows, a background run to
interrupt, and a tiny SFT checkpoint built by the real sft job (the quickstart shrunk) for the jobs that start
from one."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import faults  # tests/faults.py
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# The quickstart shrunk: 2 layers, a 2048-piece vocabulary, short rows. The preference jobs repeat the model
# and vocabulary flags (config.model / config.data describe the SFT run they start from).
TINY_MODEL = [
    "--config.model.overrides.num_layers=2",
    "--config.data.vocab.size=2048",
    "--config.train.progress_bar=False",
    "--config.metrics.tensorboard=False",
    "--config.checkpoint.async_save=False",
    "--config.train.sample_prompts=0",  # no greedy replies in the summary: not what these tests check
]


def env(data_dir: pathlib.Path, devices: int = 8, **extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        AYA_DATA_DIR=str(data_dir),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(REPO),
        **extra,
    )
    return out


def command(config: str, workdir: pathlib.Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aya_jax.main",
        "--config",
        str(REPO / config),
        "--workdir",
        str(workdir),
        *TINY_MODEL,
        *extra,
    ]


# The timeouts here only guard against a hung job: a 2-core machine shared with other work runs these jobs two
# to three times slower than a quiet one, and a test must not fail for that.
def run(config: str, workdir: pathlib.Path, data_dir: pathlib.Path, *extra: str, timeout: int = 900,
        devices: int = 8) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run(
        command(config, workdir, *extra),
        env=env(data_dir, devices),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_sft(workdir: pathlib.Path, data_dir: pathlib.Path, steps: int = 120) -> pathlib.Path:
    """A tiny SFT checkpoint of the default data (the real sft job); returns its workdir. 120 steps: a backbone
    that has learnt the chat format well enough for a reward head on its end-of-turn state to tell the answer's
    language (with 40 steps the reward test's model stays at chance)."""
    proc = run(
        "configs/quickstart.py", workdir, data_dir,
        f"--config.train.steps={steps}", "--config.data.seq_len=64", "--config.train.eval_batches=1",
        "--config.train.eval_every=1000", "--config.train.log_every=10", f"--config.checkpoint.every={steps}",
        "--config.train.plot=False",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def metric_rows(workdir: pathlib.Path, kind: str) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["kind"] == kind]


def metrics(workdir: pathlib.Path, kind: str = "train") -> dict[int, dict]:
    """Rows of one kind by step; a resumed run appends, and a redone step replaces what it redid."""
    return {r["step"]: r for r in metric_rows(workdir, kind)}


def wait_for(done, proc: subprocess.Popen, timeout: int) -> None:
    """Until `done()` is true; fails if `proc` ends first or the time runs out."""
    deadline = time.time() + timeout
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"the process ended first: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"not reached within {timeout} s")
        time.sleep(0.05)


def start_and_wait(
    config: str, workdir, data_dir, args, done, timeout: int = 600, devices: int = 8
) -> subprocess.Popen:
    """Start a run in the background; return once `done(workdir)` is true (the run still going)."""
    proc = subprocess.Popen(
        command(config, workdir, *args), env=env(data_dir, devices), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: done(workdir), proc, timeout)
    return proc


def kill_when(config: str, workdir, data_dir, args, done, timeout: int = 600, devices: int = 8) -> None:
    """Start a run and SIGKILL it (no chance to clean up) once `done(workdir)` is true: the interrupted run that
    a rerun must resume."""
    proc = start_and_wait(config, workdir, data_dir, args, done, timeout, devices)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# ---- two processes of one job (multi-host on one machine) --------------------------------------------------
# Short failure bounds so that a dead process ends the job within seconds, not jax's default 100 s.
DISTRIBUTED_ARGS = [
    "--config.mesh.distributed=on",
    "--config.mesh.heartbeat_timeout_seconds=10",
    "--config.mesh.initialization_timeout_seconds=120",
    "--config.mesh.shutdown_timeout_seconds=30",
]
DEAD_PEER_BOUND_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch_two(
    config: str, workdir: pathlib.Path, data_dir: pathlib.Path, logs: pathlib.Path, *args: str
) -> list[subprocess.Popen]:
    """Both processes of one 2-process x 4-device job, coordinated on localhost (what a hand-made cluster sets:
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID); stderr of process i goes to logs/<i>.log
    (files, not pipes: a process blocked on a full pipe would look like a hang)."""
    logs.mkdir(parents=True, exist_ok=True)
    address = f"localhost:{_free_port()}"
    procs = []
    for process_id in range(2):
        extra = dict(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
        with open(logs / f"{process_id}.log", "w") as err:
            procs.append(
                subprocess.Popen(
                    command(config, workdir, *args, *DISTRIBUTED_ARGS),
                    env=env(data_dir, 4, **extra),
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )  # fmt: skip
            )
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- fault injection (tests/faults.py damages files; these run the jobs around the faults) ------------------


def appended_rows(workdir: pathlib.Path, before: str, kinds=("train",)) -> dict[tuple[str, int], dict]:
    """(kind, step) -> row of the rows a rerun appended to metrics.jsonl after `before` (its earlier text)."""
    text = (workdir / "metrics.jsonl").read_text()[len(before) :]
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {(r["kind"], r["step"]): r for r in rows if r["kind"] in kinds}


def run_on_a_full_disk(config: str, workdir: pathlib.Path, data_dir: pathlib.Path, *args: str,
                       free_bytes: int = 2**20) -> subprocess.CompletedProcess:  # fmt: skip
    """A run whose checkpoint directory (`workdir`/checkpoints, which must exist) has `free_bytes` left."""
    with faults.full_disk(workdir / "checkpoints", free_bytes) as preexec_fn:
        return subprocess.run(
            command(config, workdir, *args), env=env(data_dir), cwd=REPO, capture_output=True, text=True,
            timeout=400, preexec_fn=preexec_fn,
        )  # fmt: skip


def kill_during_an_async_save(config: str, workdir: pathlib.Path, data_dir: pathlib.Path, *args: str,
                               min_step: int = 0) -> None:  # fmt: skip
    """Start a run with asynchronous saves and SIGKILL it while the checkpoint of a step >= `min_step` is being
    written (orbax's temporary step directory `<step>.orbax-checkpoint-tmp...` exists)."""
    checkpoints = workdir / "checkpoints"

    def saving() -> bool:
        names = [p.name for p in checkpoints.iterdir()] if checkpoints.is_dir() else []
        return any(".orbax-checkpoint-tmp" in n and int(n.split(".")[0]) >= min_step for n in names)

    proc = subprocess.Popen(
        command(config, workdir, *args, "--config.checkpoint.async_save=True"), env=env(data_dir), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    try:
        while not saving():
            assert proc.poll() is None, "the run ended before a save could be interrupted"
            assert time.time() < deadline, "no save started within 300 s"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def prompt_pool(path: pathlib.Path, shared_data: pathlib.Path, langs, per_language: int) -> list[dict]:
    """Aya Dataset rows of real prompts (HPLT OASST test prompts, the first `per_language` of each language, cut
    to 160 characters) written to `path`: the pool of the curation jobs' tests."""
    rows = []
    for lang in langs:
        taken = 0
        with (shared_data / f"instruct/hplt_oasst_test_prompts/test_{lang}.jsonl").open(
            encoding="utf-8"
        ) as f:
            for line in f:
                try:  # the published test_hi.jsonl has one malformed line
                    prompt = json.loads(line)["prompt"]
                except json.JSONDecodeError:
                    continue
                rows.append({"inputs": prompt[:160], "targets": "gold", "language": lang, "language_code": lang,
                             "annotation_type": "original", "user_id": "hplt"})  # fmt: skip
                taken += 1
                if taken == per_language:
                    break
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return rows


@contextlib.contextmanager
def served(checkpoint: pathlib.Path, workdir: pathlib.Path, data_dir: pathlib.Path, name: str, max_len: int,
           *flags: str, slots: int = 4):  # fmt: skip
    """The `serve` job on `checkpoint` (a run of the shrunk quickstart, one device) while the block runs; yields
    its base URL (from <workdir>/server.json); SIGTERM at the end."""
    server = subprocess.Popen(
        command("configs/serve.py", workdir, *flags, f"--config.serve.checkpoint_dir={checkpoint}",
                "--config.serve.port=0", f"--config.serve.model_name={name}", f"--config.serve.slots={slots}",
                f"--config.serve.max_len={max_len}"),
        env=env(data_dir, devices=1), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (workdir / "server.json").exists(), server, 600)
        yield json.loads((workdir / "server.json").read_text())["url"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


# ---- benchmark files in the published layouts -----------------------------------------------------------------

GLOBAL_MMLU_QUESTIONS = {
    "fr": ("Quelle est la capitale de la France ?", ["Paris", "Lyon", "Marseille", "Nice"]),
    "sw": ("Mji mkuu wa Kenya ni upi?", ["Mombasa", "Nairobi", "Kisumu", "Nakuru"]),
    "hi": ("भारत की राजधानी क्या है?", ["मुंबई", "कोलकाता", "नई दिल्ली", "चेन्नई"]),
}


def global_mmlu_row(lang: str, i: int, answer_index: int, label: str) -> dict:
    question, options = GLOBAL_MMLU_QUESTIONS[lang]
    return {
        "sample_id": f"{lang}/{i}", "subject": "geography", "subject_category": "Humanities",
        "question": f"{question} ({i})", "option_a": options[0], "option_b": options[1], "option_c": options[2],
        "option_d": options[3], "answer": "ABCD"[answer_index], "required_knowledge": "", "time_sensitive": "No",
        "reference": "", "culture": "", "region": "", "country": "", "cultural_sensitivity_label": label,
        "is_annotated": label != "-",
    }  # fmt: skip


def write_global_mmlu(root: pathlib.Path) -> pathlib.Path:
    """A small Global-MMLU folder in the published Hugging Face layout (parquet; sw as jsonl): 6 test items per
    language (CS, CA and unannotated) and 2 dev items."""
    for lang in GLOBAL_MMLU_QUESTIONS:
        (root / lang).mkdir(parents=True)
        test = [global_mmlu_row(lang, i, i % 4, ["CS", "CA", "-"][i % 3]) for i in range(6)]
        dev = [global_mmlu_row(lang, 100 + i, 2, "-") for i in range(2)]
        if lang == "sw":  # the jsonl form of the layout
            for split, items in (("test", test), ("dev", dev)):
                (root / lang / f"{split}.jsonl").write_text(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8"
                )
        else:
            pq.write_table(pa.Table.from_pylist(test), root / lang / "test-00000-of-00001.parquet")
            pq.write_table(pa.Table.from_pylist(dev), root / lang / "dev-00000-of-00001.parquet")
    return root
