"""Cohere (Aya 23, Aya Expanse, Command R) <-> Hugging Face `CohereForCausalLM`: config and weight mapping.

`ARCHITECTURE` (family "cohere", model_type "cohere") is one of the built-in architectures of `aya_jax/hf/io.py`.
Checked against transformers 5.23's `models/cohere` (modeling + configuration):

* config.json -> `CohereConfig`: rope theta from `rope_parameters.rope_theta` (transformers >= 5) or the legacy
  top-level `rope_theta`; `head_dim` when config.json has one (transformers reads it with getattr), else
  hidden / heads; `num_key_value_heads` defaults to the head count; `logit_scale` 0.0625, `layer_norm_eps`
  1e-5, `use_qk_norm` False and `tie_word_embeddings` True when absent (the reference's defaults).
  Unsupported, with an error naming the field: attention biases, an activation other than SiLU, RoPE scaling.
* Weights (torch Linear is [out, in]; ours are [in, ...] so the einsums read naturally):

  | Hugging Face (per layer N)                       | aya_jax (stacked on a leading `layers` axis)       |
  |---------------------------------------------------|----------------------------------------------------|
  | model.embed_tokens.weight [V, E]                  | embedding [V, E]                                   |
  | model.layers.N.input_layernorm.weight [E]         | layers/input_norm/scale [L, E]                     |
  | model.layers.N.self_attn.q_proj.weight [H*D, E]   | layers/attn/q_proj [L, E, H, D]  (transpose, split)|
  | model.layers.N.self_attn.{k,v}_proj.weight [K*D,E]| layers/attn/{k,v}_proj [L, E, K, D]                |
  | model.layers.N.self_attn.o_proj.weight [E, H*D]   | layers/attn/o_proj [L, H, D, E]                    |
  | model.layers.N.self_attn.q_norm.weight [H, D]     | layers/attn/q_norm/scale [L, H, D]  (qk-norm only) |
  | model.layers.N.self_attn.k_norm.weight [K, D]     | layers/attn/k_norm/scale [L, K, D]  (qk-norm only) |
  | model.layers.N.mlp.{gate,up}_proj.weight [F, E]   | layers/mlp/{gate,up}_proj [L, E, F]                |
  | model.layers.N.mlp.down_proj.weight [E, F]        | layers/mlp/down_proj [L, F, E]                     |
  | model.norm.weight [E]                             | final_norm/scale [E]                               |
  | lm_head.weight [V, E]  (untied models only)       | lm_head [V, E]                                     |

  A tied checkpoint that still carries `lm_head.weight` is accepted and that tensor ignored (the embedding is
  the output projection). RoPE keeps no weights (transformers' `rotary_emb.inv_freq` is a non-persistent
  buffer; old checkpoints that saved it are accepted and it is ignored).
"""

from __future__ import annotations

from typing import Any

from aya_jax.hf.architectures import (
    Architecture,
    TensorMapping,
    declared_eos_ids,
    first_id,
    identity,
    required,
    transpose,
)
from aya_jax.hf.safetensors import HfCheckpointError
from aya_jax.models import cohere, families

FAMILY = families.family_named("cohere")

# The default Cohere chat template (Command R / Aya 23 / Aya Expanse), as shipped in their tokenizer_config.json
# (read from llama.cpp's copy of the GGUF metadata, shared/data/tokenizers/command_r/).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% elif false == true %}{% set loop_messages = messages %}"
    "{% set system_message = 'You are Command-R, a brilliant, sophisticated, AI-assistant trained to assist human "
    "users by providing thorough responses. You are trained by Cohere.' %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% if system_message != false %}"
    "{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' }}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set content = message['content'] %}{% if message['role'] == 'user' %}"
    "{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)
CHAT_TOKENS = ("<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>")

# Fields compared when naming the preset an HF config corresponds to (ids and init scale do not matter).
_ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "dim_per_head",
    "max_position_embeddings",
    "rope_theta",
    "logit_scale",
    "layer_norm_eps",
    "use_qk_norm",
    "tie_word_embeddings",
)


def _rope_theta(d: dict[str, Any]) -> float:
    rope = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling")
    rope_type = rope.get("rope_type") or rope.get("type") or (scaling or {}).get("rope_type") or "default"
    if rope_type != "default" or (scaling and scaling.get("type", "default") != "default"):
        raise HfCheckpointError(
            f"config.json: rope scaling {rope or scaling} is not supported (default RoPE only)"
        )
    theta = rope.get("rope_theta", d.get("rope_theta"))
    if theta is None:
        raise HfCheckpointError(
            "config.json: rope_theta is missing (neither rope_parameters.rope_theta nor rope_theta)"
        )
    return float(theta)


def config_from_hf(d: dict[str, Any]) -> cohere.CohereConfig:
    """config.json (a dict) -> CohereConfig; anything the model cannot reproduce is an error naming the field."""
    if d.get("model_type") != "cohere":
        raise HfCheckpointError(f"config.json: model_type {d.get('model_type')!r}, expected 'cohere'")
    if d.get("attention_bias", False):
        raise HfCheckpointError(
            "config.json: attention_bias=true is not supported (Aya models have no biases)"
        )
    if d.get("hidden_act", "silu") not in ("silu", "swish"):
        raise HfCheckpointError(f"config.json: hidden_act {d['hidden_act']!r} is not supported (silu only)")
    heads = int(required(d, "num_attention_heads"))
    hidden = int(required(d, "hidden_size"))
    head_dim = d.get("head_dim")
    return cohere.CohereConfig(
        vocab_size=int(required(d, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(required(d, "intermediate_size")),
        num_layers=int(required(d, "num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=int(d.get("num_key_value_heads") or heads),
        head_dim=int(head_dim) if head_dim and int(head_dim) != hidden // heads else None,
        max_position_embeddings=int(d.get("max_position_embeddings", 8192)),
        rope_theta=_rope_theta(d),
        logit_scale=float(d["logit_scale"]) if d.get("logit_scale") is not None else 0.0625,
        layer_norm_eps=float(d.get("layer_norm_eps") or 1e-5),
        use_qk_norm=bool(d.get("use_qk_norm") or False),
        initializer_range=float(d.get("initializer_range", 0.02)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
        pad_id=first_id(d.get("pad_token_id"), 0),
        bos_id=first_id(d.get("bos_token_id"), -1),
        eos_id=first_id(d.get("eos_token_id"), -1),
    )


def config_to_hf(cfg: cohere.CohereConfig) -> dict[str, Any]:
    """CohereConfig -> config.json as transformers 5.23 writes it, plus the legacy top-level `rope_theta` that
    transformers 4.x reads (5.x accepts both)."""
    out: dict[str, Any] = {
        "architectures": ["CohereForCausalLM"],
        "model_type": "cohere",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "logit_scale": cfg.logit_scale,
        "use_qk_norm": cfg.use_qk_norm,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "use_cache": True,
        "pad_token_id": cfg.pad_id,
        "bos_token_id": cfg.bos_id if cfg.bos_id >= 0 else None,
        "eos_token_id": cfg.eos_id if cfg.eos_id >= 0 else None,
    }
    if cfg.head_dim and cfg.head_dim != cfg.hidden_size // cfg.num_heads:
        out["head_dim"] = cfg.head_dim
    return out


def preset_hf_config(preset: str) -> dict[str, Any]:
    """config.json of a released preset (e.g. "aya-expanse-8b")."""
    return config_to_hf(cohere.resolve(preset))


def matching_preset(cfg: cohere.CohereConfig) -> str | None:
    """The preset whose architecture `cfg` is (e.g. an imported Aya Expanse 8B config -> "aya-expanse-8b")."""
    for name, preset in cohere.PRESETS.items():
        if all(getattr(preset, f) == getattr(cfg, f) for f in _ARCHITECTURE_FIELDS):
            return name
    return None


# ------------------------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------------------------


def tensor_mappings(cfg: cohere.CohereConfig, scan_layers: bool = True) -> list[TensorMapping]:
    e, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.dim_per_head
    h, k, v = cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size

    def in_heads(n):  # torch [n*D, E] -> ours [E, n, D]
        return lambda x: x.T.reshape(e, n, d)

    def from_heads(n):  # ours [E, n, D] -> torch [n*D, E]
        return lambda x: x.reshape(e, n * d).T

    per_layer = [
        (("input_norm", "scale"), "input_layernorm.weight", (e,), identity, identity),
        (("attn", "q_proj"), "self_attn.q_proj.weight", (h * d, e), in_heads(h), from_heads(h)),
        (("attn", "k_proj"), "self_attn.k_proj.weight", (k * d, e), in_heads(k), from_heads(k)),
        (("attn", "v_proj"), "self_attn.v_proj.weight", (k * d, e), in_heads(k), from_heads(k)),
        (
            ("attn", "o_proj"),
            "self_attn.o_proj.weight",
            (e, h * d),
            lambda x: x.T.reshape(h, d, e),  # torch [E, H*D] -> ours [H, D, E]
            lambda x: x.reshape(h * d, e).T,
        ),
        (("mlp", "gate_proj"), "mlp.gate_proj.weight", (f, e), transpose, transpose),
        (("mlp", "up_proj"), "mlp.up_proj.weight", (f, e), transpose, transpose),
        (("mlp", "down_proj"), "mlp.down_proj.weight", (e, f), transpose, transpose),
    ]
    if cfg.use_qk_norm:
        per_layer += [
            (("attn", "q_norm", "scale"), "self_attn.q_norm.weight", (h, d), identity, identity),
            (("attn", "k_norm", "scale"), "self_attn.k_norm.weight", (k, d), identity, identity),
        ]
    out = [
        TensorMapping(("embedding",), "model.embed_tokens.weight", (v, e), identity, identity),
        TensorMapping(("final_norm", "scale"), "model.norm.weight", (e,), identity, identity),
    ]
    if not cfg.tie_word_embeddings:
        out.append(TensorMapping(("lm_head",), "lm_head.weight", (v, e), identity, identity))
    for path, name, shape, to_ours, to_hf in per_layer:
        if scan_layers:
            out.append(
                TensorMapping(
                    ("layers", *path), f"model.layers.{{layer}}.{name}", shape, to_ours, to_hf, cfg.num_layers
                )
            )
        else:
            out += [
                TensorMapping((f"layers_{i}", *path), f"model.layers.{i}.{name}", shape, to_ours, to_hf)
                for i in range(cfg.num_layers)
            ]
    return out


def optional_hf_tensors(cfg: cohere.CohereConfig) -> set[str]:
    names = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(cfg.num_layers)}
    if cfg.tie_word_embeddings:
        names.add("lm_head.weight")
    return names


# ------------------------------------------------------------------------------------------------------------
# Model, generation and tokenizer metadata
# ------------------------------------------------------------------------------------------------------------


def generation_config(cfg: cohere.CohereConfig) -> dict[str, Any]:
    out = {"pad_token_id": cfg.pad_id}
    if cfg.bos_id >= 0:
        out["bos_token_id"] = cfg.bos_id
    if cfg.eos_id >= 0:
        out["eos_token_id"] = cfg.eos_id
    return out


def eos_ids(generation_json: dict[str, Any], cfg: cohere.CohereConfig) -> tuple[int, ...]:
    """Every stop token the checkpoint declares (generation_config.json may list several)."""
    return declared_eos_ids(generation_json, cfg.eos_id)


def tokenizer_config(tokenizer_json: dict[str, Any]) -> dict[str, Any] | None:
    """A tokenizer_config.json for a bare Command-R tokenizer.json: transformers' CohereTokenizer, its special
    tokens, and the chat template when the vocabulary has the turn tokens."""
    vocab = {t["content"] for t in tokenizer_json.get("added_tokens", [])}
    if "<BOS_TOKEN>" not in vocab:
        return None
    out: dict[str, Any] = {
        "tokenizer_class": "CohereTokenizer",
        "bos_token": "<BOS_TOKEN>",
        "eos_token": "<|END_OF_TURN_TOKEN|>" if "<|END_OF_TURN_TOKEN|>" in vocab else "<EOS_TOKEN>",
        "pad_token": "<PAD>",
        "unk_token": "<UNK>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
    }
    if all(t in vocab for t in CHAT_TOKENS):
        out["chat_template"] = CHAT_TEMPLATE
    return out


ARCHITECTURE = Architecture(
    family=FAMILY,
    model_type=FAMILY.hf_model_type,
    auto_class="AutoModelForCausalLM",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    tensor_mappings=tensor_mappings,
    optional_hf_tensors=optional_hf_tensors,
    generation_config=generation_config,
    tokenizer_config=tokenizer_config,
    eos_ids=eos_ids,
)

__all__ = [
    "ARCHITECTURE",
    "CHAT_TEMPLATE",
    "config_from_hf",
    "config_to_hf",
    "matching_preset",
    "preset_hf_config",
    "tensor_mappings",
]
