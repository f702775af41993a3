"""config.serve: the OpenAI-compatible server (jobs/serve.py, aya_jax/openai_server.py, aya_jax/serving.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.hf_dir = ""  # a Hugging Face directory: config.json + safetensors + tokenizer.json
    s.checkpoint_dir = ""  # or an aya_jax workdir (or its checkpoints/): the newest step is served
    s.tokenizer = ""  # tokenizer.json[.gz]; "" = <hf_dir>/tokenizer.json, or the run's vocabulary
    s.model_name = ""  # the `model` clients ask for; "" = the checkpoint directory's name
    s.host = "127.0.0.1"  # 0.0.0.0 to serve other machines
    s.port = 8000  # 0 = any free port (written to <workdir>/server.json)
    s.slots = 32  # rows of the decode batch: requests decoded at once (more wait for a free row)
    s.max_len = 2048  # KV-cache slots per row: prompt + reply tokens (capped at the model's positions)
    s.prompt_bucket = 64  # joining prompts are padded to a multiple of this (fewer recompilations)
    s.encoder_len = 512  # encoder-decoder models: the longest prompt (every prompt is padded to it)
    s.chat_template = "auto"  # auto (Cohere template when the tokenizer has its turn tokens) | cohere | none
    s.max_tokens = 256  # the reply length when a request does not say (capped by what fits)
    s.echo_scoring = (
        True  # /v1/completions echo + logprobs: score prompt tokens (lm-eval's local-completions)
    )
    s.score_batch_size = 8  # prompts per scoring batch (echo)
    return s


def validate(s: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    c = Section(s, "serve")
    c.one_checkpoint()
    c.in_range("port", 0, 65535)
    c.at_least("slots", 1)
    c.at_least("max_len", 2)
    c.at_least("prompt_bucket", 1)
    c.at_least("encoder_len", 1)
    c.at_least("max_tokens", 1)
    c.at_least("score_batch_size", 1)
    c.one_of("chat_template", ("auto", "cohere", "none"))
    if not str(s.host):
        c.fail("host", "empty (127.0.0.1 for this machine only, 0.0.0.0 for every interface)")
