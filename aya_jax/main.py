"""Entry point: `python -m aya_jax.main --config configs/<experiment>.py[:arg] [--config.field=value] [--workdir DIR]`.

The only file with flags. It sets up logging, loads the config, and hands it to the job named by `config.job`.
Bad config values end the run with one line naming the field (exit status 2).
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (seqio's reader) is chatty on import

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; default: config.workdir.")


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


def main(argv: list[str]) -> int:
    del argv
    _setup_logging()
    # TensorFlow only feeds data here: keep it off accelerators so it doesn't grab GPU memory or TPU.
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")

    from aya_jax import jobs as trainers
    from aya_jax.checkpoint import CheckpointError

    config = _CONFIG.value
    if config is None:
        print("error: --config is required, e.g. --config configs/quickstart.py", file=sys.stderr)
        return 2
    workdir = _WORKDIR.value or config.workdir
    try:
        job = trainers.get_job(config.job)
        job(config, workdir)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        # Config and input errors: one line, no traceback (the message names the field, file or tensor).
        if os.environ.get("AYA_JAX_TRACEBACK"):
            raise
        print(f"error: {e}  [{type(e).__name__}; AYA_JAX_TRACEBACK=1 shows the traceback]", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
