"""What a config is about to train on: examples and tokens per language and source, configured vs sampled
language proportions, and a bar chart (`aya_jax/jobs/data_stats.py`).

Launch (from the repository root; the argument is the task or mixture, default the embedded mixture):

    python -m aya_jax.main --config configs/data_stats.py
    python -m aya_jax.main --config configs/data_stats.py:aya23_sft --config.data.aya_dataset_dir=/data/aya_dataset \
        --config.data.aya_collection_dir=/data/aya_collection --config.data.vocab.kind=hf_tokenizer \
        --config.data.vocab.path=../shared/data/tokenizers/command_r/tokenizer.json.gz

Outputs land in the workdir (`workdirs/data_stats/` by default): data_stats.json, language_distribution.png.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.base_config()
    config.job = "data_stats"
    config.workdir = "workdirs/data_stats"
    config.data.task = arg or "aya_default_mixture"
    config.data.vocab.size = 8000  # as the quickstart: the same cached SentencePiece model
    # config.data_stats (aya_jax/defaults/data_stats.py): 20,000 examples drawn from the training stream.
    return config
