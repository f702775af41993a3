"""config.generate: text generation from any checkpoint (jobs/generate.py, aya_jax/sampling.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    g = ml_collections.ConfigDict()
    g.hf_dir = ""  # a Hugging Face directory: config.json + safetensors + tokenizer.json
    g.checkpoint_dir = ""  # or an aya_jax workdir (or its checkpoints/): the newest step is loaded
    g.tokenizer = ""  # tokenizer.json[.gz]; "" = <hf_dir>/tokenizer.json, or the run's vocabulary
    g.prompt = ""  # one prompt (streams its reply)
    g.prompts = ()  # several, e.g. --config.generate.prompts="('Hola', 'Salut')"
    g.prompts_file = ""  # one prompt per line, or .jsonl
    g.prompt_field = "prompt"  # the field of a .jsonl prompts_file
    g.chat_template = "auto"  # auto (Cohere template when the tokenizer has its turn tokens) | cohere | none
    g.system = ""  # optional system turn (chat template only)
    g.max_new_tokens = 128
    g.temperature = 0.0  # 0 = greedy
    g.top_k = 0  # 0 = off
    g.top_p = 1.0  # 1 = off
    g.stop = ()  # stop strings, e.g. --config.generate.stop="('\\n\\n',)"
    g.seed = 0
    g.batch_size = 32  # prompts per jitted batch
    g.stream = True  # one prompt: print tokens as they are decoded
    g.prompt_bucket = 64  # prompt lengths are rounded up to a multiple of this (fewer recompilations)
    g.output_file = ""  # "" = <workdir>/generations.jsonl
    return g


def validate(g: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(g, "generate")
    s.one_checkpoint()
    s.one_of("chat_template", ("auto", "cohere", "none"))
    s.at_least("batch_size", 1)
    s.at_least("prompt_bucket", 1)
    s.sampling()
    if not (g.prompt or g.prompts or g.prompts_file):
        s.fail("prompt", "no prompt (set prompt, prompts or prompts_file)")
