"""Diversity-first data selection (aya_jax/jobs/curate.py `select_diverse`, arXiv 2409.11378): embed a pool of
rows with a model, cluster them, and take a budget across the clusters.

    python -m aya_jax.main --config configs/select_diverse.py \\
        --config.curation.pool="('/data/aya_dataset/train-00000-of-00001.parquet',)" \\
        --config.curation.embed_checkpoint=/ckpt/aya-expanse-8b --config.model.dtype=bfloat16

Results in <workdir>/select_diverse/ (dataset/: the chosen rows, which SFT reads as the Aya Dataset).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "select_diverse"
    config.workdir = "workdirs/select_diverse"
    common.quickstart_model(config)
    return config
