"""Supervised fine-tuning of the Cohere decoder (aya_jax/jobs/sft.py).

Fine-tune a released Aya checkpoint from a local Hugging Face directory (config.json + safetensors shards +
tokenizer.json, e.g. `huggingface-cli download CohereForAI/aya-expanse-8b --local-dir /ckpt/aya-expanse-8b`);
the architecture and tokenizer come from that directory, rows get the Cohere chat template:

    python -m aya_jax.main --config configs/sft.py:hf --config.model.hf_init_dir=/ckpt/aya-expanse-8b \\
        --config.mesh.shape='(1,-1,1)' --workdir workdirs/sft_aya_expanse_8b

then export the newest checkpoint back to a directory `transformers.AutoModelForCausalLM.from_pretrained`
loads:

    python -m aya_jax.main --config configs/hf_convert.py:export \\
        --config.hf_convert.checkpoint_dir=workdirs/sft_aya_expanse_8b --config.hf_convert.out_dir=/out/my-aya

A preset from scratch (`configs/sft.py:aya-expanse-8b`, ...; default cohere-small) uses the same fields.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.base_config()
    config.job = "sft"
    config.workdir = "workdirs/sft"
    config.train.steps = 1000
    config.train.global_batch_size = 64
    config.data.seq_len = 2048
    config.optimizer.learning_rate = 1e-5
    config.optimizer.warmup_steps = 50
    config.optimizer.weight_decay = 0.0
    if arg == "hf":
        config.workdir = "workdirs/sft_hf"
        # The checkpoint's own tokenizer unless overridden: vocab.path follows model.hf_init_dir.
        config.data.vocab.kind = "hf_tokenizer"
        config.data.vocab.path = config.model.get_ref("hf_init_dir") + "/tokenizer.json"
        config.model.dtype = "bfloat16"
        config.model.remat = "full"  # 8B+ models: activations recomputed in the backward pass
    else:
        config.model.preset = arg or "cohere-small"
    return config
