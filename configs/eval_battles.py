"""Win rates, Bradley–Terry ratings and Elo reliability from a log of pairwise judgments
(aya_jax/jobs/evaluate.py `battles`, aya_jax/evaluation/battles.py); no model is loaded.

    python -m aya_jax.main --config configs/eval_battles.py --config.eval.judgments=judgments.jsonl \\
        --config.eval.baseline=gpt-4-0314

The log is JSONL, one judged game per line: question_id, model_a, model_b, and verdict (`A>>B` ... `B>>A`) or
judgment (the judge's text; its last [[...]] label counts), optionally language and game — what
aya_jax/evaluation/judges.py's cache writes. Results in <workdir>/battles/.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "eval_battles"
    config.workdir = "workdirs/eval"
    return config
