"""Reward model (Bradley–Terry) from the quickstart's SFT checkpoint (aya_jax/jobs/reward.py).

    python -m aya_jax.main --config configs/quickstart.py --workdir workdirs/quickstart     # the SFT run, once
    python -m aya_jax.main --config configs/reward.py --workdir workdirs/reward \\
        --config.checkpoint.init_from=workdirs/quickstart

Pairs: the multilingual pairs built from the embedded default data (aya_jax/data/preference_default.py: the
real answer vs a real answer in another language), read through the `preference_pairs` task. Your own pairs
(jsonl / parquet with prompt, chosen, rejected, language_code; split by file name):

    ... --config.reward.default_pairs=False --config.data.preference_dir=/data/my_pairs

`config.data` describes the SFT run's data as that run had it: it gives the vocabulary (here the quickstart's
SentencePiece model, found in the data cache). Rerunning the same command resumes. Outputs in the workdir:
metrics.jsonl, tensorboard/, reward_curves.png, reward_accuracy_by_language.png, checkpoints/, reward_model.json.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "reward"
    config.workdir = "workdirs/reward"
    config.checkpoint.init_from = "workdirs/quickstart"

    # The quickstart's model and data (its vocabulary).
    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"
    config.data.task = "aya_default"
    # Rows of prompt + chosen / rejected: 96 tokens hold 98% of the default pairs whole (a longer completion is
    # cut, losing its EOS); the SFT run's own seq_len does not matter here.
    config.data.seq_len = 96
    config.data.vocab.size = 8000

    # config.reward (aya_jax/defaults/reward.py): the default pairs, prompts cut to their last 48 tokens.

    config.train.steps = 200
    config.train.global_batch_size = 16  # pairs per step
    config.train.log_every = 10
    config.train.eval_every = 50
    config.checkpoint.every = 100

    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 20
    config.optimizer.weight_decay = 0.0
    return config
