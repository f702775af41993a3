"""Focused checks of aya_jax.models.layers against small NumPy computations written from the equations in
docs/models.md."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aya_jax.models import layers

RTOL = 1e-5
ATOL = 1e-5


def np_interleaved_rope(x, positions, theta):
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.repeat(positions.astype(np.float64)[..., None] * inv_freq, 2, axis=-1)[:, :, None, :]
    rot = np.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)
    return x * np.cos(ang) + rot * np.sin(ang)


# --------------------------------------------------------------------------------------------------
# interleaved_rope
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [10000.0, 8_000_000.0, 50.0])
def test_interleaved_rope_matches_numpy(theta):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 3, 16)).astype(np.float32)
    # Positions below 64: there the fp32 angle (pos * inv_freq, as in HF) is within ~1e-5 of the exact one.
    positions = np.stack([np.arange(7), rng.integers(0, 64, 7)]).astype(np.int32)
    got = np.asarray(layers.interleaved_rope(jnp.asarray(x), jnp.asarray(positions), theta))
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(
        got, np_interleaved_rope(x.astype(np.float64), positions, theta), rtol=RTOL, atol=ATOL
    )


def test_interleaved_rope_large_positions_within_fp32_angle_resolution():
    """transformers' Cohere (and docs/models.md) compute the angle pos * inv_freq in fp32, so at position p it
    carries an absolute error of about p * 2^-24 (rounding of the product) plus p * |d inv_freq| (~1 ulp of
    inv_freq): <= ~3 * p * 2^-24 ~ 5.4e-4 at p = 3000. The rotated values (|x| ~ 1) inherit that error; 1e-3
    bounds it, and a wrong rotation (the half-rotation, a missing repeat) would give O(1) differences."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 3, 16)).astype(np.float32)
    positions = rng.integers(1000, 3000, (1, 8)).astype(np.int32)
    got = np.asarray(layers.interleaved_rope(jnp.asarray(x), jnp.asarray(positions), 10000.0))
    np.testing.assert_allclose(
        got, np_interleaved_rope(x.astype(np.float64), positions, 10000.0), rtol=0, atol=1e-3
    )


def test_interleaved_rope_rotates_adjacent_pairs():
    """Only the pair (x[2i], x[2i+1]) mixes, at angle pos * theta^(-2i/d): check one pair by hand."""
    d, theta, pos = 8, 10000.0, 3
    x = np.zeros((1, 1, 1, d), np.float32)
    x[..., 2] = 1.0  # first element of pair i=1
    got = np.asarray(layers.interleaved_rope(jnp.asarray(x), jnp.full((1, 1), pos, jnp.int32), theta))[
        0, 0, 0
    ]
    a = pos * theta ** (-2.0 / d)
    want = np.zeros(d)
    want[2], want[3] = np.cos(a), np.sin(a)  # (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_interleaved_rope_preserves_norms_and_is_identity_at_zero():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 4, 32)).astype(np.float32)
    positions = rng.integers(0, 5000, (2, 9)).astype(np.int32)
    y = np.asarray(layers.interleaved_rope(jnp.asarray(x), jnp.asarray(positions), 10000.0))
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=RTOL, atol=ATOL)
    pair_norm = lambda a: np.hypot(a[..., ::2], a[..., 1::2])
    np.testing.assert_allclose(pair_norm(y), pair_norm(x), rtol=RTOL, atol=ATOL)  # each pair rotates alone
    y0 = np.asarray(layers.interleaved_rope(jnp.asarray(x), jnp.zeros((2, 9), jnp.int32), 10000.0))
    np.testing.assert_allclose(y0, x, rtol=0, atol=0)


def test_interleaved_rope_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.standard_normal((1, 1, 1, 16)).astype(np.float32))
    k = jnp.asarray(rng.standard_normal((1, 1, 1, 16)).astype(np.float32))

    def score(m, n):
        qm = layers.interleaved_rope(q, jnp.full((1, 1), m, jnp.int32), 10000.0)
        kn = layers.interleaved_rope(k, jnp.full((1, 1), n, jnp.int32), 10000.0)
        return float(jnp.sum(qm * kn))

    np.testing.assert_allclose(score(7, 3), score(107, 103), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(score(0, 5), score(20, 25), rtol=RTOL, atol=ATOL)
    assert abs(score(7, 3) - score(7, 4)) > 1e-3


def test_interleaved_rope_keeps_input_dtype():
    x = jnp.ones((1, 3, 2, 8), jnp.bfloat16)
    y = layers.interleaved_rope(x, jnp.arange(3, dtype=jnp.int32)[None], 10000.0)
    assert y.dtype == jnp.bfloat16


# --------------------------------------------------------------------------------------------------
# attention_mask
# --------------------------------------------------------------------------------------------------


def test_attention_mask_causal_single_segment():
    seg = jnp.ones((1, 4), jnp.int32)
    m = np.asarray(layers.attention_mask(seg, seg, causal=True))
    assert m.shape == (1, 1, 4, 4) and m.dtype == np.bool_
    np.testing.assert_array_equal(m[0, 0], np.tril(np.ones((4, 4), bool)))


def test_attention_mask_packed_segments_and_padding():
    seg = np.array([[1, 1, 2, 2, 2, 0]], np.int32)
    m = np.asarray(layers.attention_mask(jnp.asarray(seg), jnp.asarray(seg), causal=True))[0, 0]
    want = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0],  # padding sees nothing
        ],
        bool,
    )
    np.testing.assert_array_equal(m, want)
    # Bidirectional (encoder) variant: same segment, no causality; padding still isolated.
    mb = np.asarray(layers.attention_mask(jnp.asarray(seg), jnp.asarray(seg), causal=False))[0, 0]
    same = (seg[0][:, None] == seg[0][None, :]) & (seg[0][:, None] > 0)
    np.testing.assert_array_equal(mb, same)


def test_attention_mask_with_positions_matches_index_causality_within_segments():
    seg = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], np.int32)
    pos = np.array([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]], np.int32)
    by_pos = layers.attention_mask(jnp.asarray(seg), jnp.asarray(seg), jnp.asarray(pos), jnp.asarray(pos))
    by_index = layers.attention_mask(jnp.asarray(seg), jnp.asarray(seg))
    np.testing.assert_array_equal(np.asarray(by_pos), np.asarray(by_index))


def test_attention_mask_cross_attention_shapes():
    q_seg = jnp.array([[1, 1, 0]], jnp.int32)
    k_seg = jnp.array([[1, 1, 1, 0, 0]], jnp.int32)
    m = np.asarray(layers.attention_mask(q_seg, k_seg, causal=False))
    assert m.shape == (1, 1, 3, 5)
    np.testing.assert_array_equal(
        m[0, 0], np.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    )


# --------------------------------------------------------------------------------------------------
# dot_product_attention (GQA)
# --------------------------------------------------------------------------------------------------


def test_dot_product_attention_gqa_matches_per_head_numpy():
    rng = np.random.default_rng(3)
    b, t, nh, nk, d = 2, 6, 6, 2, 8
    q = rng.standard_normal((b, t, nh, d)).astype(np.float32)
    k = rng.standard_normal((b, t, nk, d)).astype(np.float32)
    v = rng.standard_normal((b, t, nk, d)).astype(np.float32)
    bias = rng.standard_normal((1, nh, t, t)).astype(np.float32)
    seg = np.array([[1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1]], np.int32)
    mask = layers.attention_mask(jnp.asarray(seg), jnp.asarray(seg))
    got = np.asarray(layers.dot_product_attention(*map(jnp.asarray, (q, k, v)), mask, 0.3, jnp.asarray(bias)))
    np_mask = np.asarray(mask)[:, 0]
    want = np.zeros((b, t, nh, d))
    for h in range(nh):
        j = h // (nh // nk)  # HF repeat_kv: consecutive query heads share a kv head
        s = np.einsum("bqd,bkd->bqk", q[:, :, h], k[:, :, j]).astype(np.float64) * 0.3 + bias[:, h]
        s = np.where(np_mask, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        want[:, :, h] = np.einsum("bqk,bkd->bqd", p / p.sum(-1, keepdims=True), v[:, :, j])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------------
# Norms
# --------------------------------------------------------------------------------------------------


def np_layer_norm(x, w, eps):
    mu = x.mean(-1, keepdims=True)
    return w * (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def test_cohere_layer_norm_matches_numpy():
    rng = np.random.default_rng(4)
    x = (3.0 + 2.0 * rng.standard_normal((2, 5, 32))).astype(np.float32)  # non-zero mean: centring matters
    w = rng.uniform(0.5, 1.5, 32).astype(np.float32)
    ln = layers.CohereLayerNorm(eps=1e-5)
    params = ln.init(jax.random.key(0), jnp.asarray(x))
    scale = jax.tree.leaves(params)[0]
    assert scale.shape == (32,) and scale.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(scale), np.ones(32, np.float32))  # init: ones, no bias param
    assert len(jax.tree.leaves(params)) == 1
    got = np.asarray(ln.apply({"params": {"scale": jnp.asarray(w)}}, jnp.asarray(x)))
    np.testing.assert_allclose(got, np_layer_norm(x.astype(np.float64), w, 1e-5), rtol=RTOL, atol=ATOL)


def test_cohere_layer_norm_eps_is_used():
    x = np.array([[[0.0, 1e-3, -1e-3, 0.0]]], np.float32)  # variance ~5e-7, comparable to eps
    w = np.ones(4, np.float32)
    got = np.asarray(
        layers.CohereLayerNorm(eps=1e-5).apply({"params": {"scale": jnp.asarray(w)}}, jnp.asarray(x))
    )
    np.testing.assert_allclose(got, np_layer_norm(x.astype(np.float64), w, 1e-5), rtol=RTOL, atol=ATOL)


def test_cohere_layer_norm_per_head_scale_statistics_over_head_dim():
    """qk-norm: scale [heads, head_dim], statistics over head_dim only (each head normalised alone)."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 3, 4, 8)) * rng.uniform(0.1, 5.0, (1, 1, 4, 1)) + 1.0).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (4, 8)).astype(np.float32)
    ln = layers.CohereLayerNorm(1e-5, ("heads", "head_dim"))
    assert jax.tree.leaves(ln.init(jax.random.key(0), jnp.asarray(x)))[0].shape == (4, 8)
    got = np.asarray(ln.apply({"params": {"scale": jnp.asarray(w)}}, jnp.asarray(x)))
    np.testing.assert_allclose(got, np_layer_norm(x.astype(np.float64), w, 1e-5), rtol=RTOL, atol=ATOL)


def test_cohere_layer_norm_bf16_in_bf16_out_with_fp32_statistics():
    rng = np.random.default_rng(6)
    x = (100.0 + rng.standard_normal((4, 64))).astype(np.float32)  # large mean: bf16 statistics would fail
    xb = jnp.asarray(x, jnp.bfloat16)
    w = jnp.ones(64, jnp.float32)
    y = layers.CohereLayerNorm().apply({"params": {"scale": w}}, xb)
    assert y.dtype == jnp.bfloat16
    want = np_layer_norm(np.asarray(xb.astype(jnp.float32), np.float64), 1.0, 1e-5)
    # Only the final cast to bf16 rounds (relative 2^-9), so the error is that of one rounding.
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), want, rtol=8e-3, atol=8e-3)


def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(7)
    x = (2.0 + rng.standard_normal((2, 5, 32))).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 32).astype(np.float32)
    norm = layers.RMSNorm(eps=1e-6)
    params = norm.init(jax.random.key(0), jnp.asarray(x))
    assert len(jax.tree.leaves(params)) == 1
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(params)[0]), np.ones(32, np.float32))
    got = np.asarray(norm.apply({"params": {"scale": jnp.asarray(w)}}, jnp.asarray(x)))
    x64 = x.astype(np.float64)
    want = w * x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6)  # no mean subtraction
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # Differs from a mean-centred LayerNorm on this non-zero-mean input.
    assert np.abs(got - np_layer_norm(x64, w, 1e-6)).max() > 0.1


def test_rms_norm_keeps_dtype():
    y = layers.RMSNorm().apply({"params": {"scale": jnp.ones(8)}}, jnp.ones((2, 8), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16


# --------------------------------------------------------------------------------------------------
# remat_policy
# --------------------------------------------------------------------------------------------------


def test_remat_policy_names():
    assert layers.remat_policy("none") is None
    assert layers.remat_policy("full") is jax.checkpoint_policies.nothing_saveable
    assert layers.remat_policy("dots_saveable") is jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    with pytest.raises(ValueError, match="remat"):
        layers.remat_policy("everything")


# layers.einsum: bf16 operands accumulate in fp32 (one rounding at the end), forward and backward. Reference:
# the float64 NumPy contraction of the same bf16 values. Bound: one bf16 rounding of the result (relative
# 2^-8) plus fp32 accumulation error, far below it at these sizes: |out - ref| <= 2^-8 |ref| + 1e-6.
EINSUM_CASES = [
    ("bte,ehd->bthd", (2, 5, 16), (16, 3, 4)),
    ("btf,fe->bte", (2, 5, 24), (24, 16)),
    ("bhgqk,bkhd->bqhgd", (2, 2, 2, 3, 7), (2, 7, 2, 4)),
]


def _within_one_bf16_rounding(out, ref):
    out = np.asarray(out, np.float64)
    np.testing.assert_array_less(np.abs(out - ref), 2.0**-8 * np.abs(ref) + 1e-6)


@pytest.mark.parametrize("spec,a_shape,b_shape", EINSUM_CASES)
def test_einsum_bf16_forward_and_gradients_match_float64_numpy(spec, a_shape, b_shape):
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal(a_shape), jnp.bfloat16)
    b = jnp.asarray(rng.standard_normal(b_shape), jnp.bfloat16)
    out = layers.einsum(spec, a, b)
    assert out.dtype == jnp.bfloat16 and out.shape == jnp.einsum(spec, a, b).shape
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    _within_one_bf16_rounding(out, np.einsum(spec, a64, b64))

    # d/da and d/db of sum(out * w) for a bf16 cotangent w: the transposed contractions of w.
    w = jnp.asarray(rng.standard_normal(out.shape), jnp.bfloat16)
    da, db = jax.grad(lambda a, b: jnp.sum(layers.einsum(spec, a, b) * w), argnums=(0, 1))(a, b)
    assert da.dtype == db.dtype == jnp.bfloat16
    ins, o = spec.split("->")
    sa, sb = ins.split(",")
    w64 = np.asarray(w, np.float64)
    _within_one_bf16_rounding(da, np.einsum(f"{o},{sb}->{sa}", w64, b64))
    _within_one_bf16_rounding(db, np.einsum(f"{sa},{o}->{sb}", a64, w64))


def test_einsum_fp32_is_jnp_einsum_and_gradients_agree():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((16, 3, 4)), jnp.float32)
    spec = "bte,ehd->bthd"
    np.testing.assert_allclose(layers.einsum(spec, a, b), jnp.einsum(spec, a, b), rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda a, b: jnp.sum(layers.einsum(spec, a, b) ** 2), argnums=(0, 1))(a, b)
    r = jax.grad(lambda a, b: jnp.sum(jnp.einsum(spec, a, b) ** 2), argnums=(0, 1))(a, b)
    for x, y in zip(g, r, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_einsum_refuses_a_sum_inside_one_operand_on_the_fp32_accumulating_path():
    a = jnp.ones((3, 4), jnp.bfloat16)
    b = jnp.ones((4, 5), jnp.bfloat16)
    with pytest.raises(ValueError, match="sums an index inside one operand"):
        jax.grad(lambda a, b: jnp.sum(layers.einsum("ab,bc->a", a, b)), argnums=(0, 1))(a, b)
