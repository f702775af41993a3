"""Serve a checkpoint over an OpenAI-compatible API with continuous batching (aya_jax/jobs/serve.py).

    # An Aya checkpoint downloaded with `huggingface-cli download CohereForAI/aya-expanse-8b --local-dir ...`:
    python -m aya_jax.main --config configs/serve.py --config.serve.hf_dir=/ckpt/aya-expanse-8b \\
        --config.model.dtype=bfloat16 --config.serve.slots=64

    # The quickstart's own model:
    python -m aya_jax.main --config configs/serve.py --config.serve.checkpoint_dir=workdirs/quickstart

    # then, e.g.:
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "quickstart", "messages": [{"role": "user", "content": "Bonjour"}], "max_tokens": 32}'

A checkpoint_dir run rebuilds the model from config.model and the vocabulary from config.data (the defaults
here are the quickstart's; pass the overrides the run was trained with), unless the run started from a
Hugging Face directory.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = common.base_config()
    config.job = "serve"
    config.workdir = "workdirs/serve"

    # The quickstart's model and data, so that checkpoint_dir=workdirs/quickstart needs nothing else.
    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"  # CPU; use bfloat16 on accelerators
    config.data.task = "aya_default"
    config.data.seq_len = 256
    config.data.vocab.size = 8000

    # config.serve (aya_jax/defaults/serve.py): 127.0.0.1:8000, 32 rows of 2048 tokens, the chat template when
    # the tokenizer has its turn tokens.
    config.serve.max_len = 512
    return config
