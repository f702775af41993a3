"""The embedded default: a small Cohere-architecture model trained by SFT on real multilingual text, on CPU.

Launch (from the repository root):

    python -m aya_jax.main --config configs/quickstart.py

Runs again from the same workdir resume from the latest checkpoint. Variants:

    python -m aya_jax.main --config configs/quickstart.py --config.train.steps=50 --workdir /tmp/qs
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "sft"
    config.workdir = "workdirs/quickstart"

    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"  # fp32 on CPU so that a resumed run matches an uninterrupted one exactly

    config.data.task = "aya_default"
    config.data.seq_len = 256
    config.data.vocab.size = 8000

    config.train.global_batch_size = 8
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.eval_batches = 4
    config.train.log_every = 5
    config.checkpoint.every = 50

    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 30
    return config
