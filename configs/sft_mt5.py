"""Supervised fine-tuning of the mT5 encoder-decoder (Aya 101) with the SFT trainer (aya_jax/jobs/sft.py).

Rows are (inputs, targets) pairs: the prompt is the encoder input (EOS appended, as T5 tasks do), the answer the
decoder target, through `EncoderDecoderFeatureConverter` (packed, segment-aware). From scratch on the embedded
default data, on CPU (a few minutes):

    python -m aya_jax.main --config configs/sft_mt5.py --workdir workdirs/sft_mt5

Fine-tune the released Aya 101 from a local Hugging Face directory (config.json + safetensors + tokenizer.json,
e.g. `huggingface-cli download CohereForAI/aya-101 --local-dir /ckpt/aya-101`; its own untied lm_head is
imported), then export it for `transformers.AutoModelForSeq2SeqLM.from_pretrained`:

    python -m aya_jax.main --config configs/sft_mt5.py:hf --config.model.hf_init_dir=/ckpt/aya-101 \\
        --config.mesh.shape='(1,-1,1)' --workdir workdirs/sft_aya101
    python -m aya_jax.main --config configs/hf_convert.py:export \\
        --config.hf_convert.checkpoint_dir=workdirs/sft_aya101 --config.hf_convert.out_dir=/out/my-aya101

`configs/sft_mt5.py:<preset>` picks another mT5 preset (aya_jax/models/mt5.py PRESETS: aya-101, mt5-xxl, ...,
mt5-small, mt5-tiny).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.base_config()
    config.job = "sft"
    config.workdir = "workdirs/sft_mt5"
    config.data.task = "aya_default"
    # Aya 101's rows: the prompt is the encoder input and the answer the decoder's, with no chat template.
    config.data.format = "raw"
    config.data.inputs_len = 128  # encoder tokens per row (prompts)
    config.data.seq_len = 128  # decoder tokens per row (answers)
    config.train.global_batch_size = 8
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.log_every = 5
    config.checkpoint.every = 100
    if arg == "hf":
        config.workdir = "workdirs/sft_aya101"
        config.data.vocab.kind = "hf_tokenizer"
        config.data.vocab.path = config.model.get_ref("hf_init_dir") + "/tokenizer.json"
        config.data.inputs_len = 1024
        config.data.seq_len = 1024
        config.train.global_batch_size = 256  # the Aya 101 fine-tuning batch
        config.train.steps = 1000
        config.model.dtype = "bfloat16"
        config.model.remat = "full"
        # t5x's mT5 recipe: z-loss 1e-4; a small constant learning rate for fine-tuning.
        config.train.z_loss = 1e-4
        config.optimizer.learning_rate = 3e-5
        config.optimizer.schedule = "constant"
        config.optimizer.warmup_steps = 0
        config.optimizer.weight_decay = 0.0
    else:
        config.model.preset = arg or "mt5-tiny"
        config.model.dtype = "float32"
        config.data.vocab.size = 8000
        config.optimizer.learning_rate = 3e-3
        config.optimizer.warmup_steps = 30
    return config
