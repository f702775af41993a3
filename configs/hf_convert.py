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
    c = config.hf_convert = ml_collections.ConfigDict()
    c.hf_dir = ""  # import: the Hugging Face directory to read
    c.checkpoint_dir = ""  # export: an aya_jax workdir (or its checkpoints/)
    c.step = -1  # export: which checkpoint step; -1 = the newest
    c.out_dir = ""  # export: the HF directory to write; import: the workdir to write checkpoints/ into
    c.dtype = "bfloat16"  # export: bfloat16 | float16 | float32
    c.tokenizer = ""  # export: tokenizer.json[.gz] or HF directory to copy; "" = the run's (see the job)
    c.max_shard_gb = 4.0  # export: safetensors shard size
    return config
