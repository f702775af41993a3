"""The Cohere decoder against an independent NumPy forward written from the equations in docs/models.md (the
architecture of transformers' `CohereForCausalLM`), not from the model code.

The reference below uses no aya_jax code: float64 NumPy, mean-centred LayerNorm without bias, parallel
residual, SwiGLU, grouped-query attention written per query head, interleaved (GPT-J) RoPE, optional per-head
qk-norm before RoPE, tied embeddings and `logit_scale`. Weights are random with a non-trivial scale (and norm
scales != 1) so that a wrong axis, a missing norm weight or a swapped rotation cannot hide behind
near-identity parameters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax.models import cohere

RTOL = 1e-5
ATOL = 1e-5
VOCAB = 97
# Small enough for CPU, large enough to exercise every axis:
# hidden 64, ffn 128, 2 layers, 4 heads, 2 kv heads.
TINY = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2)
KERNEL_STD = 0.2
EMBED_STD = 0.5


# --------------------------------------------------------------------------------------------------
# Independent NumPy reference (float64), written from docs/models.md (Cohere decoder) alone.
# --------------------------------------------------------------------------------------------------


def np_layer_norm(x, w, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return w * (x - mu) / np.sqrt(var + eps)


def np_rope(x, positions, theta, style="interleaved"):
    """x [b, t, heads, d]; positions [b, t]. 'interleaved' = GPT-J/Cohere, 'half' = Llama/NeoX."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
    ang = positions.astype(np.float64)[..., None] * inv_freq  # [b, t, d/2]
    if style == "interleaved":
        ang = np.repeat(ang, 2, axis=-1)  # f0 f0 f1 f1 ...
        rot = np.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)
    elif style == "half":
        ang = np.concatenate([ang, ang], axis=-1)  # f0 f1 ... f0 f1 ...
        rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    else:
        raise ValueError(style)
    ang = ang[:, :, None, :]
    return x * np.cos(ang) + rot * np.sin(ang)


def np_mask(segment_ids):
    """[b, q, k] bool: same non-padding segment and causal by index in the row."""
    t = segment_ids.shape[1]
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] > 0)
    causal = np.arange(t)[:, None] >= np.arange(t)[None, :]
    return same & causal[None]


def np_attention_per_head(q, k, v, mask, scale):
    """Explicit loop over query heads; query head i reads kv head i // (heads // kv_heads) (HF repeat_kv)."""
    b, t, nh, d = q.shape
    nk = k.shape[2]
    group = nh // nk
    out = np.zeros((b, t, nh, v.shape[-1]))
    for i in range(nh):
        j = i // group
        s = np.einsum("bqd,bkd->bqk", q[:, :, i], k[:, :, j]) * scale
        s = np.where(mask, s, -1e30)
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p = p / p.sum(-1, keepdims=True)
        out[:, :, i] = np.einsum("bqk,bkd->bqd", p, v[:, :, j])
    return out


def np_forward(p, cfg, tokens, positions=None, segment_ids=None, rope_style="interleaved"):
    """Logits [b, t, vocab] in float64. `p` holds stacked per-layer weights (leading layers axis)."""
    tokens = np.asarray(tokens)
    b, t = tokens.shape
    if positions is None:
        positions = np.broadcast_to(np.arange(t), (b, t))
    if segment_ids is None:
        segment_ids = np.ones((b, t), np.int64)
    mask = np_mask(np.asarray(segment_ids))
    positions = np.asarray(positions)
    emb = p["embedding"]
    x = emb[tokens]  # no input scaling
    lp = p["layers"]
    for layer in range(cfg.num_layers):
        a = lp["attn"]
        h = np_layer_norm(x, lp["input_norm"]["scale"][layer])
        q = np.einsum("bte,ehd->bthd", h, a["q_proj"][layer])
        k = np.einsum("bte,ehd->bthd", h, a["k_proj"][layer])
        v = np.einsum("bte,ehd->bthd", h, a["v_proj"][layer])
        if cfg.use_qk_norm:  # per-head weight, statistics over head_dim, before RoPE
            q = np_layer_norm(q, a["q_norm"]["scale"][layer])
            k = np_layer_norm(k, a["k_norm"]["scale"][layer])
        q = np_rope(q, positions, cfg.rope_theta, rope_style)
        k = np_rope(k, positions, cfg.rope_theta, rope_style)
        d = q.shape[-1]
        o = np_attention_per_head(q, k, v, mask, d**-0.5)
        attn = np.einsum("bthd,hde->bte", o, a["o_proj"][layer])
        m = lp["mlp"]
        g = np.einsum("bte,ef->btf", h, m["gate_proj"][layer])
        u = np.einsum("bte,ef->btf", h, m["up_proj"][layer])
        mlp = np.einsum("btf,fe->bte", g / (1.0 + np.exp(-g)) * u, m["down_proj"][layer])
        x = x + attn + mlp  # parallel residual, one norm per layer
    h = np_layer_norm(x, p["final_norm"]["scale"])
    return (h @ emb.T) * cfg.logit_scale


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def make_cfg(**overrides):
    return cohere.resolve("cohere-tiny", vocab_size=VOCAB, **{**TINY, **overrides})


def make_model(cfg, scan_layers=True, dtype=jnp.float32, remat="none"):
    return cohere.CohereLM(cfg, dtype=dtype, param_dtype=jnp.float32, remat=remat, scan_layers=scan_layers)


def random_params(cfg, seed=0):
    """Stacked (scan_layers=True) fp32 params with random values: kernels N(0, 0.2), embedding N(0, 0.5),
    every norm scale U(0.5, 1.5)."""
    params = abstract_params(cfg)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        std = EMBED_STD if "embedding" in name else KERNEL_STD
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, params)


def abstract_params(cfg, scan_layers=True, dtype=jnp.float32):
    """Unboxed parameter shapes/dtypes from `jax.eval_shape` (no allocation, no eager op-by-op init)."""
    model = make_model(cfg, scan_layers=scan_layers, dtype=dtype)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.int32))
    return nn.meta.unbox(shapes["params"])


def unstack(params, num_layers):
    """The same parameters in the scan_layers=False layout (layers_0, layers_1, ...)."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], params["layers"])
    return out


def to_f64(params):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


@functools.cache
def _jit_apply(cfg, scan_layers, dtype, remat):
    model = make_model(cfg, scan_layers=scan_layers, dtype=dtype, remat=remat)
    return jax.jit(
        lambda params, tokens, positions, segs: model.apply({"params": params}, tokens, positions, segs)
    )


def apply(
    cfg, params, tokens, positions=None, segment_ids=None, scan_layers=True, dtype=jnp.float32, remat="none"
):
    tokens = jnp.asarray(tokens, jnp.int32)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    fn = _jit_apply(cfg, scan_layers, dtype, remat)
    return np.asarray(
        fn(params, tokens, jnp.asarray(positions, jnp.int32), jnp.asarray(segment_ids, jnp.int32))
    )


def random_tokens(shape, seed=1):
    return np.random.default_rng(seed).integers(1, VOCAB, size=shape).astype(np.int32)


# --------------------------------------------------------------------------------------------------
# 1. Logits against the reference
# --------------------------------------------------------------------------------------------------

CONFIGS = {
    "gqa": dict(),
    "mha": dict(num_kv_heads=4),
    "gqa_qknorm": dict(use_qk_norm=True),
    "mha_qknorm_scale0.0625": dict(num_kv_heads=4, use_qk_norm=True, logit_scale=0.0625),
    "kv1_theta100": dict(num_kv_heads=1, rope_theta=100.0),
    "head_dim24": dict(head_dim=24),
    "head_dim24_qknorm": dict(head_dim=24, use_qk_norm=True, logit_scale=0.0625),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_numpy_reference(name):
    cfg = make_cfg(**CONFIGS[name])
    params = random_params(cfg, seed=list(CONFIGS).index(name))
    tokens = random_tokens((2, 12))
    got = apply(cfg, params, tokens)
    assert got.dtype == np.float32 and got.shape == (2, 12, VOCAB)
    want = np_forward(to_f64(params), cfg, tokens)
    # The test has power: logits are O(1), not ~0.
    assert np.abs(want).max() > 0.3
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_param_shapes_follow_the_documented_layout():
    cfg = make_cfg(use_qk_norm=True, head_dim=24)
    e, f, h, k, d, n = 64, 128, 4, 2, 24, 2
    p = random_params(cfg)
    shapes = jax.tree.map(lambda a: tuple(a.shape), p)
    assert shapes == {
        "embedding": (VOCAB, e),
        "final_norm": {"scale": (e,)},
        "layers": {
            "input_norm": {"scale": (n, e)},
            "attn": {
                "q_proj": (n, e, h, d),
                "k_proj": (n, e, k, d),
                "v_proj": (n, e, k, d),
                "o_proj": (n, h, d, e),
                "q_norm": {"scale": (n, h, d)},
                "k_norm": {"scale": (n, k, d)},
            },
            "mlp": {"gate_proj": (n, e, f), "up_proj": (n, e, f), "down_proj": (n, f, e)},
        },
    }


@pytest.mark.parametrize("name", ["gqa_qknorm", "head_dim24"])
def test_scan_and_unrolled_layers_agree(name):
    cfg = make_cfg(**CONFIGS[name])
    params = random_params(cfg, seed=3)
    tokens = random_tokens((2, 10), seed=4)
    scanned = apply(cfg, params, tokens, scan_layers=True)
    flat = unstack(params, cfg.num_layers)
    # The unrolled model's own init produces exactly this tree structure.
    ref_shapes = jax.tree.map(lambda a: a.shape, abstract_params(cfg, scan_layers=False))
    assert jax.tree.map(lambda a: a.shape, flat) == ref_shapes
    unrolled = apply(cfg, flat, tokens, scan_layers=False)
    np.testing.assert_allclose(unrolled, scanned, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(unrolled, np_forward(to_f64(params), cfg, tokens), rtol=RTOL, atol=ATOL)


def test_explicit_offset_positions_match_reference():
    """Positions far from 0 (large RoPE angles), passed explicitly."""
    cfg = make_cfg(use_qk_norm=True)
    params = random_params(cfg, seed=5)
    tokens = random_tokens((2, 8), seed=6)
    positions = np.stack([np.arange(8) + 37, np.arange(8) + 500])
    got = apply(cfg, params, tokens, positions=positions)
    np.testing.assert_allclose(
        got, np_forward(to_f64(params), cfg, tokens, positions=positions), rtol=RTOL, atol=ATOL
    )


# --------------------------------------------------------------------------------------------------
# 2. Causality
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 5, 11])
def test_causal_future_tokens_do_not_change_past_logits(t):
    cfg = make_cfg(use_qk_norm=True)
    params = random_params(cfg, seed=7)
    tokens = random_tokens((2, 12), seed=8)
    changed = tokens.copy()
    changed[:, t] = (changed[:, t] + 13) % (VOCAB - 1) + 1
    assert (changed[:, t] != tokens[:, t]).all()
    base, pert = apply(cfg, params, tokens), apply(cfg, params, changed)
    np.testing.assert_allclose(pert[:, :t], base[:, :t], rtol=RTOL, atol=ATOL)
    # ...while positions >= t do change (the perturbation is real).
    assert np.abs(pert[:, t:] - base[:, t:]).max(axis=-1).min() > 1e-3


# --------------------------------------------------------------------------------------------------
# 3. Packing
# --------------------------------------------------------------------------------------------------


def _packed_rows(a, b, length):
    """Row 0: [A | B | pad]; row 1: [B | pad]; row 2: [A | pad] (seqio layout)."""
    la, lb = len(a), len(b)
    tokens = np.zeros((3, length), np.int32)
    segs = np.zeros((3, length), np.int32)
    pos = np.zeros((3, length), np.int32)
    tokens[0, :la], tokens[0, la : la + lb] = a, b
    segs[0, :la], segs[0, la : la + lb] = 1, 2
    pos[0, :la], pos[0, la : la + lb] = np.arange(la), np.arange(lb)
    tokens[1, :lb], segs[1, :lb], pos[1, :lb] = b, 1, np.arange(lb)
    tokens[2, :la], segs[2, :la], pos[2, :la] = a, 1, np.arange(la)
    return tokens, pos, segs


@pytest.mark.parametrize("name", ["gqa", "gqa_qknorm"])
def test_packed_segments_equal_separate_rows(name):
    cfg = make_cfg(**CONFIGS[name])
    params = random_params(cfg, seed=9)
    rng = np.random.default_rng(10)
    a, b, length = rng.integers(1, VOCAB, 5), rng.integers(1, VOCAB, 4), 12
    tokens, pos, segs = _packed_rows(a, b, length)
    got = apply(cfg, params, tokens, pos, segs)
    la, lb = len(a), len(b)
    np.testing.assert_allclose(got[0, :la], got[2, :la], rtol=RTOL, atol=ATOL)  # A packed == A alone
    np.testing.assert_allclose(got[0, la : la + lb], got[1, :lb], rtol=RTOL, atol=ATOL)  # B packed == B alone
    # B alone in an unpadded row of its own length.
    alone = apply(cfg, params, b[None])
    np.testing.assert_allclose(got[0, la : la + lb], alone[0], rtol=RTOL, atol=ATOL)
    # And the packed row against the reference (non-padding positions).
    want = np_forward(to_f64(params), cfg, tokens, pos, segs)
    real = segs > 0
    np.testing.assert_allclose(got[real], want[real], rtol=RTOL, atol=ATOL)
    assert np.isfinite(got).all()  # padding rows (fully masked) stay finite


def test_no_attention_across_segments():
    cfg = make_cfg(use_qk_norm=True)
    params = random_params(cfg, seed=11)
    rng = np.random.default_rng(12)
    a, b = rng.integers(1, VOCAB, 5), rng.integers(1, VOCAB, 4)
    tokens, pos, segs = _packed_rows(a, b, 12)
    a2 = (a + 7) % (VOCAB - 1) + 1
    tokens2, _, _ = _packed_rows(a2, b, 12)
    # Padding tokens changed too: they must not leak into real positions either.
    tokens2[0, 9:] = rng.integers(1, VOCAB, 3)
    base, pert = apply(cfg, params, tokens, pos, segs), apply(cfg, params, tokens2, pos, segs)
    np.testing.assert_allclose(pert[0, 5:9], base[0, 5:9], rtol=RTOL, atol=ATOL)
    assert np.abs(pert[0, :5] - base[0, :5]).max() > 1e-3  # A itself did change


# --------------------------------------------------------------------------------------------------
# 4. GQA
# --------------------------------------------------------------------------------------------------


def np_forward_plain_mha(p, cfg, tokens):
    """A second attention formulation for kv_heads == heads: all heads at once, no grouping logic at all."""
    tokens = np.asarray(tokens)
    b, t = tokens.shape
    positions = np.broadcast_to(np.arange(t), (b, t))
    causal = np.tril(np.ones((t, t), bool))
    x = p["embedding"][tokens]
    lp = p["layers"]
    for layer in range(cfg.num_layers):
        a, m = lp["attn"], lp["mlp"]
        h = np_layer_norm(x, lp["input_norm"]["scale"][layer])
        q = np_rope(np.einsum("bte,ehd->bthd", h, a["q_proj"][layer]), positions, cfg.rope_theta)
        k = np_rope(np.einsum("bte,ehd->bthd", h, a["k_proj"][layer]), positions, cfg.rope_theta)
        v = np.einsum("bte,ehd->bthd", h, a["v_proj"][layer])
        s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
        s = np.where(causal, s, -np.inf)
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", pr, v)
        attn = np.einsum("bthd,hde->bte", o, a["o_proj"][layer])
        g = h @ m["gate_proj"][layer]
        mlp = (g / (1 + np.exp(-g)) * (h @ m["up_proj"][layer])) @ m["down_proj"][layer]
        x = x + attn + mlp
    return (np_layer_norm(x, p["final_norm"]["scale"]) @ p["embedding"].T) * cfg.logit_scale


def test_mha_equals_plain_multi_head_attention():
    cfg = make_cfg(num_kv_heads=4)
    params = random_params(cfg, seed=13)
    tokens = random_tokens((2, 12), seed=14)
    np.testing.assert_allclose(
        apply(cfg, params, tokens), np_forward_plain_mha(to_f64(params), cfg, tokens), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_equals_mha_with_repeated_kv_heads(kv_heads):
    """GQA(heads=4, kv) == MHA(heads=4) whose K/V weights are the kv heads repeat_interleave'd
    (HF repeat_kv: query head i reads kv head i // (heads // kv_heads))."""
    gqa_cfg = make_cfg(num_kv_heads=kv_heads, use_qk_norm=True)
    mha_cfg = make_cfg(num_kv_heads=4, use_qk_norm=True)
    params = random_params(gqa_cfg, seed=15)
    rep = 4 // kv_heads
    mha = jax.tree.map(lambda a: a, params)
    attn = dict(mha["layers"]["attn"])
    attn["k_proj"] = jnp.repeat(attn["k_proj"], rep, axis=2)  # [L, E, K, D] -> [L, E, H, D]
    attn["v_proj"] = jnp.repeat(attn["v_proj"], rep, axis=2)
    attn["k_norm"] = {"scale": jnp.repeat(attn["k_norm"]["scale"], rep, axis=1)}  # [L, K, D] -> [L, H, D]
    mha["layers"] = {**mha["layers"], "attn": attn}
    tokens = random_tokens((2, 12), seed=16)
    np.testing.assert_allclose(
        apply(gqa_cfg, params, tokens), apply(mha_cfg, mha, tokens), rtol=RTOL, atol=ATOL
    )


# --------------------------------------------------------------------------------------------------
# 5. Interleaved, not half-rotation, RoPE
# --------------------------------------------------------------------------------------------------


def test_rope_is_interleaved_not_half_rotation():
    cfg = make_cfg()
    params = to_f64(random_params(cfg, seed=17))
    tokens = random_tokens((2, 12), seed=18)
    got = apply(cfg, random_params(cfg, seed=17), tokens)
    inter = np_forward(params, cfg, tokens, rope_style="interleaved")
    half = np_forward(params, cfg, tokens, rope_style="half")
    np.testing.assert_allclose(got, inter, rtol=RTOL, atol=ATOL)
    # The two styles really are distinguishable on this input; the model is far from the half-rotation one.
    assert np.abs(half - inter).max() > 1e-2
    assert np.abs(got - half).max() > 1e-2
    # Position 0 is unrotated in both styles: the first token's logits agree.
    np.testing.assert_allclose(half[:, 0], inter[:, 0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# 6. Parameter counts
# --------------------------------------------------------------------------------------------------


def _abstract_count(cfg, scan_layers=True):
    model = cohere.CohereLM(cfg, scan_layers=scan_layers)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nn.meta.unbox(shapes)))


@pytest.mark.parametrize("name", ["aya-23-8b", "aya-23-35b", "aya-expanse-8b", "aya-expanse-32b"])
def test_param_count_matches_abstract_init(name):
    cfg = cohere.PRESETS[name]
    assert cohere.param_count(cfg) == _abstract_count(cfg)


def test_param_count_known_values():
    # aya-expanse-8b: 256000*4096 + 32*(4096 + 2*4096*4096 + 2*4096*1024 + 3*4096*14336) + 4096.
    assert cohere.param_count(cohere.PRESETS["aya-expanse-8b"]) == 8_028_033_024
    assert cohere.param_count(cohere.PRESETS["aya-23-8b"]) == 8_028_033_024  # same shapes, other logit_scale


@pytest.mark.parametrize("overrides", [dict(use_qk_norm=True), dict(head_dim=24, use_qk_norm=True)])
def test_param_count_tiny_variants(overrides):
    cfg = make_cfg(**overrides)
    n = cohere.param_count(cfg)
    assert n == _abstract_count(cfg) == _abstract_count(cfg, scan_layers=False)


# --------------------------------------------------------------------------------------------------
# 7. bf16 compute
# --------------------------------------------------------------------------------------------------


def test_bf16_compute_close_to_fp32_and_params_stay_fp32():
    cfg = make_cfg(use_qk_norm=True)
    dtypes = {a.dtype for a in jax.tree.leaves(abstract_params(cfg, dtype=jnp.bfloat16))}
    assert dtypes == {jnp.dtype(jnp.float32)}

    params = random_params(cfg, seed=19)
    tokens = random_tokens((2, 12), seed=20)
    f32 = apply(cfg, params, tokens)
    bf16 = apply(cfg, params, tokens, dtype=jnp.bfloat16)
    assert bf16.dtype == np.float32  # logits come back in fp32
    # bf16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3); activations and weights are rounded at each
    # of ~10 matmul/norm stages over 2 layers, so a few tenths of a percent to ~1% relative error is expected.
    # 5e-2 relative (Frobenius) bounds that with margin while catching real errors (e.g. a wrong cast order
    # or a bf16 softmax/LN blow-up, which give O(1) differences). Observed: ~5e-3.
    rel = np.linalg.norm(bf16 - f32) / np.linalg.norm(f32)
    assert rel < 5e-2, rel
    assert np.abs(bf16 - f32).max() < 5e-2 * np.abs(f32).max()


# --------------------------------------------------------------------------------------------------
# 8. Rematerialisation
# --------------------------------------------------------------------------------------------------


def _loss_and_grads(cfg, params, tokens, remat, scan_layers):
    model = make_model(cfg, scan_layers=scan_layers, remat=remat)

    def loss_fn(p):
        logits = model.apply({"params": p}, tokens[:, :-1])
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

    return jax.jit(jax.value_and_grad(loss_fn))(params)


@functools.cache
def _remat_case(scan_layers):
    cfg = make_cfg(use_qk_norm=True)
    params = random_params(cfg, seed=21)
    if not scan_layers:
        params = unstack(params, cfg.num_layers)
    tokens = jnp.asarray(random_tokens((2, 12), seed=22))
    return cfg, params, tokens, _loss_and_grads(cfg, params, tokens, "none", scan_layers)


@pytest.mark.parametrize(
    "scan_layers,remat", [(True, "full"), (True, "dots_saveable"), (False, "full"), (False, "dots_saveable")]
)
def test_remat_policies_give_same_loss_and_grads(scan_layers, remat):
    cfg, params, tokens, (base_loss, base_grads) = _remat_case(scan_layers)
    assert np.isfinite(base_loss) and float(base_loss) > 0
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(base_grads))
    loss, grads = _loss_and_grads(cfg, params, tokens, remat, scan_layers)
    np.testing.assert_allclose(loss, base_loss, rtol=RTOL, atol=ATOL)
    assert jax.tree.structure(grads) == jax.tree.structure(base_grads)
    for g, b in zip(jax.tree.leaves(grads), jax.tree.leaves(base_grads), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(b), rtol=RTOL, atol=ATOL)


def test_unknown_remat_policy_is_rejected():
    cfg = make_cfg()
    with pytest.raises(ValueError, match="remat"):
        make_model(cfg, remat="bogus").init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
