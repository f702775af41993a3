"""lm-evaluation-harness tasks on any checkpoint through the `aya_jax` model (aya_jax/jobs/eval_harness.py;
needs `pip install -e '.[eval]'`).

    # Hub tasks (needs the hub or its cache):
    python -m aya_jax.main --config configs/eval_harness.py --config.eval.checkpoint=/ckpt/aya-expanse-8b \\
        --config.eval.tasks="('global_mmlu_full_fr',)"

    # Offline: task YAMLs over local files (docs/evaluation.md shows one):
    python -m aya_jax.main --config configs/eval_harness.py --config.eval.checkpoint=workdirs/quickstart \\
        --config.eval.tasks="('local_global_mmlu_fr',)" --config.eval.include_path=my_tasks/

The same model from lm-eval's own command line: `aya-lm-eval --model aya_jax --model_args checkpoint=...`.
Results in <workdir>/harness/.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "eval_harness"
    config.workdir = "workdirs/eval"
    common.quickstart_model(config)
    return config
