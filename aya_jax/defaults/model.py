"""config.model: the architecture (a preset of aya_jax/models/, or a Hugging Face config.json) and numerics."""

import ml_collections
from ml_collections import config_dict

from aya_jax.defaults.checks import Section
from aya_jax.models import families

DTYPES = ("float32", "bfloat16", "float16")
# config.model.overrides: CohereConfig field names (mT5 presets map the ones that have a meaning for them).
OVERRIDES = (
    ("vocab_size", int),
    ("hidden_size", int),
    ("intermediate_size", int),
    ("num_layers", int),
    ("num_heads", int),
    ("num_kv_heads", int),
    ("head_dim", int),
    ("max_position_embeddings", int),
    ("rope_theta", float),
    ("logit_scale", float),
    ("layer_norm_eps", float),
    ("use_qk_norm", bool),
    ("initializer_range", float),
)


def defaults() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.preset = "cohere-tiny"  # a preset of aya_jax/models/cohere.py or mt5.py (it picks the model family)
    # Any field of the preset's config on top of it; None keeps the preset's value.
    m.overrides = ml_collections.ConfigDict({name: config_dict.placeholder(kind) for name, kind in OVERRIDES})
    m.dtype = "bfloat16"  # compute dtype; parameters and optimiser state stay param_dtype
    m.param_dtype = "float32"
    m.remat = "none"  # none | full | dots_saveable: activations recomputed in the backward pass
    m.scan_layers = True  # layers stacked with nn.scan (compile time independent of depth)
    # Layers per iteration of that scan's loop: a loop of num_layers / scan_unroll iterations. Higher runs
    # faster where each loop iteration costs (XLA:CPU slices the stacked weights and gradients per iteration;
    # benchmarks/train_step.py, variant scan-unroll) and compiles longer; values above num_layers mean all.
    m.scan_unroll = 1
    # A Hugging Face directory (config.json + safetensors + tokenizer.json) to start from: its config.json defines
    # the architecture (preset and overrides unused) and its weights replace the random init (aya_jax/hf/).
    m.hf_init_dir = ""
    return m


# Bounds of the numeric overrides (when set): sizes are counts; vocab_size 0 takes the tokenizer's (as the
# small presets' placeholder does); the float fields are scales and epsilons that only make sense positive.
OVERRIDE_AT_LEAST = {
    "vocab_size": (0, " (0 = the tokenizer's)"),
    "hidden_size": (1, ""),
    "intermediate_size": (1, ""),
    "num_layers": (1, ""),
    "num_heads": (1, ""),
    "num_kv_heads": (1, ""),
    "head_dim": (1, " (None = hidden_size // num_heads)"),
    "max_position_embeddings": (1, ""),
}
OVERRIDE_POSITIVE = ("rope_theta", "logit_scale", "layer_norm_eps", "initializer_range")


def validate(m: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(m, "model")
    overrides = Section(m.overrides, "model.overrides")
    for field, (low, why) in OVERRIDE_AT_LEAST.items():
        if m.overrides[field] is not None:
            overrides.at_least(field, low, why)
    for field in OVERRIDE_POSITIVE:
        if m.overrides[field] is not None:
            overrides.greater(field, 0.0)
    if not m.hf_init_dir and m.preset not in families.presets():
        s.fail("preset", f"unknown preset {m.preset!r} (known: {', '.join(sorted(families.presets()))})")
    s.one_of("dtype", DTYPES)
    s.one_of("param_dtype", DTYPES)
    s.one_of("remat", ("none", "full", "dots_saveable"))
    s.at_least("scan_unroll", 1)
    if not m.hf_init_dir:
        family = families.family_of_preset(m.preset)
        limit = family.max_positions(family.presets[m.preset])
        if limit is not None:
            limit = m.overrides.max_position_embeddings or limit
            if config.data.seq_len > limit:
                Section(config.data, "data").fail(
                    "seq_len", f"{config.data.seq_len} exceeds the model's max_position_embeddings {limit}"
                )
