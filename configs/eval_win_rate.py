"""Win rates by the Arena-Hard protocol (aya_jax/jobs/evaluate.py `win_rate`, aya_jax/evaluation/arena_hard.py):
answers from every model (generated, or read from an answers file), two judged games per question against the
baseline, then win rates per language, Bradley–Terry ratings and Elo reliability.

    # m-ArenaHard (one folder per language), two checkpoints, a judge behind an OpenAI-compatible endpoint:
    python -m aya_jax.main --config configs/eval_win_rate.py --config.eval.questions="('/data/m-ArenaHard',)" \\
        --config.eval.models="('sft=workdirs/sft', 'base=/ckpt/aya-expanse-8b')" --config.eval.baseline=base \\
        --config.eval.judge_base_url=https://api.example.com/v1 --config.eval.judge_model=judge-large \\
        --config.eval.judge_api_key_env=JUDGE_API_KEY

    # Arena-Hard-Auto v0.1 against its published GPT-4 answers, judged by a `reward` run:
    python -m aya_jax.main --config configs/eval_win_rate.py \\
        --config.eval.questions="('en=arena-hard-v0.1_question.jsonl',)" \\
        --config.eval.models="('mine=workdirs/sft', 'gpt-4-0314=arena-hard-v0.1_answer_gpt-4-0314.jsonl')" \\
        --config.eval.baseline=gpt-4-0314 --config.eval.judge=reward --config.eval.reward_model=workdirs/reward

Answers go to <workdir>/win_rate/answers/<model>.jsonl and judgments to <workdir>/win_rate/judgments.jsonl as
they arrive: a rerun generates and judges only what is missing. Results in <workdir>/win_rate/.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "eval_win_rate"
    config.workdir = "workdirs/eval"
    # The quickstart's model and data: checkpoints of aya_jax runs are rebuilt from them.
    common.quickstart_model(config)
    return config
