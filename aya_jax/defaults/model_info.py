"""config.model_info: parameter count and per-device memory of a preset on a mesh (jobs/model_info.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.num_devices = 8  # the devices of the mesh to size for; 0 = this machine's
    return m


def validate(m: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    Section(m, "model_info").at_least("num_devices", 0, " (0 = this machine's)")
