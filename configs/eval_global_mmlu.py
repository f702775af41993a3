"""Global-MMLU accuracy (culturally sensitive vs agnostic) of any checkpoint (aya_jax/jobs/evaluate.py).

    # Aya Expanse 8B on the Hugging Face download of CohereLabs/Global-MMLU, 5-shot, French and Swahili:
    python -m aya_jax.main --config configs/eval_global_mmlu.py --config.eval.checkpoint=/ckpt/aya-expanse-8b \\
        --config.eval.data_dir=/data/Global-MMLU --config.eval.languages="('fr','sw')" \\
        --config.eval.num_fewshot=5 --config.model.dtype=bfloat16 --config.mesh.shape='(1,-1,1)'

    # The quickstart's own model (its SentencePiece vocabulary comes from config.data, as trained):
    python -m aya_jax.main --config configs/eval_global_mmlu.py --config.eval.checkpoint=workdirs/quickstart \\
        --config.eval.data_dir=/data/Global-MMLU-Lite

Results in <workdir>/global_mmlu/: results.json, results.md, cs_ca_by_language.png.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "eval_global_mmlu"
    config.workdir = "workdirs/eval"
    # The quickstart's model and data, so that checkpoint=workdirs/quickstart needs nothing else.
    common.quickstart_model(config)
    # config.eval (aya_jax/defaults/evaluation.py): 0-shot, the plain prompt, 1000 bootstrap rounds.
    return config
