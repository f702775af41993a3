"""Losses as small pure functions over arrays. Logits are fp32 [batch, len, vocab]."""

from __future__ import annotations

import functools

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


# ------------------------------------------------------------------------------------------------------------
# Fused output projection + cross-entropy
# ------------------------------------------------------------------------------------------------------------


def linear_cross_entropy(
    hidden: Array,
    kernel: Array,
    targets: Array,
    weights: Array,
    *,
    logit_scale: float = 1.0,
    z_loss: float = 0.0,
    chunk_size: int = 1024,
) -> dict[str, Array]:
    """Cross-entropy of `logits = (hidden @ kernel.T) * logit_scale` without ever holding all the logits.

    hidden [..., embed] (the final-norm state), kernel [vocab, embed] (the tied embedding or lm_head), targets
    and weights [...]. Tokens are processed `chunk_size` at a time: the forward keeps only each token's
    log-normaliser, and the backward recomputes one chunk of logits at a time and turns it into gradients
    (softmax - onehot) on the spot. Peak memory is O(chunk_size x vocab) instead of O(tokens x vocab) — at
    Aya's 256k vocabulary and 8k context the full fp32 logits of one sequence are 8 GB — and on CPU it is also
    faster: no [tokens, vocab] tensor is written, transposed or scattered into.

    Returns {"loss_sum", "nll_sum", "z_loss_sum", "correct_sum", "weight_sum"} (scalars, the same keys as
    `cross_entropy`'s aux) and the per-token {"nll", "correct"} [...]. Only "loss_sum" is differentiable
    (w.r.t. hidden and kernel); the rest are statistics.
    """
    lead = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1).astype(jnp.int32)
    w = weights.reshape(-1).astype(jnp.float32)
    loss_sum, nll, correct, log_z = _linear_ce(
        h, kernel, t, w, float(logit_scale), float(z_loss), int(chunk_size)
    )
    nll, correct, log_z = jax.lax.stop_gradient((nll, correct, log_z))
    return {
        "loss_sum": loss_sum,
        "nll_sum": jnp.sum(nll * w),
        "z_loss_sum": jnp.sum(jnp.square(log_z) * w),
        "correct_sum": jnp.sum(correct * w),
        "weight_sum": jnp.sum(w),
        "nll": nll.reshape(lead),
        "correct": correct.reshape(lead),
    }


def _chunked(x: Array, chunk: int) -> Array:
    """[n, ...] -> [n_chunks, chunk, ...], zero-padded at the end."""
    n = x.shape[0]
    pad = (-n) % chunk
    if pad:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape(-1, chunk, *x.shape[1:])


def _chunk_logits(h: Array, kernel: Array, scale: float) -> Array:
    # [chunk, embed] x [vocab, embed] -> [chunk, vocab] fp32; accumulate in fp32 whatever the compute dtype.
    return jnp.einsum("ce,ve->cv", h, kernel.astype(h.dtype), preferred_element_type=jnp.float32) * scale


def _linear_ce_forward(h, kernel, t, w, scale, z_loss, chunk):
    n = h.shape[0]
    chunk = min(chunk, n)

    def body(_, xs):
        hc, tc = xs
        logits = _chunk_logits(hc, kernel, scale)
        log_z = jax.nn.logsumexp(logits, axis=-1)
        # The target logit by comparison with an iota, not a gather: no scatter in anyone's backward.
        hit = jnp.arange(logits.shape[-1], dtype=jnp.int32)[None, :] == tc[:, None]
        target_logit = jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)
        correct = (jnp.argmax(logits, axis=-1) == tc).astype(jnp.float32)
        return None, (log_z, target_logit, correct)

    _, (log_z, target_logit, correct) = jax.lax.scan(body, None, (_chunked(h, chunk), _chunked(t, chunk)))
    log_z, target_logit, correct = (x.reshape(-1)[:n] for x in (log_z, target_logit, correct))
    nll = log_z - target_logit
    loss_sum = jnp.sum(w * (nll + z_loss * jnp.square(log_z))) if z_loss else jnp.sum(w * nll)
    return (loss_sum, nll, correct, log_z), (h, kernel, t, w, log_z)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _linear_ce(h, kernel, t, w, scale, z_loss, chunk):
    return _linear_ce_forward(h, kernel, t, w, scale, z_loss, chunk)[0]


def _linear_ce_fwd(h, kernel, t, w, scale, z_loss, chunk):
    return _linear_ce_forward(h, kernel, t, w, scale, z_loss, chunk)


def _linear_ce_bwd(scale, z_loss, chunk, residuals, cotangents):
    h, kernel, t, w, log_z = residuals
    g = cotangents[0]  # only loss_sum is differentiable
    n = h.shape[0]
    chunk = min(chunk, n)
    coef = g * w  # [n]: d loss_sum / d (per-token loss)

    def body(d_kernel, xs):
        hc, tc, cc, zc = xs
        logits = _chunk_logits(hc, kernel, scale)
        probs = jnp.exp(logits - zc[:, None])
        hit = jnp.arange(logits.shape[-1], dtype=jnp.int32)[None, :] == tc[:, None]
        # d(nll)/d logits = softmax - onehot; d(z * log_z^2)/d logits = 2 z log_z softmax.
        d_logits = probs * (1.0 + 2.0 * z_loss * zc)[:, None] - hit.astype(jnp.float32)
        d_logits = (d_logits * (cc * scale)[:, None]).astype(hc.dtype)  # [chunk, vocab]
        d_h = jnp.einsum("cv,ve->ce", d_logits, kernel.astype(hc.dtype), preferred_element_type=jnp.float32)
        d_kernel = d_kernel + jnp.einsum("cv,ce->ve", d_logits, hc, preferred_element_type=jnp.float32)
        return d_kernel, d_h.astype(hc.dtype)

    d_kernel0 = jnp.zeros(kernel.shape, jnp.float32)
    xs = (_chunked(h, chunk), _chunked(t, chunk), _chunked(coef, chunk), _chunked(log_z, chunk))
    d_kernel, d_h = jax.lax.scan(body, d_kernel0, xs)
    d_h = d_h.reshape(-1, h.shape[-1])[:n]
    return d_h, d_kernel.astype(kernel.dtype), None, None


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)
