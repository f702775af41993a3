"""The command line: every flag or config error is one line naming the flag or file, exit status 2, before any
work starts (real `python -m aya_jax.main` subprocesses)."""

import os
import pathlib
import subprocess
import sys

import pytest

from aya_jax import main
from configs import common

REPO = pathlib.Path(__file__).resolve().parents[1]


def _main(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    env.pop("AYA_JAX_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "aya_jax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config", "configs/quickstart.py", "--config.train.stpes=3"],
            "error: --config.train.stpes: no such config field 'stpes' (did you mean 'steps'?)",
        ),
        (["--config", "configs/no_such_experiment.py"], "error: --config: "),
        (["--config", "configs/quickstart.py", "--config.train.steps=many"], "error: "),
        ([], "error: --config is required"),
    ],
)
def test_bad_flags_are_one_line_errors(args, message):
    proc = _main(*args)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_flag_error_message_names_the_flag():
    with pytest.raises(AttributeError) as raised:  # what ml_collections raises for an unknown field
        common.base_config().train.stpes  # noqa: B018
    argv = ["main", "--config.train.stpes=3"]
    assert main.flag_error_message(raised.value, argv) == (
        "--config.train.stpes: no such config field 'stpes' (did you mean 'steps'?)"
    )
