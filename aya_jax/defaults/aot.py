"""config.aot: ahead-of-time compile of the train step for a TPU slice (jobs/aot.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    a = ml_collections.ConfigDict()
    a.platform = "tpu"  # tpu: for config.aot.topology (libtpu, no TPU needed) | cpu: the local devices
    a.topology = "v5e-16"  # gcloud accelerator type (v5litepod-16, v4-32, ...) or libtpu's (v5e:4x4)
    a.hbm_gib = 0.0  # per device; 0 = the device kind's from aya_jax/jobs/aot.py HBM_GIB_PER_CHIP
    return a


def validate(a: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(a, "aot")
    s.one_of("platform", ("tpu", "cpu"))
    s.at_least("hbm_gib", 0.0, " (0 = the device kind's)")
