"""The mT5 encoder-decoder against an independent NumPy forward written from the equations in docs/models.md
(the architecture of transformers' `MT5ForConditionalGeneration` / t5x's T5.1.1), not from the model code.

The reference below uses no aya_jax code: float64 NumPy, RMSNorm without mean or bias, pre-norm blocks,
attention without 1/sqrt(d) scaling written per head, T5's relative position buckets written as a scalar
Python function (one table per stack, shared by its layers), gated-GELU (tanh) FFN, and an unscaled lm_head
(or the embedding when tied). Weights are random with a non-trivial scale (norm scales != 1, a bias table
large enough to move the softmax) so that a wrong axis or a missing term cannot hide.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax.models import mt5

RTOL = 1e-5
ATOL = 1e-5
VOCAB = 89
KERNEL_STD = 0.08
EMBED_STD = 0.2
HEAD_STD = 0.1  # untied lm_head: logits of a few units (fp32 error grows with their size)
BIAS_STD = 0.5

# d_model 64, d_ff 128, 4 heads of 16, 2 + 2 layers, untied.
TINY = dict(vocab_size=VOCAB)
CONFIGS = {
    "tiny": dict(),
    # h * d_kv != d_model, uneven stacks, tied embeddings.
    "heads6_dkv8_3x1_tied": dict(num_heads=6, d_kv=8, num_encoder_layers=3, num_decoder_layers=1,
                                 tie_word_embeddings=True),
    # Few buckets and a short max distance: the rows reach the logarithmic buckets and beyond max_distance.
    "buckets8_dist12": dict(relative_attention_num_buckets=8, relative_attention_max_distance=12),
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Independent NumPy reference (float64), written from docs/models.md (mT5 encoder-decoder) alone.
# --------------------------------------------------------------------------------------------------


def np_bucket(rel: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """The bucket formula of docs/models.md, one relative position at a time."""
    if bidirectional:
        nb = num_buckets // 2
        offset = nb if rel > 0 else 0
        n = abs(rel)
    else:
        nb = num_buckets
        offset = 0
        n = max(-rel, 0)
    max_exact = nb // 2
    if n < max_exact:
        return offset + n
    return offset + min(
        nb - 1,
        max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (nb - max_exact)),
    )


def np_rms_norm(x, w, eps=1e-6):
    return w * x / np.sqrt((x**2).mean(-1, keepdims=True) + eps)


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_bias(table, q_pos, k_pos, bidirectional, cfg):
    """[b, heads, q, k] from positions [b, len]."""
    b, tq = q_pos.shape
    tk = k_pos.shape[1]
    out = np.zeros((b, table.shape[1], tq, tk))
    for i in range(b):
        for q in range(tq):
            for k in range(tk):
                bucket = np_bucket(
                    int(k_pos[i, k] - q_pos[i, q]),
                    bidirectional,
                    cfg.relative_attention_num_buckets,
                    cfg.relative_attention_max_distance,
                )
                out[i, :, q, k] = table[bucket]
    return out


def np_attention(h_q, h_kv, w, mask, bias):
    """One attention block, per head, no scaling. mask [b, q, k] bool; bias [b, heads, q, k] or None."""
    q = np.einsum("bte,ehd->bthd", h_q, w["q_proj"])
    k = np.einsum("bte,ehd->bthd", h_kv, w["k_proj"])
    v = np.einsum("bte,ehd->bthd", h_kv, w["v_proj"])
    out = np.zeros(q.shape)
    for head in range(q.shape[2]):
        s = np.einsum("bqd,bkd->bqk", q[:, :, head], k[:, :, head])
        if bias is not None:
            s = s + bias[:, head]
        s = np.where(mask, s, -1e30)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, :, head] = np.einsum("bqk,bkd->bqd", p / p.sum(-1, keepdims=True), v[:, :, head])
    return np.einsum("bthd,hde->bte", out, w["o_proj"])


def np_ffn(h, w):
    return (np_gelu_tanh(h @ w["gate_proj"]) * (h @ w["up_proj"])) @ w["down_proj"]


def np_forward(p, cfg, enc_tokens, dec_tokens, enc_seg=None, dec_seg=None, enc_pos=None, dec_pos=None):
    """Logits [b, dec_len, vocab] in float64. `p` holds stacked per-layer weights (leading layers axis)."""
    enc_tokens, dec_tokens = np.asarray(enc_tokens), np.asarray(dec_tokens)
    b, s = enc_tokens.shape
    t = dec_tokens.shape[1]
    enc_seg = (enc_tokens != cfg.pad_id).astype(int) if enc_seg is None else np.asarray(enc_seg)
    dec_seg = np.ones((b, t), int) if dec_seg is None else np.asarray(dec_seg)
    enc_pos = np.broadcast_to(np.arange(s), (b, s)) if enc_pos is None else np.asarray(enc_pos)
    dec_pos = np.broadcast_to(np.arange(t), (b, t)) if dec_pos is None else np.asarray(dec_pos)

    def same_segment(qs, ks):
        return (qs[:, :, None] == ks[:, None, :]) & (qs[:, :, None] > 0) & (ks[:, None, :] > 0)

    def layer(tree, i):
        return jax.tree.map(lambda a: a[i], tree)

    emb = p["embedding"]
    enc = p["encoder"]
    x = emb[enc_tokens]
    bias = np_bias(enc["relative_attention_bias"], enc_pos, enc_pos, True, cfg)
    mask = same_segment(enc_seg, enc_seg)
    for i in range(cfg.num_encoder_layers):
        w = layer(enc["layers"], i)
        h = np_rms_norm(x, w["self_attn_norm"]["scale"])
        x = x + np_attention(h, h, w["self_attn"], mask, bias)
        x = x + np_ffn(np_rms_norm(x, w["mlp_norm"]["scale"]), w["mlp"])
    encoded = np_rms_norm(x, enc["final_norm"]["scale"])

    dec = p["decoder"]
    y = emb[dec_tokens]
    bias = np_bias(dec["relative_attention_bias"], dec_pos, dec_pos, False, cfg)
    causal = np.arange(t)[:, None] >= np.arange(t)[None, :]
    mask = same_segment(dec_seg, dec_seg) & causal[None]
    cross_mask = same_segment(dec_seg, enc_seg)
    for i in range(cfg.num_decoder_layers):
        w = layer(dec["layers"], i)
        h = np_rms_norm(y, w["self_attn_norm"]["scale"])
        y = y + np_attention(h, h, w["self_attn"], mask, bias)
        h = np_rms_norm(y, w["cross_attn_norm"]["scale"])
        y = y + np_attention(h, encoded, w["cross_attn"], cross_mask, None)  # no position bias
        y = y + np_ffn(np_rms_norm(y, w["mlp_norm"]["scale"]), w["mlp"])
    h = np_rms_norm(y, dec["final_norm"]["scale"])
    head = emb if cfg.tie_word_embeddings else p["lm_head"]
    return h @ head.T  # unscaled


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def make_cfg(**overrides):
    return mt5.get_config("mt5-tiny", **{**TINY, **overrides})


def make_model(cfg, scan_layers=True, dtype=jnp.float32, remat="none", deterministic=True):
    return mt5.MT5(
        cfg,
        dtype=dtype,
        param_dtype=jnp.float32,
        remat=remat,
        scan_layers=scan_layers,
        deterministic=deterministic,
    )


@functools.cache
def abstract_params(cfg, scan_layers=True, dtype=jnp.float32):
    model = make_model(cfg, scan_layers=scan_layers, dtype=dtype)
    tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)["params"])


def random_params(cfg, seed=0):
    """Stacked fp32 params: kernels N(0, 0.08), embedding N(0, 0.2), lm_head N(0, 0.1), bias tables N(0, 0.5),
    norm scales U(0.5, 1.5). Attention scores then spread over a few units (unscaled q.k plus the bias) and
    logits over several, where fp32 rounding stays well inside 1e-5 (larger scores sharpen every softmax and
    the fp32-vs-float64 gap grows with them)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        std = KERNEL_STD
        if "embedding" in name:
            std = EMBED_STD
        elif "lm_head" in name:
            std = HEAD_STD
        elif "relative_attention_bias" in name:
            std = BIAS_STD
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract_params(cfg))


def unstack(params, cfg):
    """The same parameters in the scan_layers=False layout (layers_0, layers_1, ...)."""
    out = dict(params)
    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        tree = {k: v for k, v in params[stack].items() if k != "layers"}
        for i in range(n):
            tree[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], params[stack]["layers"])
        out[stack] = tree
    return out


def to_f64(params):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


@functools.cache
def _jit_apply(cfg, scan_layers, dtype=jnp.float32, return_hidden=False):
    model = make_model(cfg, scan_layers=scan_layers, dtype=dtype)
    return jax.jit(lambda p, *args: model.apply({"params": p}, *args, return_hidden=return_hidden))


def apply(
    cfg,
    params,
    enc,
    dec,
    enc_seg=None,
    dec_seg=None,
    enc_pos=None,
    dec_pos=None,
    scan_layers=True,
    dtype=jnp.float32,
    return_hidden=False,
):
    """Always passes explicit segment ids and positions: one compilation per (config, shape), shared by the
    tests that use the same ones (the defaults are exercised by `model.apply` calls without them)."""
    enc, dec = np.asarray(enc, np.int32), np.asarray(dec, np.int32)
    enc_seg = (enc != cfg.pad_id).astype(np.int32) if enc_seg is None else enc_seg
    dec_seg = np.ones(dec.shape, np.int32) if dec_seg is None else dec_seg
    enc_pos = np.broadcast_to(np.arange(enc.shape[1]), enc.shape) if enc_pos is None else enc_pos
    dec_pos = np.broadcast_to(np.arange(dec.shape[1]), dec.shape) if dec_pos is None else dec_pos
    args = [jnp.asarray(a, jnp.int32) for a in (enc, dec, enc_seg, dec_seg, enc_pos, dec_pos)]
    return np.asarray(_jit_apply(cfg, scan_layers, dtype, return_hidden)(params, *args))


def random_batch(batch, enc_len, dec_len, seed=1, pad_from=None):
    """Encoder rows right-padded from `pad_from[b]` (pad_id 0); decoder rows start with 0 (decoder_start_id)."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, VOCAB, size=(batch, enc_len)).astype(np.int32)
    for b, n in enumerate(pad_from or []):
        enc[b, n:] = 0
    dec = rng.integers(2, VOCAB, size=(batch, dec_len)).astype(np.int32)
    dec[:, 0] = 0
    return enc, dec


# --------------------------------------------------------------------------------------------------
# 1. Relative position buckets
# --------------------------------------------------------------------------------------------------

# rel = key_pos - query_pos -> bucket, worked out by hand from the formula in docs/models.md (32 buckets, max
# distance 128).
# Bidirectional: 16 buckets per direction, exact below 8, log-spaced up to 128, the last from 128 on.
HAND_BIDIRECTIONAL = {
    0: 0,
    -1: 1,
    -7: 7,
    -8: 8,
    -15: 9,
    -16: 10,
    -31: 11,
    -32: 12,
    -64: 14,
    -127: 15,
    -128: 15,
    -1000: 15,
    1: 17,
    7: 23,
    8: 24,
    16: 26,
    127: 31,
    128: 31,
    500: 31,
}
# Causal: 32 buckets for keys at or before the query (exact below 16); later keys share bucket 0.
HAND_CAUSAL = {5: 0, 0: 0, -1: 1, -15: 15, -16: 16, -20: 17, -32: 21, -64: 26, -100: 30, -127: 31,
               -128: 31, -5000: 31}  # fmt: skip


@pytest.mark.parametrize("bidirectional,table", [(True, HAND_BIDIRECTIONAL), (False, HAND_CAUSAL)])
def test_relative_position_bucket_matches_hand_table(bidirectional, table):
    rel = jnp.asarray(list(table), jnp.int32)
    got = np.asarray(mt5.relative_position_bucket(rel, bidirectional, 32, 128))
    np.testing.assert_array_equal(got, list(table.values()))


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 12), (16, 40)])
def test_relative_position_bucket_matches_reference_function_on_a_range(num_buckets, max_distance):
    rel = np.arange(-300, 301)
    for bidirectional in (True, False):
        got = np.asarray(
            mt5.relative_position_bucket(jnp.asarray(rel), bidirectional, num_buckets, max_distance)
        )
        want = [np_bucket(int(r), bidirectional, num_buckets, max_distance) for r in rel]
        np.testing.assert_array_equal(got, want)
        assert got.min() == 0 and got.max() == num_buckets - 1


# --------------------------------------------------------------------------------------------------
# 2. Logits against the reference
# --------------------------------------------------------------------------------------------------


SHAPE = (2, 9, 7, [9, 4])  # batch, encoder length, decoder length, real encoder tokens per row


@pytest.mark.parametrize(
    "name,shape", [(name, SHAPE) for name in CONFIGS] + [("tiny", (3, 14, 5, [14, 11, 6]))]
)
def test_logits_match_numpy_reference(name, shape):
    cfg = make_cfg(**CONFIGS[name])
    params = random_params(cfg, seed=list(CONFIGS).index(name))
    batch, enc_len, dec_len, lengths = shape
    enc, dec = random_batch(batch, enc_len, dec_len, seed=enc_len, pad_from=lengths)
    got = apply(cfg, params, enc, dec)
    assert got.dtype == np.float32 and got.shape == (batch, dec_len, VOCAB)
    want = np_forward(to_f64(params), cfg, enc, dec)
    assert np.abs(want).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_unrolled_layers_equal_scanned_and_reference():
    cfg = make_cfg(**CONFIGS["heads6_dkv8_3x1_tied"])
    params = random_params(cfg, seed=3)
    enc, dec = random_batch(*SHAPE[:3], seed=4, pad_from=SHAPE[3])
    flat = unstack(params, cfg)
    # The unrolled model's own init produces exactly this tree structure.
    assert jax.tree.map(lambda a: a.shape, flat) == jax.tree.map(
        lambda a: a.shape, abstract_params(cfg, scan_layers=False)
    )
    unrolled = apply(cfg, flat, enc, dec, scan_layers=False)
    np.testing.assert_allclose(unrolled, apply(cfg, params, enc, dec), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(unrolled, np_forward(to_f64(params), cfg, enc, dec), rtol=RTOL, atol=ATOL)


def test_param_shapes_follow_the_documented_layout():
    cfg = make_cfg(num_heads=6, d_kv=8)
    e, f, h, d, n = 64, 128, 6, 8, 2
    attention = {
        "q_proj": (n, e, h, d),
        "k_proj": (n, e, h, d),
        "v_proj": (n, e, h, d),
        "o_proj": (n, h, d, e),
    }
    mlp = {"gate_proj": (n, e, f), "up_proj": (n, e, f), "down_proj": (n, f, e)}
    shapes = jax.tree.map(lambda a: tuple(a.shape), abstract_params(cfg))
    assert shapes == {
        "embedding": (VOCAB, e),
        "lm_head": (VOCAB, e),
        "encoder": {
            "relative_attention_bias": (32, h),
            "final_norm": {"scale": (e,)},
            "layers": {"self_attn_norm": {"scale": (n, e)}, "self_attn": attention, "mlp_norm": {"scale": (n, e)},
                       "mlp": mlp},
        },
        "decoder": {
            "relative_attention_bias": (32, h),
            "final_norm": {"scale": (e,)},
            "layers": {"self_attn_norm": {"scale": (n, e)}, "self_attn": attention,
                       "cross_attn_norm": {"scale": (n, e)}, "cross_attn": attention,
                       "mlp_norm": {"scale": (n, e)}, "mlp": mlp},
        },
    }  # fmt: skip


def test_return_hidden_times_output_kernel_gives_the_logits():
    cfg = make_cfg()
    params = random_params(cfg, seed=5)
    enc, dec = random_batch(*SHAPE[:3], seed=6, pad_from=SHAPE[3])
    hidden = apply(cfg, params, enc, dec, return_hidden=True)
    assert hidden.shape == (2, 7, cfg.d_model)
    assert mt5.output_kernel(params) is params["lm_head"]
    logits = hidden @ np.asarray(params["lm_head"]).T
    np.testing.assert_allclose(logits, apply(cfg, params, enc, dec), rtol=RTOL, atol=ATOL)
    tied = random_params(make_cfg(tie_word_embeddings=True))
    assert "lm_head" not in tied and mt5.output_kernel(tied) is tied["embedding"]


# --------------------------------------------------------------------------------------------------
# 3. Masks: encoder padding, decoder causality, packing
# --------------------------------------------------------------------------------------------------


def test_encoder_padding_and_future_decoder_tokens_do_not_leak():
    cfg = make_cfg()
    params = random_params(cfg, seed=7)
    enc, dec = random_batch(*SHAPE[:3], seed=8, pad_from=[5, 9])
    base = apply(cfg, params, enc, dec)
    # Other tokens under the padding (segment ids kept): nothing changes.
    enc2 = enc.copy()
    enc2[0, 5:] = np.arange(4) + 30
    segs = (enc != 0).astype(np.int32)
    np.testing.assert_allclose(apply(cfg, params, enc2, dec, enc_seg=segs), base, rtol=RTOL, atol=ATOL)
    # A later decoder token changes only its own and later positions.
    dec2 = dec.copy()
    dec2[:, 5] = (dec2[:, 5] + 7) % (VOCAB - 2) + 2
    pert = apply(cfg, params, enc, dec2)
    np.testing.assert_allclose(pert[:, :5], base[:, :5], rtol=RTOL, atol=ATOL)
    assert np.abs(pert[:, 5:] - base[:, 5:]).max(axis=-1).min() > 1e-3


def _packed(enc_a, dec_a, enc_b, dec_b, enc_len, dec_len):
    """Row 0: [A | B | pad] on both sides; row 1: [B | pad]; row 2: [A | pad] (seqio layout)."""

    def side(a, b, length):
        tokens = np.zeros((3, length), np.int32)
        segs = np.zeros((3, length), np.int32)
        pos = np.zeros((3, length), np.int32)
        la, lb = len(a), len(b)
        tokens[0, :la], tokens[0, la : la + lb] = a, b
        segs[0, :la], segs[0, la : la + lb] = 1, 2
        pos[0, :la], pos[0, la : la + lb] = np.arange(la), np.arange(lb)
        tokens[1, :lb], segs[1, :lb], pos[1, :lb] = b, 1, np.arange(lb)
        tokens[2, :la], segs[2, :la], pos[2, :la] = a, 1, np.arange(la)
        return tokens, segs, pos

    return side(enc_a, enc_b, enc_len), side(dec_a, dec_b, dec_len)


def test_packed_segments_equal_separate_rows():
    """Few buckets and a short max distance: a position offset would change the bias (log buckets reached)."""
    cfg = make_cfg(**CONFIGS["buckets8_dist12"])
    params = random_params(cfg, seed=9)
    rng = np.random.default_rng(10)
    enc_a, enc_b = rng.integers(2, VOCAB, 9), rng.integers(2, VOCAB, 6)
    dec_a, dec_b = np.r_[0, rng.integers(2, VOCAB, 5)], np.r_[0, rng.integers(2, VOCAB, 4)]
    (enc, enc_seg, enc_pos), (dec, dec_seg, dec_pos) = _packed(enc_a, dec_a, enc_b, dec_b, 18, 13)
    got = apply(cfg, params, enc, dec, enc_seg, dec_seg, enc_pos, dec_pos)
    la, lb = len(dec_a), len(dec_b)
    np.testing.assert_allclose(got[0, :la], got[2, :la], rtol=RTOL, atol=ATOL)  # A packed == A alone
    np.testing.assert_allclose(got[0, la : la + lb], got[1, :lb], rtol=RTOL, atol=ATOL)  # B packed == B alone
    # A in a row of its own (positions from 0, nothing else in the row).
    alone = apply(cfg, params, enc_a[None], dec_a[None])
    np.testing.assert_allclose(got[0, :la], alone[0], rtol=RTOL, atol=ATOL)
    want = np_forward(to_f64(params), cfg, enc, dec, enc_seg, dec_seg, enc_pos, dec_pos)
    real = dec_seg > 0
    np.testing.assert_allclose(got[real], want[real], rtol=RTOL, atol=ATOL)
    assert np.isfinite(got).all()  # fully masked padding rows stay finite


# --------------------------------------------------------------------------------------------------
# 4. Cached decoding
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scan_layers", [True, False])
def test_cached_decoding_equals_the_full_forward(scan_layers):
    """A first call of 3 decoder tokens (which fills the cross-attention cache), then one token at a time:
    every position's logits equal the teacher-forced forward's."""
    cfg = make_cfg(**CONFIGS["heads6_dkv8_3x1_tied"]) if not scan_layers else make_cfg()
    params = random_params(cfg, seed=11)
    if not scan_layers:
        params = unstack(params, cfg)
    enc, dec = random_batch(*SHAPE[:3], seed=12, pad_from=[9, 4])
    full = apply(cfg, params, enc, dec, scan_layers=scan_layers)
    model = make_model(cfg, scan_layers=scan_layers)
    # Default encoder segment ids: padding is pad_id.
    encoded = jax.jit(functools.partial(model.apply, method=mt5.MT5.encode))(
        {"params": params}, jnp.asarray(enc)
    )
    cache = mt5.init_cache(cfg, jnp.asarray(enc != 0), max_len=8)
    step = jax.jit(lambda p, t, c, e=None: model.apply({"params": p}, t, c, e, method=mt5.MT5.decode_step))
    logits, cache = step(params, jnp.asarray(dec[:, :3]), cache, encoded)
    assert cache.cross_k.shape == (cfg.num_decoder_layers, 2, 9, cfg.num_heads, cfg.d_kv)
    got = [np.asarray(logits)]
    for t in range(3, 7):
        logits, cache = step(params, jnp.asarray(dec[:, t : t + 1]), cache)
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, rtol=RTOL, atol=ATOL)
    assert int(cache.index) == 7


def test_decode_step_requires_encoded_exactly_once():
    cfg = make_cfg()
    params = random_params(cfg)
    model = make_model(cfg)
    enc = jnp.ones((1, 4), jnp.int32)
    cache = mt5.init_cache(cfg, enc > 0, 4)
    with pytest.raises(ValueError, match="pass `encoded` on the first call"):
        model.apply({"params": params}, jnp.zeros((1, 1), jnp.int32), cache, method=mt5.MT5.decode_step)


# --------------------------------------------------------------------------------------------------
# 5. Parameter counts and FLOPs
# --------------------------------------------------------------------------------------------------


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", ["aya-101", "mt5-small", "mt5-bench"])
def test_param_count_matches_abstract_init(name):
    cfg = mt5.PRESETS[name]
    model = mt5.MT5(cfg)
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    assert mt5.param_count(cfg) == _count(
        nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens, tokens))
    )


def test_param_count_known_value_and_tiny_variants():
    # aya-101 / mT5-XXL: 2 x 250112 x 4096 (shared + lm_head) + 24 x (2 x 4096 + 4 x 4096^2 + 3 x 4096 x 10240)
    # + 24 x (3 x 4096 + 8 x 4096^2 + 3 x 4096 x 10240) + 2 x (32 x 64 + 4096) = 12.92 B ("13B").
    assert mt5.param_count(mt5.PRESETS["aya-101"]) == 12_921_057_280
    for name in CONFIGS:
        cfg = make_cfg(**CONFIGS[name])
        n = mt5.param_count(cfg)
        assert n == _count(abstract_params(cfg)) == _count(abstract_params(cfg, scan_layers=False))


def test_train_flops_per_token_counts_every_matmul():
    """An independent tally: 2 FLOPs per multiply-add of every matmul of one row's forward, x3 for training."""
    cfg = make_cfg(num_heads=6, d_kv=8, num_encoder_layers=3, num_decoder_layers=2)
    s, t = 24, 10
    e, f, hd, v = cfg.d_model, cfg.d_ff, 6 * 8, VOCAB
    matmuls = []  # (rows, contraction, columns) per layer
    for _ in range(3):  # encoder layer
        matmuls += [(s, e, hd)] * 3 + [(s, hd, e)]  # q, k, v, o
        matmuls += [(s, hd, s), (s, s, hd)]  # scores, values (all heads at once)
        matmuls += [(s, e, f)] * 2 + [(s, f, e)]
    for _ in range(2):  # decoder layer
        matmuls += [(t, e, hd)] * 3 + [(t, hd, e)] + [(t, hd, t), (t, t, hd)]
        matmuls += [(t, e, hd), (s, e, hd), (s, e, hd), (t, hd, e)] + [(t, hd, s), (t, s, hd)]
        matmuls += [(t, e, f)] * 2 + [(t, f, e)]
    matmuls.append((t, e, v))  # lm_head
    forward = sum(2 * a * b * c for a, b, c in matmuls)
    assert mt5.train_flops_per_token(cfg, s, t) == pytest.approx(3 * forward / t, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# 6. bf16, remat, dropout, config errors
# --------------------------------------------------------------------------------------------------


def test_bf16_compute_close_to_fp32_and_params_stay_fp32():
    cfg = make_cfg()
    assert {a.dtype for a in jax.tree.leaves(abstract_params(cfg, dtype=jnp.bfloat16))} == {
        jnp.dtype(jnp.float32)
    }
    params = random_params(cfg, seed=13)
    enc, dec = random_batch(*SHAPE[:3], seed=14, pad_from=SHAPE[3])
    f32 = apply(cfg, params, enc, dec)
    bf16 = apply(cfg, params, enc, dec, dtype=jnp.bfloat16)
    assert bf16.dtype == np.float32
    # bf16 keeps 8 significant bits; over ~20 rounded matmul/norm stages ~1% relative error is expected
    # (observed ~5e-3). A wrong cast (bf16 softmax or norm statistics) gives O(1) differences.
    assert np.linalg.norm(bf16 - f32) / np.linalg.norm(f32) < 5e-2


@pytest.mark.slow  # two gradient compilations (~20 s on 2 cores); the dropout test runs a remat forward
def test_remat_gives_the_same_loss_and_grads():
    cfg = make_cfg(num_encoder_layers=1, num_decoder_layers=1)
    params = random_params(cfg, seed=15)
    enc, dec = (jnp.asarray(a) for a in random_batch(2, 6, 5, seed=16, pad_from=[6, 4]))

    def loss_and_grads(remat):
        model = make_model(cfg, remat=remat)

        def loss_fn(p):
            logp = jax.nn.log_softmax(model.apply({"params": p}, enc, dec[:, :-1]), axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, dec[:, 1:, None], axis=-1))

        return jax.jit(jax.value_and_grad(loss_fn))(params)

    (base_loss, base_grads), (loss, grads) = loss_and_grads("none"), loss_and_grads("full")
    assert float(base_loss) > 0
    np.testing.assert_allclose(loss, base_loss, rtol=RTOL, atol=ATOL)
    for g, b in zip(jax.tree.leaves(grads), jax.tree.leaves(base_grads), strict=True):
        assert np.abs(np.asarray(b)).max() > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(b), rtol=RTOL, atol=ATOL)


def test_dropout_only_when_not_deterministic():
    cfg = make_cfg()
    params = random_params(cfg, seed=17)
    enc, dec = random_batch(*SHAPE[:3], seed=18, pad_from=SHAPE[3])
    base = apply(cfg, params, enc, dec)
    # Through remat and the scan, as in training: each layer draws its own dropout masks.
    model = make_model(cfg.replace(dropout_rate=0.3), deterministic=False, remat="full")
    run = jax.jit(lambda key: model.apply({"params": params}, enc, dec, rngs={"dropout": key}))
    a, b, c = (np.asarray(run(jax.random.key(k))) for k in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-2 and np.abs(a - base).max() > 1e-2


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown mT5 preset 'mt5-huge'"):
        mt5.get_config("mt5-huge")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['hidden_size'\]"):
        mt5.get_config("mt5-small", hidden_size=3)
    with pytest.raises(ValueError, match="takes its vocab_size from the data"):
        mt5.get_config("mt5-tiny")
    with pytest.raises(ValueError, match="remat"):
        model = make_model(make_cfg(), remat="bogus")
        model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
    assert mt5.get_config("aya-101") == mt5.get_config("mt5-xxl")
