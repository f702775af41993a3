"""Model families: one `Family` record per architecture, carrying everything the rest of the code needs to know
about a model beyond its module — so that training, sampling, HF conversion and the jobs never branch on the
architecture themselves.

Two families:

* `COHERE` — the decoder-only Cohere/Command-R model of Aya 23 and Aya Expanse (`models/cohere.py`). A training
  row is one sequence (prompt and answer; loss on the answer);
* `MT5` — the T5.1.1/mT5 encoder-decoder of Aya 101 (`models/mt5.py`). The prompt is the encoder input (with
  EOS appended, as T5 tasks do) and the answer the decoder target.

A preset name belongs to exactly one family (`family_of_preset`); a module or model config knows its own
(`family_of`). What a `Family` carries:

* building: `resolve` (preset + the tokenizer's vocabulary size + overrides -> model config), `module_class`,
  `dummy_inputs` (for `model.init` under `jax.eval_shape`);
* the training forward: `hidden_states` (final hidden states of a batch of the family's converter features),
  `output_kernel` and `logit_scale` (for the fused chunked cross-entropy), `feature_lengths`, and
  `converter` / `decoder_start_id` (the row layout the data pipeline writes,
  `aya_jax/data/feature_converters.make_converter`);
* counting: `param_count`, `train_flops_per_row`, `tokens_per_row`, `max_positions`;
* decoding: `prefill` (prompt -> first logits and a filled cache) and `decode` (next tokens -> logits and the
  cache), the two halves of `aya_jax/sampling.py`'s family-agnostic loop, and `decoding_view` (the model and
  parameters in the form those run fastest in, made once before the loop: Cohere's layers unrolled);
  `insert_cache_rows` and `shift_cache` (a running batch taking new rows: continuous batching, aya_jax/serving.py);
* `hf_model_type`: the `model_type` of its Hugging Face `config.json` (`aya_jax/hf/`).

Models know nothing of configs: `config.model.*` is read in `aya_jax/pretrained.py`, which hands plain values here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aya_jax.models import cohere, mt5

Array = jax.Array
Lengths = Mapping[str, int]  # feature lengths: {"inputs": encoder tokens, "targets": decoder tokens}


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    encoder_decoder: bool
    config_class: type
    module_class: type
    presets: Mapping[str, Any]
    resolve: Callable[[str, int | None, dict[str, Any]], Any]  # (preset, tokenizer vocab, overrides) -> cfg
    dummy_inputs: Callable[[Lengths], tuple[Array, ...]]
    hidden_states: Callable[[nn.Module, Any, Mapping[str, Array]], Array]
    output_kernel: Callable[[Any], Array]  # params -> [vocab, embed]
    logit_scale: Callable[[Any], float]  # cfg -> the factor on hidden @ kernel.T
    param_count: Callable[[Any], int]
    train_flops_per_row: Callable[[Any, Lengths], float]
    tokens_per_row: Callable[[Lengths], int]
    max_positions: Callable[[Any], int | None]  # None: relative positions, no limit
    # (model, params, left-padded prompts [batch, P], first real slot [batch], new tokens, cache dtype)
    #   -> (logits of the first new token [batch, vocab] fp32, cache)
    prefill: Callable[..., tuple[Array, Any]]
    # (model, params, tokens [batch, 1], cache) -> (logits of the next token [batch, vocab], cache)
    decode: Callable[..., tuple[Array, Any]]
    # (model, params) -> the (model, params) that `prefill` and `decode` run fastest with (same outputs)
    decoding_view: Callable[[nn.Module, Any], tuple[nn.Module, Any]]
    # (cache, rows [n], prefilled caches [n]) -> cache with those rows replaced, their slots ending at the
    # cache's next slot; and (cache, shift) -> the cache with every row's slots moved (continuous batching)
    insert_cache_rows: Callable[[Any, Array, Any], Any]
    shift_cache: Callable[[Any, Array], Any]
    converter: (
        str  # "decoder" | "encoder_decoder": the row layout (aya_jax/data/feature_converters.make_converter)
    )
    decoder_start_id: Callable[[Any], int]  # cfg -> the first decoder input of an encoder-decoder (else 0)
    hf_model_type: str

    def feature_lengths(self, seq_len: int, inputs_len: int = 0) -> dict[str, int]:
        """Task feature lengths: a decoder-only row is `seq_len` tokens (prompt and answer are cut to fit it);
        an encoder-decoder row has `inputs_len` (0 = seq_len) encoder and `seq_len` decoder tokens."""
        if self.encoder_decoder:
            return {"inputs": int(inputs_len) or int(seq_len), "targets": int(seq_len)}
        return {"inputs": int(seq_len), "targets": int(seq_len)}

    def init_inputs(self, lengths: int | Lengths = 8) -> tuple[Array, ...]:
        """Dummy inputs for `model.init` (traced only): an int is the length of every feature."""
        if isinstance(lengths, int):
            lengths = {"inputs": lengths, "targets": lengths}
        return self.dummy_inputs(lengths)

    def build(
        self,
        cfg: Any,
        *,
        dtype: Any,
        param_dtype: Any,
        remat: str = "none",
        scan_layers: bool = True,
        scan_unroll: int = 1,
    ) -> nn.Module:
        if remat not in ("none", "full", "dots_saveable"):
            raise ValueError(f"config.model.remat: {remat!r} is not one of none, full, dots_saveable")
        return self.module_class(
            cfg,
            dtype=dtype,
            param_dtype=param_dtype,
            remat=remat,
            scan_layers=scan_layers,
            scan_unroll=scan_unroll,
        )


# ------------------------------------------------------------------------------------------------------------
# Cohere (decoder-only)
# ------------------------------------------------------------------------------------------------------------


def _cohere_resolve(preset: str, vocab_size: int | None, overrides: dict[str, Any]) -> cohere.CohereConfig:
    """The preset with overrides; a placeholder vocabulary (0) takes the tokenizer's `vocab_size`. An explicit
    vocab_size override wins (it may pad the tokenizer's, e.g. for sharding), but never shrinks below it."""
    overrides = dict(overrides)
    vocab_override = overrides.pop("vocab_size", None)
    cfg = cohere.resolve(preset, vocab_size=vocab_override or vocab_size, **overrides)
    if vocab_override:
        cfg = cfg.replace(vocab_size=vocab_override)
    if vocab_size and cfg.vocab_size < vocab_size:
        raise ValueError(
            f"config.model: preset {preset!r} has vocab_size {cfg.vocab_size} < the tokenizer's {vocab_size}"
        )
    return cfg


def _cohere_hidden(model: nn.Module, params: Any, batch: Mapping[str, Array]) -> Array:
    return model.apply(
        {"params": params},
        batch["decoder_input_tokens"],
        batch["decoder_positions"],
        batch["decoder_segment_ids"],
        return_hidden=True,
    )


COHERE = Family(
    name="cohere",
    encoder_decoder=False,
    config_class=cohere.CohereConfig,
    module_class=cohere.CohereLM,
    presets=cohere.PRESETS,
    resolve=_cohere_resolve,
    dummy_inputs=lambda lengths: (jnp.zeros((1, lengths["targets"]), jnp.int32),),
    hidden_states=_cohere_hidden,
    output_kernel=cohere.output_kernel,
    logit_scale=lambda cfg: float(cfg.logit_scale),
    param_count=cohere.param_count,
    train_flops_per_row=lambda cfg, lengths: (
        cohere.train_flops_per_token(cfg, lengths["targets"]) * lengths["targets"]
    ),
    tokens_per_row=lambda lengths: lengths["targets"],
    max_positions=lambda cfg: cfg.max_position_embeddings,
    prefill=cohere.prefill,
    decode=cohere.decode,
    decoding_view=cohere.decoding_view,
    insert_cache_rows=cohere.insert_rows,
    shift_cache=cohere.shift_cache,
    converter="decoder",
    decoder_start_id=lambda cfg: 0,
    hf_model_type="cohere",
)


# ------------------------------------------------------------------------------------------------------------
# mT5 (encoder-decoder)
# ------------------------------------------------------------------------------------------------------------

# config.model.overrides (Cohere field names) -> mT5 config fields; the rest have no mT5 meaning.
_MT5_OVERRIDES = {
    "vocab_size": ("vocab_size",),
    "hidden_size": ("d_model",),
    "intermediate_size": ("d_ff",),
    "num_layers": ("num_encoder_layers", "num_decoder_layers"),
    "num_heads": ("num_heads",),
    "head_dim": ("d_kv",),
    "layer_norm_eps": ("layer_norm_eps",),
}


def _mt5_resolve(preset: str, vocab_size: int | None, overrides: dict[str, Any]) -> mt5.MT5Config:
    """mT5 config of `preset` with config.model.overrides mapped onto mT5 fields (num_layers sets both
    stacks); Cohere-only fields are an error naming them. The tokenizer's `vocab_size` fills a preset whose
    vocabulary comes from the data (vocab 0) unless overridden; an override may pad it, never shrink it below
    the tokenizer's."""
    unsupported = sorted(k for k in overrides if k not in _MT5_OVERRIDES)
    if unsupported:
        raise ValueError(
            f"config.model.overrides: {unsupported} have no meaning for the mT5 preset {preset!r} "
            f"(supported: {', '.join(sorted(_MT5_OVERRIDES))})"
        )
    fields: dict[str, Any] = {}
    for name, value in overrides.items():
        for target in _MT5_OVERRIDES[name]:
            fields[target] = value
    if (
        preset in mt5.PRESETS
        and "vocab_size" not in fields
        and vocab_size
        and not mt5.PRESETS[preset].vocab_size
    ):
        fields["vocab_size"] = (
            vocab_size  # a placeholder vocabulary (0) takes the data's, as Cohere presets do
        )
    cfg = mt5.get_config(preset, **fields)
    if vocab_size and cfg.vocab_size < vocab_size:
        raise ValueError(
            f"config.model: preset {preset!r} has vocab_size {cfg.vocab_size} < the tokenizer's {vocab_size}"
        )
    return cfg


def _mt5_hidden(model: nn.Module, params: Any, batch: Mapping[str, Array]) -> Array:
    return model.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        encoder_segment_ids=batch["encoder_segment_ids"],
        decoder_segment_ids=batch["decoder_segment_ids"],
        encoder_positions=batch["encoder_positions"],
        decoder_positions=batch["decoder_positions"],
        return_hidden=True,
    )


def _mt5_dummy_inputs(lengths: Lengths) -> tuple[Array, ...]:
    return jnp.zeros((1, lengths["inputs"]), jnp.int32), jnp.zeros((1, lengths["targets"]), jnp.int32)


MT5 = Family(
    name="mt5",
    encoder_decoder=True,
    config_class=mt5.MT5Config,
    module_class=mt5.MT5,
    presets=mt5.PRESETS,
    resolve=_mt5_resolve,
    dummy_inputs=_mt5_dummy_inputs,
    hidden_states=_mt5_hidden,
    output_kernel=mt5.output_kernel,
    logit_scale=lambda cfg: 1.0,  # mT5's lm_head is unscaled
    param_count=mt5.param_count,
    train_flops_per_row=lambda cfg, lengths: (
        mt5.train_flops_per_token(cfg, lengths["inputs"], lengths["targets"]) * lengths["targets"]
    ),
    tokens_per_row=lambda lengths: lengths["inputs"] + lengths["targets"],  # both stacks' tokens
    max_positions=lambda cfg: None,
    prefill=mt5.prefill,
    decode=mt5.decode,
    decoding_view=lambda model, params: (model, params),
    insert_cache_rows=mt5.insert_rows,
    shift_cache=mt5.shift_cache,
    converter="encoder_decoder",
    decoder_start_id=lambda cfg: cfg.decoder_start_id,
    hf_model_type="mt5",
)


FAMILIES: tuple[Family, ...] = (COHERE, MT5)


# ------------------------------------------------------------------------------------------------------------
# Lookup
# ------------------------------------------------------------------------------------------------------------


def presets() -> dict[str, Family]:
    """Every preset name -> its family."""
    return {name: family for family in FAMILIES for name in family.presets}


def family_of_preset(preset: str) -> Family:
    known = presets()
    if preset not in known:
        raise ValueError(
            f"config.model.preset: unknown preset {preset!r} (known: {', '.join(sorted(known))})"
        )
    return known[preset]


def family_of(model_or_cfg: Any) -> Family:
    """The family of a module (or its wrapper holding `.cfg`, e.g. a reward model) or a model config."""
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    for family in FAMILIES:
        if isinstance(cfg, family.config_class):
            return family
    raise TypeError(f"not a model of a known family: {type(model_or_cfg).__name__}")


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown model family {name!r} (known: {', '.join(f.name for f in FAMILIES)})")


def build(cfg: Any, **options: Any) -> nn.Module:
    """The module of a model config, whatever its family (`options`: those of `Family.build`)."""
    return family_of(cfg).build(cfg, **options)
