"""Hugging Face directory <-> aya_jax orbax checkpoint (aya_jax/jobs/hf_convert.py).

    python -m aya_jax.main --config configs/hf_convert.py:export \\
        --config.hf_convert.checkpoint_dir=workdirs/sft_hf --config.hf_convert.out_dir=/out/my-aya
    python -m aya_jax.main --config configs/hf_convert.py:import \\
        --config.hf_convert.hf_dir=/ckpt/aya-expanse-8b --config.hf_convert.out_dir=workdirs/aya-expanse-8b

Exporting a run that did not start from a Hugging Face directory (e.g. the quickstart) needs that run's
config.model / config.data overrides, since its architecture comes from them.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in ("export", "import"):
        raise ValueError(f"configs/hf_convert.py: argument {arg!r}, expected :export or :import")
    config = common.base_config()
    config.job = "hf_export" if arg == "export" else "hf_import"
    config.workdir = "workdirs/hf_convert"
    config.model.dtype = "float32"
    # config.hf_convert (aya_jax/defaults/hf_convert.py): export in bfloat16, 4 GB shards.
    return config
