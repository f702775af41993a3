"""Layers shared by the model families: norms, rotary embeddings, masks, attention and the layers' contractions.

Everything here is mesh-agnostic: parameters carry logical axis names (`vocab, embed, mlp, heads, kv_heads,
head_dim, layers, norm`), activations are constrained with logical names (`act_batch, act_len, ...`);
`aya_jax.sharding` alone turns those names into mesh axes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array

# Large negative instead of -inf keeps fully masked rows (padding) finite: softmax becomes uniform there,
# and those rows carry no loss.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


_LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def einsum(spec: str, a: Array, b: Array) -> Array:
    """`jnp.einsum` of a layer's two operands (activations x weights, probabilities x values).

    On CPU, bf16/fp16 operands are contracted with an fp32 result that is cast back once, in the forward pass
    and in both backward contractions (a custom VJP): XLA:CPU runs only fp32-result dots of bf16 operands on
    its fast paths (oneDNN / YNNPACK with AVX512_BF16 or AMX), and a bf16-result dot is several times slower
    (benchmarks/train_step.py, variant bf16-result: the bf16 step ran 1.9x faster with this). The result is what accelerators compute anyway (fp32
    accumulation, one rounding at the end), so numerics do not depend on the backend. fp32 operands, and every
    other backend, take `jnp.einsum` unchanged."""
    if a.dtype == b.dtype and a.dtype in _LOW_PRECISION and jax.default_backend() == "cpu":
        return _f32_accumulating_einsum(spec, a, b)
    return jnp.einsum(spec, a, b)


def _cotangent_specs(spec: str) -> tuple[str, str]:
    """For "a,b->o": the specs of the two cotangent contractions, "o,b->a" and "a,o->b". Every index of an
    operand must appear in the other operand or the output (no sum inside one operand), as in a layer's
    contractions."""
    ins, out = spec.replace(" ", "").split("->")
    a, b = ins.split(",")
    if "." in spec or any(c not in b + out for c in a) or any(c not in a + out for c in b):
        raise ValueError(f"layers.einsum: {spec!r} sums an index inside one operand; use jnp.einsum")
    return f"{out},{b}->{a}", f"{a},{out}->{b}"


def _f32_result(spec: str, a: Array, b: Array) -> Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(a.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _f32_accumulating_einsum(spec: str, a: Array, b: Array) -> Array:
    return _f32_result(spec, a, b)


def _f32_accumulating_fwd(spec: str, a: Array, b: Array) -> tuple[Array, tuple[Array, Array]]:
    return _f32_result(spec, a, b), (a, b)


def _f32_accumulating_bwd(spec: str, saved: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    a, b = saved
    da_spec, db_spec = _cotangent_specs(spec)
    g = g.astype(a.dtype)
    return _f32_result(da_spec, g, b), _f32_result(db_spec, a, g)


_f32_accumulating_einsum.defvjp(_f32_accumulating_fwd, _f32_accumulating_bwd)


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    """Logical sharding constraint on an activation; a no-op outside a mesh/rules context."""
    return nn.with_logical_constraint(x, names)


class CohereLayerNorm(nn.Module):
    """Mean-centred LayerNorm with a scale and no bias, computed in fp32 and cast back.

    `feature_axes` names the logical axes of the scale: ("norm",) for the hidden state, ("heads", "head_dim")
    for the per-head qk-norm whose scale has one row per head.
    """

    eps: float = 1e-5
    feature_axes: tuple[str, ...] = ("norm",)
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ndim = len(self.feature_axes)
        shape = x.shape[-ndim:]
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, self.feature_axes),
            shape,
            self.param_dtype,
        )
        xf = x.astype(jnp.float32)
        # Statistics over the last axis only: for qk-norm that is head_dim, per head.
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * scale.astype(jnp.float32)).astype(x.dtype)


class RMSNorm(nn.Module):
    """T5-style RMSNorm: no mean subtraction, no bias; fp32 statistics."""

    eps: float = 1e-6
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(x.dtype)


def interleaved_rope(x: Array, positions: Array, theta: float) -> Array:
    """GPT-J style rotary embedding (Cohere): pairs (x[2i], x[2i+1]) rotate together.

    x: [batch, len, heads, head_dim]; positions: [batch, len]. Computed in fp32 over the full head_dim.
    """
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))  # [head_dim/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, len, head_dim/2]
    # repeat_interleave: each frequency serves the two entries of its pair.
    angles = jnp.repeat(angles, 2, axis=-1)[:, :, None, :]  # [batch, len, 1, head_dim]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    xf = x.astype(jnp.float32)
    x_even, x_odd = xf[..., ::2], xf[..., 1::2]
    rotated = jnp.stack([-x_odd, x_even], axis=-1).reshape(xf.shape)
    return (xf * cos + rotated * sin).astype(x.dtype)


def attention_mask(
    query_segment_ids: Array | None,
    key_segment_ids: Array | None,
    query_positions: Array | None = None,
    key_positions: Array | None = None,
    causal: bool = True,
) -> Array:
    """Boolean mask [batch, 1, q_len, k_len]: True where a query may attend to a key.

    Packing: queries only see keys of their own segment (segment id 0 is padding and sees nothing).
    Causality is by position index in the packed row, so it also holds across segment boundaries.
    """
    masks = []
    if query_segment_ids is not None:
        same = query_segment_ids[:, :, None] == key_segment_ids[:, None, :]
        not_pad = (query_segment_ids[:, :, None] > 0) & (key_segment_ids[:, None, :] > 0)
        masks.append(same & not_pad)
    if causal:
        if query_positions is None:
            q_len, k_len = query_segment_ids.shape[1], key_segment_ids.shape[1]
            causal_mask = jnp.arange(q_len)[:, None] >= jnp.arange(k_len)[None, :]
            masks.append(causal_mask[None])
        else:
            masks.append(query_positions[:, :, None] >= key_positions[:, None, :])
    mask = masks[0]
    for m in masks[1:]:
        mask = mask & m
    return mask[:, None, :, :]


# Query block of causal self-attention (see `dot_product_attention`).
CAUSAL_BLOCK = 128


def dot_product_attention(
    q: Array,  # [batch, q_len, heads, head_dim]
    k: Array,  # [batch, k_len, kv_heads, head_dim]
    v: Array,  # [batch, k_len, kv_heads, head_dim]
    mask: Array | None,  # [batch, 1, q_len, k_len] bool
    scale: float,
    bias: Array | None = None,  # [batch or 1, heads, q_len, k_len]
    causal_block: int = 0,
) -> Array:
    """Grouped-query attention with an fp32 softmax. Returns [batch, q_len, heads, head_dim].

    `causal_block > 0` declares the mask causal (query i never sees key j > i, as in decoder self-attention
    with q_len == k_len): queries are then processed in blocks of that size, each against only the keys up to
    its end. Same result; ~40% fewer score elements at 4 blocks, and each block's [.., block, keys] scores stay
    in cache, which makes XLA:CPU's softmax and its backward several times faster than on the full square.
    """
    if causal_block and bias is None and q.shape[1] == k.shape[1] and q.shape[1] > causal_block:
        outs = []
        for start in range(0, q.shape[1], causal_block):
            end = min(start + causal_block, q.shape[1])
            block_mask = None if mask is None else mask[:, :, start:end, :end]
            outs.append(dot_product_attention(q[:, start:end], k[:, :end], v[:, :end], block_mask, scale))
        return jnp.concatenate(outs, axis=1)
    batch, q_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    groups = heads // kv_heads
    # Group the query heads that share a KV head, so K/V are never repeated in memory.
    qg = q.reshape(batch, q_len, kv_heads, groups, head_dim)
    scores = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        scores = scores + bias.reshape(bias.shape[0], kv_heads, groups, *bias.shape[2:]).astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask[:, :, None], scores, MASK_VALUE)  # mask [b,1,1,q,k] broadcasts over h,g
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = einsum("bhgqk,bkhd->bqhgd", probs, v)
    return out.reshape(batch, q_len, heads, head_dim)


def cached_dot_product_attention(
    q: Array,  # [batch, q_len, heads, head_dim]: the new tokens' queries
    k_cache: Array,  # [batch, kv_heads, cache_len, head_dim]: keys in the cache
    v_cache: Array,  # [batch, kv_heads, cache_len, head_dim]
    cache_mask: Array,  # [batch, 1, q_len, cache_len] bool
    k: Array
    | None = None,  # [batch, kv_heads, q_len, head_dim]: the new tokens' own keys, if not in the cache
    v: Array | None = None,  # [batch, kv_heads, q_len, head_dim]
    mask: Array | None = None,  # [batch, 1, q_len, q_len] bool
    scale: float = 1.0,
    cache_bias: Array | None = None,  # [batch or 1, heads, q_len, cache_len]: added to the cache scores
    new_bias: Array | None = None,  # [batch or 1, heads, q_len, q_len]: added to the new tokens' scores
) -> Array:
    """Attention of new tokens over a KV cache, in the cache's layout: keys/values are
    [batch, kv_heads, len, head_dim] (heads before length), so the contractions batch over leading axes and
    XLA never transposes the cache. Returns [batch, q_len, heads, head_dim].

    Without `k`/`v` the cache already holds the new tokens (Cohere writes before it reads). With them, the
    attention is over the concatenation [cache keys, new keys] without building it: the two score blocks share
    one fp32 softmax (mT5 writes its cache after the step). The optional additive biases (mT5's relative
    position bias) split the same way as the keys."""
    batch, q_len, heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    qg = q.reshape(batch, q_len, kv_heads, heads // kv_heads, head_dim).transpose(
        0, 2, 3, 1, 4
    )  # [b,h,g,q,d]

    def scores(keys, m, bias):  # [batch, kv_heads, groups, q_len, keys]
        s = jnp.einsum("bhgqd,bhkd->bhgqk", qg, keys, preferred_element_type=jnp.float32) * scale
        if bias is not None:
            s = s + bias.reshape(bias.shape[0], kv_heads, -1, *bias.shape[2:]).astype(jnp.float32)
        return jnp.where(m[:, :, None], s, MASK_VALUE)

    blocks = [(scores(k_cache, cache_mask, cache_bias), v_cache)]
    if k is not None:
        blocks.append((scores(k, mask, new_bias), v))
    top = functools.reduce(jnp.maximum, [jnp.max(s, axis=-1, keepdims=True) for s, _ in blocks])
    exps = [(jnp.exp(s - top), values) for s, values in blocks]
    total = sum(jnp.sum(p, axis=-1, keepdims=True) for p, _ in exps)
    out = sum(einsum("bhgqk,bhkd->bhgqd", (p / total).astype(values.dtype), values) for p, values in exps)
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, q_len, heads, head_dim)


def remat_policy(name: str):
    """Activation checkpointing policy by name (config.model.remat)."""
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    if name == "dots_saveable":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    if name == "none":
        return None
    raise ValueError(f"config.model.remat: unknown policy {name!r} (expected none, full or dots_saveable)")
