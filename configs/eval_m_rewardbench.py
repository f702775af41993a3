"""M-RewardBench accuracy of a classifier reward model, or of a DPO policy's implicit reward
(aya_jax/jobs/evaluate.py).

    # A `reward` run on the download of CohereLabsCommunity/multilingual-reward-bench:
    python -m aya_jax.main --config configs/eval_m_rewardbench.py --config.eval.reward_model=workdirs/reward \\
        --config.eval.data_dir=/data/multilingual-reward-bench

    # A DPO policy against its reference: beta * (log pi - log pi_ref) as the reward:
    python -m aya_jax.main --config configs/eval_m_rewardbench.py --config.eval.checkpoint=workdirs/dpo \\
        --config.eval.reference=workdirs/quickstart --config.eval.beta=0.1 --config.eval.data_dir=...

Pairs are formatted and cut as the reward / DPO run did (config.eval.data_format, config.data.seq_len,
config.eval.prompt_len: pass that run's values). Results in <workdir>/m_rewardbench/.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "eval_m_rewardbench"
    config.workdir = "workdirs/eval"
    # The quickstart's model and data (configs/reward.py and configs/dpo.py start from it).
    common.quickstart_model(config)
    return config
