"""Generate text from a Hugging Face directory or an aya_jax run's checkpoints (aya_jax/jobs/generate.py).

    # An Aya checkpoint downloaded with `huggingface-cli download CohereForAI/aya-expanse-8b --local-dir ...`:
    python -m aya_jax.main --config configs/generate.py --config.generate.hf_dir=/ckpt/aya-expanse-8b \\
        --config.generate.prompt="Écris un haïku sur la mer." --config.mesh.shape='(1,1,-1)'

    # The quickstart's own model and SentencePiece vocabulary (prompts in the chat format it was trained on):
    python -m aya_jax.main --config configs/generate.py --config.generate.checkpoint_dir=workdirs/quickstart \\
        --config.generate.prompt="Bonjour"

    # Many prompts, batched (one per line, or .jsonl with config.generate.prompt_field):
    python -m aya_jax.main --config configs/generate.py --config.generate.hf_dir=... \\
        --config.generate.prompts_file=prompts.txt --config.generate.batch_size=32

A checkpoint_dir run rebuilds the model from config.model and the vocabulary from config.data (the defaults
here are the quickstart's; pass the overrides the run was trained with), unless the run started from a
Hugging Face directory: then its recorded config.json and tokenizer are used.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "generate"
    config.workdir = "workdirs/generate"

    # The quickstart's model and data, so that checkpoint_dir=workdirs/quickstart needs nothing else.
    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"  # CPU; use bfloat16 on accelerators
    config.data.task = "aya_default"
    config.data.seq_len = 256
    config.data.vocab.size = 8000

    # config.generate (aya_jax/defaults/generate.py): greedy, 128 new tokens, the chat template when the
    # tokenizer has its turn tokens.
    return config
