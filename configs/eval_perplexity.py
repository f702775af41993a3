"""Per-language perplexity of a checkpoint, or its change between two checkpoints and the tokens that carry
the rise (aya_jax/jobs/evaluate.py).

    # NTREX-128 sentences in 40 languages (../shared/data beside the repository, or your copy):
    python -m aya_jax.main --config configs/eval_perplexity.py --config.eval.checkpoint=workdirs/quickstart \\
        --config.eval.texts=../shared/data/parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl

    # Before and after continued training (the same tokenizer):
    python -m aya_jax.main --config configs/eval_perplexity.py --config.eval.checkpoint=workdirs/sft \\
        --config.eval.compare_to=workdirs/dpo --config.eval.texts=...

    # Aya Dataset rows (jsonl with `targets` and `language_code`):
    ... --config.eval.texts=held_out.jsonl --config.eval.text_field=targets

Results in <workdir>/perplexity/.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "eval_perplexity"
    config.workdir = "workdirs/eval"
    common.quickstart_model(config)
    config.eval.max_texts = 100  # per language: 40 languages x 100 sentences, a few minutes on a CPU
    return config
