"""The SFT objective: next-token cross-entropy on the answer tokens of packed rows.

    loss = Σ_tokens w_t · (-log p(y_t | y_<t, x)) / Σ_tokens w_t        (w_t = 1 on answer tokens, 0 on the prompt)
           [+ z_loss · Σ_t w_t · log² Z_t / Σ_t w_t]                    (optional; PaLM's z-loss)

averaged over the weighted tokens of the whole global batch: with gradient accumulation the token sums of all
microbatches are added before dividing (training/accumulate.py), so accumulating A microbatches equals one big
batch. The output projection is fused into a chunked cross-entropy (`losses.linear_cross_entropy`), so the
[batch, len, vocab] logits never exist — needed at Aya's 256k vocabulary. Both model families train through the
same functions: the family record (models/families.py) gives the forward pass to hidden states, the output
kernel and its scale.

`make_eval_step` sums the same loss per language id (eval loss per language, also used by the merge job's
before/after report).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from aya_jax import losses
from aya_jax.models import families
from aya_jax.training import accumulate
from aya_jax.training import state as ts

_SUMS = ("loss_sum", "nll_sum", "z_loss_sum", "correct_sum", "weight_sum")


def forward_loss(model: nn.Module, params: Any, batch: dict[str, jax.Array], z_loss: float = 0.0):
    """(token-summed loss, token sums: loss_sum, nll_sum, z_loss_sum, correct_sum, weight_sum)."""
    family = families.family_of(model)
    out = losses.linear_cross_entropy(
        family.hidden_states(model, params, batch),
        family.output_kernel(params).astype(model.dtype),
        batch["decoder_target_tokens"],
        batch["decoder_loss_weights"],
        logit_scale=family.logit_scale(model.cfg),
        z_loss=z_loss,
    )
    return out["loss_sum"], {k: out[k] for k in _SUMS}


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation, schedule: Any, z_loss: float, accum: int
):
    """(state, batch) -> (state, metrics): gradients of the token-summed loss, divided by the token count."""
    grad_fn = accumulate.accumulate(
        jax.value_and_grad(lambda p, b: forward_loss(model, p, b, z_loss), has_aux=True), accum
    )

    def step(state: ts.TrainState, batch: dict[str, jax.Array]):
        (_, sums), grads = grad_fn(state.params, batch)
        denom = jnp.maximum(sums["weight_sum"], 1.0)
        new_state, grad_norm = state.apply_gradients(jax.tree.map(lambda g: g / denom, grads), tx)
        return new_state, {
            "loss": sums["nll_sum"] / denom,
            "z_loss": sums["z_loss_sum"] / denom,
            "accuracy": sums["correct_sum"] / denom,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step),
            "target_tokens": sums["weight_sum"],
        }

    return step


def make_eval_step(model: nn.Module, num_languages: int):
    """(params, batch) -> token sums overall and per language id (for per-language loss)."""

    def step(params: Any, batch: dict[str, jax.Array]):
        w = batch["decoder_loss_weights"].astype(jnp.float32)
        family = families.family_of(model)
        out = losses.linear_cross_entropy(
            family.hidden_states(model, params, batch),
            family.output_kernel(params).astype(model.dtype),
            batch["decoder_target_tokens"],
            w,
            logit_scale=family.logit_scale(model.cfg),
        )
        lang_loss, lang_weight = losses.per_group_sums(
            out["nll"], w, batch["decoder_language_ids"], num_languages
        )
        return {
            "nll_sum": out["nll_sum"],
            "correct_sum": out["correct_sum"],
            "weight_sum": out["weight_sum"],
            "lang_nll_sum": lang_loss,
            "lang_weight_sum": lang_weight,
        }

    return step
