"""config.metrics: where per-step metrics go (aya_jax/metrics.py) and the peak FLOP/s behind MFU."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.tensorboard = True
    m.jsonl = True
    m.peak_flops_per_device = 0.0  # 0 = look up the device kind, or measure it on CPU
    return m


def validate(m: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    Section(m, "metrics").at_least("peak_flops_per_device", 0.0, " (0 = look it up or measure it)")
