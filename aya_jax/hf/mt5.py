"""mT5 (Aya 101, google/mt5-*) <-> Hugging Face `MT5ForConditionalGeneration`: config and weight mapping.

`ARCHITECTURE` (family "mt5", model_type "mt5") is one of the built-in architectures of `aya_jax/hf/io.py`.
Checked against transformers 5.23's `models/mt5` (modeling + configuration). model_type "t5" is not registered: transformers' T5 rescales tied
logits by d_model**-0.5 unless config.json says `tie_word_embeddings: false` (original T5 vs T5.1.1), and
T5 v1.0 uses a ReLU FFN — not the same model without more switches.

* config.json -> `MT5Config`: d_model, d_ff, d_kv, num_heads, num_layers (encoder) and num_decoder_layers
  (default: num_layers), relative_attention_{num_buckets,max_distance} (32, 128), layer_norm_epsilon (1e-6),
  dropout_rate (0.1), initializer_factor (1.0), tie_word_embeddings (transformers' default True; the released
  configs say false), pad/eos/decoder_start ids (0, 1, 0). `feed_forward_proj` other than "gated-gelu" is an
  error naming the field.
* Weights (torch Linear is [out, in]; ours are [in, ...]). Encoder block N has layer.0 (self-attention) and
  layer.1 (FFN); decoder block N has layer.0 (self-attention), layer.1 (cross-attention `EncDecAttention`) and
  layer.2 (FFN). Stacked on a leading `layers` axis with scan_layers, else `layers_N`:

  | Hugging Face                                              | aya_jax                                    |
  |-----------------------------------------------------------|--------------------------------------------|
  | shared.weight [V, E]                                      | embedding [V, E]                           |
  | lm_head.weight [V, E]  (untied models)                    | lm_head [V, E]                             |
  | {enc,dec}oder.block.0.layer.0.SelfAttention.              | {enc,dec}oder/relative_attention_bias      |
  |   relative_attention_bias.weight [buckets, H]             |   [buckets, H]  (only block 0 holds it)    |
  | S.block.N.layer.0.layer_norm.weight [E]                   | S/layers/self_attn_norm/scale [L, E]       |
  | S.block.N.layer.0.SelfAttention.{q,k,v}.weight [H*D, E]   | S/layers/self_attn/{q,k,v}_proj [L, E, H, D]|
  | S.block.N.layer.0.SelfAttention.o.weight [E, H*D]         | S/layers/self_attn/o_proj [L, H, D, E]     |
  | decoder.block.N.layer.1.layer_norm.weight                 | decoder/layers/cross_attn_norm/scale       |
  | decoder.block.N.layer.1.EncDecAttention.{q,k,v,o}.weight  | decoder/layers/cross_attn/{q,k,v,o}_proj   |
  | S.block.N.layer.{1 enc, 2 dec}.layer_norm.weight          | S/layers/mlp_norm/scale                    |
  | S.block.N.layer.F.DenseReluDense.{wi_0,wi_1}.weight [F,E] | S/layers/mlp/{gate_proj,up_proj} [L, E, F] |
  | S.block.N.layer.F.DenseReluDense.wo.weight [E, F]         | S/layers/mlp/down_proj [L, F, E]           |
  | {enc,dec}oder.final_layer_norm.weight [E]                 | S/final_norm/scale [E]                     |

  `encoder.embed_tokens.weight` / `decoder.embed_tokens.weight` (copies of `shared` in older checkpoints)
  and a stray `decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight` (which transformers
  ignores too) are accepted and ignored.

The output projection. Aya 101 and every google/mt5 checkpoint carry their own `lm_head.weight` with
`tie_word_embeddings: false`; it is imported (untied model). transformers >= 5 forces MT5 to tie lm_head to
`shared` (unscaled) and a tied model saves only `shared.weight`; such a directory imports as a tied model
(config.json then says true and there is no lm_head.weight). transformers 5.23 *can* still represent an
untied MT5: when a checkpoint holds both tensors with different values it keeps them apart (with a warning),
so an untied export (both tensors, `tie_word_embeddings: false`) loads into `from_pretrained` with our lm_head
and equal logits. One case is ambiguous from config.json alone: an untied model re-saved by transformers >= 5
(config.json forced to true, yet lm_head.weight present). `hf.read_config` looks at the tensor names too
(`config_for_tensors` below): a checkpoint carrying `lm_head.weight` imports untied with that head, whatever
config.json says about tying (a tied model's copy equals `shared`, so nothing changes for it).

Tokenizer: mT5's is a SentencePiece model; `hf.save(..., tokenizer=...)` copies whatever tokenizer files the
source provides (see `hf.export_tokenizer`) and writes no tokenizer_config.json of its own.
"""

from __future__ import annotations

import logging
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
from aya_jax.models import families, mt5

FAMILY = families.family_named("mt5")

log = logging.getLogger(__name__)


def config_from_hf(d: dict[str, Any]) -> mt5.MT5Config:
    """config.json (a dict) -> MT5Config; anything the model cannot reproduce is an error naming the field."""
    if d.get("model_type") != "mt5":
        raise HfCheckpointError(f"config.json: model_type {d.get('model_type')!r}, expected 'mt5'")
    ffn = d.get("feed_forward_proj", "gated-gelu")
    if ffn != "gated-gelu":
        raise HfCheckpointError(
            f"config.json: feed_forward_proj {ffn!r} is not supported (mT5 / T5.1.1 gated-gelu only)"
        )
    if d.get("is_encoder_decoder") is False:
        raise HfCheckpointError(
            "config.json: is_encoder_decoder=false (an encoder-only model) is not supported"
        )
    layers = int(required(d, "num_layers"))
    return mt5.MT5Config(
        vocab_size=int(required(d, "vocab_size")),
        d_model=int(required(d, "d_model")),
        d_ff=int(required(d, "d_ff")),
        d_kv=int(required(d, "d_kv")),
        num_heads=int(required(d, "num_heads")),
        num_encoder_layers=layers,
        num_decoder_layers=int(d.get("num_decoder_layers") or layers),
        relative_attention_num_buckets=int(d.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(d.get("relative_attention_max_distance", 128)),
        layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-6)),
        dropout_rate=float(d.get("dropout_rate", 0.1)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
        pad_id=first_id(d.get("pad_token_id"), 0),
        eos_id=first_id(d.get("eos_token_id"), 1),
        decoder_start_id=first_id(d.get("decoder_start_token_id"), 0),
        initializer_factor=float(d.get("initializer_factor", 1.0)),
    )


def config_to_hf(cfg: mt5.MT5Config) -> dict[str, Any]:
    """MT5Config -> config.json as transformers 5.23 writes it (tie_word_embeddings as ours: see the module
    docstring for what transformers >= 5 does with false)."""
    return {
        "architectures": ["MT5ForConditionalGeneration"],
        "model_type": "mt5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_ff": cfg.d_ff,
        "d_kv": cfg.d_kv,
        "num_heads": cfg.num_heads,
        "num_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "dropout_rate": cfg.dropout_rate,
        "initializer_factor": cfg.initializer_factor,
        "feed_forward_proj": "gated-gelu",
        "is_encoder_decoder": True,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "use_cache": True,
        "pad_token_id": cfg.pad_id,
        "eos_token_id": cfg.eos_id,
        "decoder_start_token_id": cfg.decoder_start_id,
    }


# ------------------------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------------------------


def tensor_mappings(cfg: mt5.MT5Config, scan_layers: bool = True) -> list[TensorMapping]:
    e, f, h, d, v = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv, cfg.vocab_size

    def attention(ours: str, theirs: str) -> list[tuple]:
        qkv_to_ours = lambda x: x.T.reshape(e, h, d)  # noqa: E731 - torch [H*D, E] -> ours [E, H, D]
        qkv_to_hf = lambda x: x.reshape(e, h * d).T  # noqa: E731
        out = [
            ((ours, f"{p}_proj"), f"{theirs}.{p}.weight", (h * d, e), qkv_to_ours, qkv_to_hf) for p in "qkv"
        ]
        out.append(
            (
                (ours, "o_proj"),
                f"{theirs}.o.weight",
                (e, h * d),
                lambda x: x.T.reshape(h, d, e),  # torch [E, H*D] -> ours [H, D, E]
                lambda x: x.reshape(h * d, e).T,
            )
        )
        return out

    def mlp(layer: int) -> list[tuple]:
        theirs = f"layer.{layer}.DenseReluDense"
        return [
            (("mlp", "gate_proj"), f"{theirs}.wi_0.weight", (f, e), transpose, transpose),
            (("mlp", "up_proj"), f"{theirs}.wi_1.weight", (f, e), transpose, transpose),
            (("mlp", "down_proj"), f"{theirs}.wo.weight", (e, f), transpose, transpose),
            (("mlp_norm", "scale"), f"layer.{layer}.layer_norm.weight", (e,), identity, identity),
        ]

    self_attention = [
        (("self_attn_norm", "scale"), "layer.0.layer_norm.weight", (e,), identity, identity),
        *attention("self_attn", "layer.0.SelfAttention"),
    ]
    per_layer = {
        "encoder": (cfg.num_encoder_layers, self_attention + mlp(1)),
        "decoder": (
            cfg.num_decoder_layers,
            self_attention
            + [(("cross_attn_norm", "scale"), "layer.1.layer_norm.weight", (e,), identity, identity)]
            + attention("cross_attn", "layer.1.EncDecAttention")
            + mlp(2),
        ),
    }
    out = [TensorMapping(("embedding",), "shared.weight", (v, e), identity, identity)]
    if not cfg.tie_word_embeddings:
        out.append(TensorMapping(("lm_head",), "lm_head.weight", (v, e), identity, identity))
    for stack, (num_layers, mappings) in per_layer.items():
        out += [
            TensorMapping(
                (stack, "relative_attention_bias"),
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                (cfg.relative_attention_num_buckets, h),
                identity,
                identity,
            ),
            TensorMapping(
                (stack, "final_norm", "scale"), f"{stack}.final_layer_norm.weight", (e,), identity, identity
            ),
        ]
        for path, name, shape, to_ours, to_hf in mappings:
            if scan_layers:
                out.append(
                    TensorMapping(
                        (stack, "layers", *path),
                        f"{stack}.block.{{layer}}.{name}",
                        shape,
                        to_ours,
                        to_hf,
                        num_layers,
                    )
                )
            else:
                out += [
                    TensorMapping(
                        (stack, f"layers_{i}", *path), f"{stack}.block.{i}.{name}", shape, to_ours, to_hf
                    )
                    for i in range(num_layers)
                ]
    return out


def optional_hf_tensors(cfg: mt5.MT5Config) -> set[str]:
    """Copies of `shared` and the cross-attention bias transformers ignores. A tied model's lm_head.weight is
    deliberately *not* optional (see the module docstring)."""
    return {
        "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight",
        "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
    }


# ------------------------------------------------------------------------------------------------------------
# Model, generation and tokenizer metadata
# ------------------------------------------------------------------------------------------------------------


def generation_config(cfg: mt5.MT5Config) -> dict[str, Any]:
    return {
        "decoder_start_token_id": cfg.decoder_start_id,
        "eos_token_id": cfg.eos_id,
        "pad_token_id": cfg.pad_id,
    }


def eos_ids(generation_json: dict[str, Any], cfg: mt5.MT5Config) -> tuple[int, ...]:
    """Every stop token the checkpoint declares (generation_config.json may list several)."""
    return declared_eos_ids(generation_json, cfg.eos_id)


def config_for_tensors(config: dict[str, Any], tensor_names: set[str]) -> dict[str, Any]:
    """An `lm_head.weight` in the checkpoint means an untied head, even under a config.json that says tied."""
    if "lm_head.weight" in tensor_names and config.get("tie_word_embeddings", True):
        log.warning(
            "config.json says tie_word_embeddings but the checkpoint has its own lm_head.weight: importing it "
            "untied (a transformers >= 5 re-save of an untied mT5 such as aya-101)"
        )
        return {**config, "tie_word_embeddings": False}
    return config


ARCHITECTURE = Architecture(
    family=FAMILY,
    model_type=FAMILY.hf_model_type,
    auto_class="AutoModelForSeq2SeqLM",
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    tensor_mappings=tensor_mappings,
    optional_hf_tensors=optional_hf_tensors,
    generation_config=generation_config,
    eos_ids=eos_ids,
    config_for_tensors=config_for_tensors,
)

__all__ = ["ARCHITECTURE", "config_from_hf", "config_to_hf", "tensor_mappings"]
