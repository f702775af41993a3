"""Prompt prioritisation (aya_jax/jobs/evaluate.py `prompt_priority`, aya_jax/evaluation/prompt_priority.py):
rank prompts by how much two models' next-token distributions differ along their greedy answers, keep the top
20%, and (with a judge) compare the judge's tie rate on them with random 20% subsets.

    python -m aya_jax.main --config configs/eval_prompt_priority.py \\
        --config.eval.questions="('fr=../shared/data/instruct/hplt_oasst_test_prompts/test_fr.jsonl',)" \\
        --config.eval.models="('a=workdirs/sft_a', 'b=workdirs/sft_b')" \\
        --config.eval.judge=reward --config.eval.reward_model=workdirs/reward

The two checkpoints must share one tokenizer. Results in <workdir>/prompt_priority/ (selected.jsonl: the chosen
prompts in the question layout the win-rate job reads).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "eval_prompt_priority"
    config.workdir = "workdirs/eval"
    common.quickstart_model(config)
    config.eval.judge = "none"  # rank only, unless a judge is given
    config.eval.max_new_tokens = 128
    return config
