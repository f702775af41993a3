"""Ahead-of-time compile check: does a preset's SFT step fit a TPU slice? Compiled on this machine, no TPU.

    pip install -e '.[tpu]'   # libtpu, for the TPU compiler and topology descriptions
    python -m aya_jax.main --config configs/aot.py:aya-expanse-8b --config.aot.topology=v5e-16

Prints the per-device memory XLA needs for one train step (train state, batch, activations, gradients) against
the device's HBM, writes <workdir>/aot_report.json, and exits 2 when it does not fit. Try other layouts with
`--config.mesh.shape`, `--config.model.remat`, `--config.train.global_batch_size`, `--config.data.seq_len`;
without libtpu, `--config.aot.platform=cpu` compiles for the local devices instead. Any experiment config can
be checked the same way with `--config.job=aot_compile --config.aot.topology=...`.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.base_config()
    config.job = "aot_compile"
    config.workdir = "workdirs/aot"
    config.model.preset = arg or "aya-expanse-8b"
    config.model.remat = "full"  # save only each layer's input; recompute the rest in the backward pass
    config.mesh.shape = (1, -1, 1)  # FSDP over the whole slice
    config.aot.topology = "v5e-16"
    config.data.seq_len = 2048
    config.train.global_batch_size = 16  # one 2048-token sequence per v5e chip
    return config
