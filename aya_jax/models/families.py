"""Model families: what a trainer needs to know about a model beyond its module.

Two families train through the same SFT loop:

* `cohere` — the decoder-only Cohere/Command-R model of Aya 23 and Aya Expanse (`models/cohere.py`). Rows come
  from `DecoderPackedFeatureConverter` (prompt and answer as one sequence, loss on the answer);
* `mt5` — the T5.1.1/mT5 encoder-decoder of Aya 101 (`models/mt5.py`). Rows come from
  `EncoderDecoderFeatureConverter` (the prompt is the encoder input, with EOS appended as T5 tasks do; the
  answer is the decoder target).

The family is chosen by `config.model.preset` (each preset name belongs to exactly one family). Everything the
trainer does differently per family goes through the functions here: building the module, dummy inputs for
`init`, the forward pass to final hidden states on a batch of converter features, the output projection and its
scale (for the fused cross-entropy), parameter and FLOP counts, and the data converter and feature lengths.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aya_jax.models import cohere

COHERE, MT5 = "cohere", "mt5"

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


def _mt5():
    from aya_jax.models import mt5  # imported on first use: decoder-only runs never need it

    return mt5


def presets() -> dict[str, str]:
    """Every preset name -> its family."""
    out = {name: COHERE for name in cohere.PRESETS}
    out.update({name: MT5 for name in _mt5().PRESETS})
    return out


def family_of_preset(preset: str) -> str:
    if preset in cohere.PRESETS:
        return COHERE
    known = presets()
    if preset not in known:
        raise ValueError(
            f"config.model.preset: unknown preset {preset!r} (known: {', '.join(sorted(known))})"
        )
    return known[preset]


def is_encoder_decoder(model_or_cfg: Any) -> bool:
    """True for the mT5 module or its config."""
    if isinstance(model_or_cfg, (cohere.CohereLM, cohere.CohereConfig)):
        return False
    mt5 = _mt5()
    return isinstance(model_or_cfg, (mt5.MT5, mt5.MT5Config))


def resolve_mt5(preset: str, vocab_size: int | None, overrides: dict[str, Any]) -> Any:
    """mT5 config of `preset` with config.model.overrides mapped onto mT5 fields (num_layers sets both
    stacks); Cohere-only fields are an error naming them. The tokenizer's `vocab_size` fills a preset whose
    vocabulary comes from the data (vocab 0) unless overridden; an override may pad it, never shrink it below
    the tokenizer's."""
    mt5 = _mt5()
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
    if "vocab_size" not in fields and vocab_size and mt5.PRESETS[preset].vocab_size == 0:
        fields["vocab_size"] = (
            vocab_size  # a placeholder vocabulary (0) takes the data's, as Cohere presets do
        )
    cfg = mt5.get_config(preset, **fields)
    if vocab_size and cfg.vocab_size < vocab_size:
        raise ValueError(
            f"config.model: preset {preset!r} has vocab_size {cfg.vocab_size} < the tokenizer's {vocab_size}"
        )
    return cfg


def build_module(cfg: Any, dtype: Any, param_dtype: Any, remat: str, scan_layers: bool) -> nn.Module:
    if remat not in ("none", "full", "dots_saveable"):
        raise ValueError(f"config.model.remat: {remat!r} is not one of none, full, dots_saveable")
    cls = _mt5().MT5 if is_encoder_decoder(cfg) else cohere.CohereLM
    return cls(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat, scan_layers=scan_layers)


# ------------------------------------------------------------------------------------------------------------
# Training-time interface
# ------------------------------------------------------------------------------------------------------------


def dummy_inputs(model: nn.Module, lengths: dict[str, int] | int) -> tuple[jax.Array, ...]:
    """Positional inputs for `model.init` (traced only). `lengths`: an int (decoder length) or feature
    lengths {"inputs", "targets"}."""
    if isinstance(lengths, int):
        lengths = {"inputs": lengths, "targets": lengths}
    dec = jnp.zeros((1, lengths["targets"]), jnp.int32)
    if is_encoder_decoder(model):
        return jnp.zeros((1, lengths["inputs"]), jnp.int32), dec
    return (dec,)


def hidden_states(model: nn.Module, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
    """Final hidden states [batch, targets_len, embed] for a batch of converter features."""
    if is_encoder_decoder(model):
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
    return model.apply(
        {"params": params},
        batch["decoder_input_tokens"],
        batch["decoder_positions"],
        batch["decoder_segment_ids"],
        return_hidden=True,
    )


def output_kernel(model: nn.Module, params: Any) -> jax.Array:
    """The [vocab, embed] output projection (`logits = hidden @ kernel.T * logit_scale(model)`)."""
    if is_encoder_decoder(model):
        return _mt5().output_kernel(params)
    return cohere.output_kernel(params)


def logit_scale(model: nn.Module) -> float:
    """Cohere scales its tied logits; mT5's lm_head is unscaled."""
    return 1.0 if is_encoder_decoder(model) else float(model.cfg.logit_scale)


def param_count(cfg: Any) -> int:
    return _mt5().param_count(cfg) if is_encoder_decoder(cfg) else cohere.param_count(cfg)


def train_flops_per_row(cfg: Any, lengths: dict[str, int]) -> float:
    """Model FLOPs of one training row (forward + backward): decoder-only rows are `targets` tokens long;
    encoder-decoder rows are `inputs` encoder tokens plus `targets` decoder tokens."""
    if is_encoder_decoder(cfg):
        return _mt5().train_flops_per_token(cfg, lengths["inputs"], lengths["targets"]) * lengths["targets"]
    return cohere.train_flops_per_token(cfg, lengths["targets"]) * lengths["targets"]


def tokens_per_row(cfg: Any, lengths: dict[str, int]) -> int:
    """Tokens one row processes (the tokens/s denominator): both stacks' for an encoder-decoder."""
    return lengths["inputs"] + lengths["targets"] if is_encoder_decoder(cfg) else lengths["targets"]


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------


def feature_lengths(cfg: Any, data_config: Any) -> dict[str, int]:
    """Task feature lengths: `seq_len` for both features of a decoder-only model (prompt and answer are cut
    by the converter to fit one row); an encoder-decoder reads `inputs_len` (0 = seq_len) encoder tokens and
    `seq_len` decoder tokens."""
    seq_len = int(data_config.seq_len)
    inputs_len = int(data_config.get("inputs_len", 0) or 0) or seq_len
    if is_encoder_decoder(cfg):
        return {"inputs": inputs_len, "targets": seq_len}
    return {"inputs": seq_len, "targets": seq_len}


def feature_converter(cfg: Any, data_config: Any, eos_id: int):
    """The seqio converter whose rows this family trains on."""
    from aya_jax.data import feature_converters  # data stays off the import path of the model code

    if is_encoder_decoder(cfg):
        return feature_converters.EncoderDecoderFeatureConverter(
            pack=bool(data_config.pack), inputs_eos_id=eos_id, decoder_start_id=cfg.decoder_start_id
        )
    return feature_converters.DecoderPackedFeatureConverter(pack=bool(data_config.pack))
