"""The Aya Expanse recipe (arXiv 2412.04261) end to end as one resumable job (aya_jax/jobs/recipe.py): arbitrage
data from a teacher pool -> SFT runs -> their merge -> offline DPO -> online iterative DPO (3 iterations) -> the
final merge, every model evaluated on held-out rows; stages are skipped, resumed or redone like `make`.

    python -m aya_jax.main --config configs/aya_expanse.py          # the CPU miniature (workdirs/aya_expanse)
    python -m aya_jax.main --config configs/aya_expanse.py --config.pipeline.stages="('sft_all',)"

The miniature: the quickstart model shrunk (2 layers, a 2048-piece vocabulary, 96-token rows) trained on the
embedded default data, three teachers fine-tuned on its European / CJK / Indic rows, a reward model, arbitrage
over 16 prompts per language. For Aya Expanse 8B on a TPU slice, override the preset, the base, the teachers, the
data and the mesh (README: The Aya Expanse recipe).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "aya_expanse"
    config.workdir = "workdirs/aya_expanse"
    common.quickstart_model(config)
    config.model.overrides.num_layers = 2
    config.data.vocab.size = 2048
    config.data.seq_len = 96
    config.train.eval_every = 1_000_000  # the pipeline evaluates every model itself
    config.train.eval_batches = 0
    config.train.sample_prompts = 0
    config.reward.prompt_len = 48
    config.curation.reward_prompt_len = 48
    config.curation.max_new_tokens = 32
    config.curation.gen_batch = 32
    config.dpo.prompt_len = 48
    config.dpo.max_new_tokens = 32
    config.dpo.eval_prompts = 32
    config.eval.max_new_tokens = 32  # the win rates' answers
    return config
