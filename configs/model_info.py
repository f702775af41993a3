"""Parameter count and per-device memory of a preset on a mesh (nothing is allocated).

    python -m aya_jax.main --config configs/model_info.py:aya-expanse-8b --config.mesh.shape='(1,8,1)'

The mesh's -1 entry is filled from `model_info.num_devices` (default: 8) rather than the local devices,
so a laptop can plan a pod layout.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.base_config()
    config.job = "model_info"
    config.model.preset = arg or "aya-expanse-8b"
    config.mesh.shape = (1, -1, 1)
    config.model_info.num_devices = 8
    return config
