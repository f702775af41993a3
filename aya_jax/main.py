"""Entry point: `python -m aya_jax.main --config configs/<experiment>.py[:arg] [--config.field=value] [--workdir DIR]`.

The only file with flags. It sets up logging, loads the config, and hands it to the job named by `config.job`
(aya_jax/jobs/). Mistakes end the run with one line naming the culprit and exit status 2: a command-line flag
that does not parse (a mistyped `--config.<field>`, with the field it was probably meant to be; a value of the
wrong type; a config file that does not exist), and every config or input error a job raises (a ValueError,
FileNotFoundError or CheckpointError naming the field, file or tensor). A run stopped by the non-finite guard
(config.train.nonfinite) ends the same way with exit status 3. AYA_JAX_TRACEBACK=1 shows tracebacks.
"""

from __future__ import annotations

import logging
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (seqio's reader) is chatty on import

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from aya_jax import jobs  # noqa: E402
from aya_jax.checkpoint import CheckpointError  # noqa: E402
from aya_jax.training import loop  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; default: config.workdir.")

_ERRORS = (ValueError, FileNotFoundError, CheckpointError)
NONFINITE_STATUS = 3  # training stopped on a non-finite loss or gradient norm (config.train.nonfinite)
TRACEBACK_HINT = "AYA_JAX_TRACEBACK=1 shows the traceback"


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("absl", "jax._src", "orbax", "tensorflow", "etils", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A failed checkpoint write (a full disk) is reported once, as the job's one-line CheckpointError; orbax's
    # background threads and asyncio would each echo it with a traceback first.
    logging.getLogger("absl").addFilter(lambda r: "_SignalingThread.run() raised" not in r.getMessage())
    logging.getLogger("asyncio").addFilter(lambda r: "exception was never retrieved" not in r.getMessage())
    sys.unraisablehook = _quiet_closed_loop


def _quiet_closed_loop(unraisable) -> None:
    """Drop "Event loop is closed" raised while orbax's reader threads are collected after a restore that
    failed (reported already, as one line); anything else goes to the default hook."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def _fail(message: str, error: BaseException, status: int = 2) -> None:
    """Print `error: <one line>` and exit `status` (or re-raise with AYA_JAX_TRACEBACK=1)."""
    if os.environ.get("AYA_JAX_TRACEBACK"):
        raise error
    line = " ".join(message.split())  # one line, whatever the exception's own layout
    print(f"error: {line}  [{type(error).__name__}; {TRACEBACK_HINT}]", file=sys.stderr)
    sys.exit(status)


def flag_error_message(error: BaseException, argv: list[str]) -> str:
    """A flag-parsing failure as one line naming the flag: ml_collections reports an unknown config field as
    AttributeError("'stpes'\\nDid you mean "steps" instead of "stpes"?") without saying which flag; absl's own
    errors already start with the flag."""
    text = str(error.__cause__ or error).strip()
    # ml_collections' AttributeError carries the repr of its KeyError: quotes and newlines escaped.
    plain = text.strip("'\"").replace("\\'", "'").replace("\\n", "\n")
    unknown = re.match(r"'([\w-]+)'\s*(?:\n|$)", plain)
    if isinstance(error, (AttributeError, KeyError)) and unknown:
        field = unknown.group(1)
        culprit = next(
            (
                a.split("=", 1)[0]
                for a in argv
                if a.startswith("--config.") and re.search(rf"\.{field}(=|\.|$)", a)
            ),
            f"--config.…{field}",
        )
        hint = re.search(r'Did you mean "([^"]+)"', plain)
        return f"{culprit}: no such config field {field!r}" + (
            f" (did you mean {hint.group(1)!r}?)" if hint else ""
        )
    return text


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        _fail(flag_error_message(e, argv), e)
        raise  # unreachable: _fail exits


def main(argv: list[str]) -> int:
    del argv
    _setup_logging()
    # TensorFlow only feeds data here: keep it off accelerators so it doesn't grab GPU memory or TPU.
    import tensorflow as tf  # imported here, not above: `--help` and flag errors stay fast

    tf.config.set_visible_devices([], "GPU")
    try:
        config = _CONFIG.value
        job_name = None if config is None else config.job  # the config file loads (and may fail) on first use
    except (OSError, ValueError, AttributeError) as e:
        # config_flags defers a failed load to here, with the reason on its last line.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [repr(e)]
        _fail(f"--config: {lines[-1]}", e)
    if config is None:
        print("error: --config is required, e.g. --config configs/quickstart.py", file=sys.stderr)
        return 2
    workdir = _WORKDIR.value or config.workdir
    try:
        jobs.get_job(job_name)(config, workdir)
    except _ERRORS as e:
        # Config and input errors: one line, no traceback (the message names the field, file or tensor).
        _fail(str(e), e)
    except loop.NonFiniteError as e:
        _fail(str(e), e, NONFINITE_STATUS)
    return 0


def run() -> None:
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
