"""Active inheritance (aya_jax/jobs/curate.py `active_inheritance`, arXiv 2407.01490): k replies per prompt from
one or more teachers, the one that best meets an attribute objective kept — longer, lexically richer (MTLD), less
toxic, in the prompt's language, or a weighted mix.

    python -m aya_jax.main --config configs/active_inheritance.py \\
        --config.curation.pool="('/data/prompts.jsonl',)" --config.curation.teachers="('aya=/ckpt/aya-23-8b',)" \\
        --config.curation.attributes="('mtld', 'toxicity:-1')" --config.curation.lexicon_dir=/data/ldnoobw

Results in <workdir>/active_inheritance/ (dataset/: the chosen replies, which SFT reads as the Aya Dataset).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "active_inheritance"
    config.workdir = "workdirs/active_inheritance"
    common.quickstart_model(config)
    config.curation.samples = 10
    config.curation.attributes = ("mtld",)
    return config
