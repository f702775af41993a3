"""Multilingual arbitrage (aya_jax/jobs/curate.py `arbitrage`, arXiv 2408.14960): each prompt of a pool answered
by the teacher its routing picks — a language table, the best reward-model score of every teacher's reply, a
router fitted on those choices, one teacher or a random one.

    python -m aya_jax.main --config configs/arbitrage.py \\
        --config.curation.pool="('/data/prompts.jsonl',)" \\
        --config.curation.teachers="('aya=/ckpt/aya-expanse-8b', 'gemma=http://127.0.0.1:8000/v1;model=gemma')" \\
        --config.curation.routing=reward --config.curation.reward_model=workdirs/reward

Results in <workdir>/arbitrage/ (dataset/: the routed replies, which SFT reads as the Aya Dataset).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "arbitrage"
    config.workdir = "workdirs/arbitrage"
    common.quickstart_model(config)
    config.curation.routing = "reward"
    return config
