"""Train a SentencePiece vocabulary on a task or mixture's text with language-balanced sampling
(`aya_jax/jobs/train_vocab.py`).

Launch (from the repository root; the argument is the task or mixture, default the embedded data):

    python -m aya_jax.main --config configs/train_vocab.py
    python -m aya_jax.main --config configs/train_vocab.py:aya101_sft --config.data.aya_dataset_dir=/data/aya_dataset \
        --config.train_vocab.size=32000

It prints the rows taken per language and each language's tokens per character, and writes
`<workdir>/spm_<size>.model`; train on it with `--config.data.vocab.path=<that file>`.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.base_config()
    config.job = "train_vocab"
    config.workdir = "workdirs/train_vocab"
    config.data.task = arg or "aya_default"
    # config.train_vocab (aya_jax/defaults/train_vocab.py): 8000 pieces from 100k rows, language shares at
    # T = 1/0.3 (mT5's).
    return config
