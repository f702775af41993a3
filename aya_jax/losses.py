"""Losses as small pure functions over arrays. Logits are fp32 [batch, len, vocab]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def token_log_probs(logits: Array, targets: Array) -> Array:
    """log p(target) per token. logits [batch, len, vocab] fp32, targets [batch, len] int -> [batch, len]."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return target_logits - log_z


def cross_entropy(
    logits: Array, targets: Array, weights: Array, z_loss: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """Weighted next-token cross-entropy, mean over weighted tokens, with optional z-loss.

    z-loss (PaLM, t5x): `z_loss * log(Z)^2` per token keeps the softmax normaliser near 1.
    Returns (loss, aux) with the sums needed to combine microbatches exactly: aux["loss_sum"] and
    aux["weight_sum"] (so accumulation averages over tokens, not over microbatches).
    """
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, len]
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = log_z - target_logits
    total = nll + z_loss * jnp.square(log_z) if z_loss else nll
    weight_sum = jnp.sum(weights)
    denom = jnp.maximum(weight_sum, 1.0)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    aux = {
        "loss_sum": jnp.sum(total * weights),
        "nll_sum": jnp.sum(nll * weights),
        "z_loss_sum": jnp.sum(jnp.square(log_z) * weights),
        "correct_sum": jnp.sum(correct * weights),
        "weight_sum": weight_sum,
    }
    return jnp.sum(total * weights) / denom, aux


def per_group_sums(nll: Array, weights: Array, group_ids: Array, num_groups: int) -> tuple[Array, Array]:
    """Sum of weighted per-token losses and of weights per group id (e.g. language): two [num_groups] arrays."""
    w = weights.astype(jnp.float32).reshape(-1)
    ids = group_ids.reshape(-1)
    loss_sums = jax.ops.segment_sum(nll.reshape(-1) * w, ids, num_segments=num_groups)
    weight_sums = jax.ops.segment_sum(w, ids, num_segments=num_groups)
    return loss_sums, weight_sums
