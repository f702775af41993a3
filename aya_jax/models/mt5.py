"""The mT5 (T5.1.1) encoder-decoder of Aya 101 (arXiv 2402.07827; mT5: arXiv 2010.11934, T5: arXiv 1910.10683),
in Flax linen: the architecture of transformers' `MT5ForConditionalGeneration` and t5x's T5.1.1 network.
Equations, the bucket formula and the presets' provenance: docs/models.md.

    encoder:  x = E[inputs]                               # no embedding scaling
              x += SelfAttn(RMSNorm(x), bias_enc)         # bidirectional, relative position bias
              x += FFN(RMSNorm(x))                        # FFN(h) = wo(gelu_tanh(wi_0 h) * wi_1 h)
              enc = RMSNorm(x)
    decoder:  y = E[decoder_inputs]
              y += CausalSelfAttn(RMSNorm(y), bias_dec)
              y += CrossAttn(RMSNorm(y), enc)             # no position bias
              y += FFN(RMSNorm(y))
              logits = RMSNorm(y) @ lm_head.T             # unscaled; lm_head is E when tied

RMSNorm has no mean and no bias (fp32 statistics, eps 1e-6); attention has no biases and *no* 1/sqrt(d_kv)
scaling (T5 folds it into the query initialiser). Relative position bias: `rel = key_pos - query_pos` falls
into one of 32 buckets (`relative_position_bucket`, T5's formula), each bucket holding one learned scalar
per head. Each stack has one table [buckets, heads]; the bias is gathered once per forward from the
positions and shared by every layer of the stack (with `scan_layers` the table sits outside the scanned
stack). Positions and segment ids follow seqio's packed layout: positions restart at 0 in every segment, so
the bias of a packed segment is exactly its bias alone; segment 0 is padding; queries see keys of their own
segment only, and cross-attention sees only encoder tokens of the decoder token's segment id.

Incremental decoding (aya_jax/sampling.py). `init_cache` makes a `DecodeCache` for a batch of encoded rows;
the first `decode_step` call passes the encoder output, from which every decoder layer computes its
cross-attention keys/values once (they are kept in the cache); each call writes the new tokens' self-attention
keys/values at slot `cache.index` (the same for every row: the decoder input of every row starts with
`decoder_start_id` at slot 0, so there is no decoder padding) and attends over [cache, new tokens] with one
softmax (`layers.cached_dot_product_attention` with the relative bias of every slot).

Not reproduced: T5's dropout on attention probabilities. `dropout_rate` applies hidden dropout (embeddings,
every residual branch, the FFN hidden layer, each stack's output — where transformers and t5x put it) only
when the module is built with `deterministic=False` and applied with a "dropout" rng; by default the model
is deterministic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from aya_jax.models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MT5Config:
    vocab_size: int = 250112
    d_model: int = 4096
    d_ff: int = 10240
    d_kv: int = 64
    num_heads: int = 64
    num_encoder_layers: int = 24
    num_decoder_layers: int = 24
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_eps: float = 1e-6
    dropout_rate: float = 0.0  # hidden dropout, applied only by a module built with deterministic=False
    # Every released mT5 / Aya 101 checkpoint has its own lm_head (False); True uses the embedding, unscaled
    # (what transformers >= 5 does for MT5: it forces tying and never rescales by d_model**-0.5).
    tie_word_embeddings: bool = False
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0
    initializer_factor: float = 1.0

    def replace(self, **kw: Any) -> MT5Config:
        return dataclasses.replace(self, **kw)


def _mt5(d_model: int, d_ff: int, heads: int, layers_: int, dropout_rate: float = 0.1) -> MT5Config:
    return MT5Config(250112, d_model, d_ff, 64, heads, layers_, layers_, dropout_rate=dropout_rate)


PRESETS: dict[str, MT5Config] = {
    # Aya 101 is mT5-XXL fine-tuned (arXiv 2402.07827; its config.json has mt5-xxl's numbers); the others are
    # the released google/mt5-* sizes (docs/models.md, mT5 presets). dropout_rate is their config.json's (0.1),
    # used only when the module is built with deterministic=False.
    "aya-101": _mt5(4096, 10240, 64, 24),
    "mt5-xxl": _mt5(4096, 10240, 64, 24),
    "mt5-xl": _mt5(2048, 5120, 32, 24),
    "mt5-large": _mt5(1024, 2816, 16, 24),
    "mt5-base": _mt5(768, 2048, 12, 12),
    "mt5-small": _mt5(512, 1024, 6, 8),
    # Small ones for CPU and tests; vocab_size 0 is a placeholder for the data pipeline's vocabulary size.
    "mt5-tiny": MT5Config(0, 64, 128, 16, 4, 2, 2),
    # The benchmark model: d_model 512, d_ff 1536, 8 heads of 64, 4 + 4 layers, vocab 32000.
    "mt5-bench": MT5Config(32000, 512, 1536, 64, 8, 4, 4),
}


def get_config(preset: str, **overrides: Any) -> MT5Config:
    """A preset by name with field overrides (e.g. vocab_size from the tokenizer); a placeholder vocab_size (0)
    must be overridden."""
    if preset not in PRESETS:
        raise ValueError(
            f"config.model.preset: unknown mT5 preset {preset!r} (known: {', '.join(sorted(PRESETS))})"
        )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(MT5Config)}
    if unknown:
        raise ValueError(f"config.model.overrides: unknown field(s) {sorted(unknown)} for MT5Config")
    cfg = PRESETS[preset].replace(**overrides)
    if cfg.vocab_size <= 0:
        raise ValueError(f"preset {preset!r} takes its vocab_size from the data; none was given")
    return cfg


def param_count(cfg: MT5Config) -> int:
    """Exact parameter count (a tied embedding counted once)."""
    e, f, h, d = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv
    attention = 4 * e * h * d  # q, k, v, o
    mlp = 3 * e * f  # wi_0, wi_1, wo
    encoder_layer = 2 * e + attention + mlp  # two norms
    decoder_layer = 3 * e + 2 * attention + mlp  # three norms, self- and cross-attention
    embeddings = cfg.vocab_size * e * (1 if cfg.tie_word_embeddings else 2)
    per_stack = cfg.relative_attention_num_buckets * h + e  # position bias table + final norm
    return (
        embeddings
        + cfg.num_encoder_layers * encoder_layer
        + cfg.num_decoder_layers * decoder_layer
        + 2 * per_stack
    )


def train_flops_per_token(cfg: MT5Config, enc_len: int, dec_len: int) -> float:
    """Model FLOPs (forward + backward = 3x forward) of one training row of `enc_len` encoder and `dec_len`
    decoder tokens, divided by `dec_len`: the cost per *target* token (multiply by dec_len for a row).

    Forward FLOPs of a row, counting 2 per multiply-add (PaLM appendix B style, no causal discount, norms and
    softmax ignored, the input lookup free):
      encoder   2 * enc_len * L_enc * (4 e hd + 3 e f)  +  4 * L_enc * hd * enc_len^2   (hd = heads * d_kv)
      decoder   2 * dec_len * L_dec * (4 e hd + 3 e f + 2 e hd)     (self-attention, FFN, cross q and o)
                + 2 * enc_len * L_dec * 2 e hd                      (cross k and v, over the encoder output)
                + 4 * L_dec * hd * (dec_len^2 + dec_len * enc_len)  (self and cross scores and values)
      lm_head   2 * dec_len * vocab * e
    """
    e, f, hd = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv
    le, ld = cfg.num_encoder_layers, cfg.num_decoder_layers
    encoder = 2 * enc_len * le * (4 * e * hd + 3 * e * f) + 4 * le * hd * enc_len**2
    decoder = (
        2 * dec_len * ld * (4 * e * hd + 3 * e * f + 2 * e * hd)
        + 2 * enc_len * ld * 2 * e * hd
        + 4 * ld * hd * (dec_len**2 + dec_len * enc_len)
    )
    head = 2 * dec_len * cfg.vocab_size * e
    return 3.0 * (encoder + decoder + head) / dec_len


def output_kernel(params: Any) -> Array:
    """The [vocab, d_model] output projection in a params tree: `lm_head` when untied, else the embedding.
    Fused losses use it with the `return_hidden=True` state: logits = hidden @ kernel.T (no logit scale)."""
    return params["lm_head"] if "lm_head" in params else params["embedding"]


# ============================================================================================================
# Relative position bias
# ============================================================================================================


def relative_position_bucket(
    relative_position: Array, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> Array:
    """T5's bucket of `relative_position = key_pos - query_pos` (int array, any shape); the formula, with
    worked examples, is in docs/models.md.

    Bidirectional (encoder): half the buckets for keys before or at the query, half (offset `num_buckets/2`)
    for keys after it, by |rel|. Causal (decoder): all buckets for keys before the query (`n = max(-rel, 0)`;
    later keys get bucket 0 and are masked anyway). Then distances below `max_exact = buckets/2` have a bucket
    each, and larger ones share logarithmically wider buckets, the last reached at `max_distance` and beyond.
    The logarithm is taken in fp32 like transformers' and t5x's."""
    rel = relative_position.astype(jnp.int32)
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(rel > 0, num_buckets, 0)
        n = jnp.abs(rel)
    else:
        offset = 0
        n = jnp.maximum(-rel, 0)
    max_exact = num_buckets // 2
    # log of at least max_exact: below it the exact branch is taken, and log(0) would be -inf.
    scaled = (
        jnp.log(jnp.maximum(n, max_exact).astype(jnp.float32) / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    )
    large = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
    return offset + jnp.where(n < max_exact, n, large)


def relative_bias(
    table: Array, query_positions: Array, key_positions: Array, bidirectional: bool, cfg: MT5Config
) -> Array:
    """The additive attention bias [batch or 1, heads, q_len, k_len] of positions [batch or 1, len] from a
    [buckets, heads] table."""
    rel = key_positions[:, None, :] - query_positions[:, :, None]  # [batch, q_len, k_len]
    buckets = relative_position_bucket(
        rel, bidirectional, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
    )
    return jnp.take(table, buckets, axis=0).transpose(0, 3, 1, 2)  # [batch, heads, q_len, k_len]


# ============================================================================================================
# Decoding cache
# ============================================================================================================

# Logical axes of the cache arrays, sharded like the activations they hold (see cohere.KV_CACHE_AXES).
# Self-attention [layers, batch, heads, max_len, d_kv]: heads before length, read by
# layers.cached_dot_product_attention without a transpose. Cross-attention [layers, batch, enc_len, heads, d_kv]:
# the layout layers.dot_product_attention takes its keys in, so they are never transposed either.
SELF_CACHE_AXES = (None, "act_batch", "act_heads", "act_len", None)
CROSS_CACHE_AXES = (None, "act_batch", "act_len", "act_heads", None)


@struct.dataclass
class DecodeCache:
    """Decoder state for incremental decoding.

    k, v:              [layers, batch, heads, max_len, d_kv] self-attention keys/values of the tokens so far
    encoder_mask:      [batch, enc_len] bool, the real (non-padding) encoder tokens
    index:             [] int32, the next slot to write
    start:             [batch] int32, each row's first decoder slot (its start token); 0 unless continuous
                       batching joined the row later (`insert_rows`). The position bias is relative, so a
                       row's slots need no renumbering
    cross_k, cross_v:  [layers, batch, enc_len, heads, d_kv] cross-attention keys/values of the encoder output;
                       None until the first `MT5.decode_step`, which computes them
    """

    k: Array
    v: Array
    encoder_mask: Array
    index: Array
    start: Array
    cross_k: Array | None = None
    cross_v: Array | None = None

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


def init_cache(cfg: MT5Config, encoder_mask: Array, max_len: int, dtype: Any = jnp.float32) -> DecodeCache:
    """An empty cache of `max_len` decoder slots for rows whose real encoder tokens are `encoder_mask`
    [batch, enc_len] (bool, or segment ids: > 0 is real)."""
    shape = (cfg.num_decoder_layers, encoder_mask.shape[0], cfg.num_heads, max_len, cfg.d_kv)
    # Two separate buffers: one shared zeros array would make donating the cache donate it twice.
    k, v = (layers.constrain(jnp.zeros(shape, dtype), SELF_CACHE_AXES) for _ in range(2))
    return DecodeCache(
        k=k,
        v=v,
        encoder_mask=encoder_mask > 0,
        index=jnp.zeros((), jnp.int32),
        start=jnp.zeros((encoder_mask.shape[0],), jnp.int32),
    )


def insert_rows(cache: DecodeCache, rows: Array, new: DecodeCache) -> DecodeCache:
    """Put the prefilled caches `new` (one per row of `rows` [n]; same encoder length, cross-attention filled)
    into `cache`, their decoder slots ending where `cache` writes next (as `cohere.insert_rows`). Needs
    index >= new.index."""
    at = cache.index - new.max_len

    def put(big: Array, small: Array) -> Array:
        placed = jax.lax.dynamic_update_slice(big[:, rows], small.astype(big.dtype), (0, 0, 0, at, 0))
        return layers.constrain(big.at[:, rows].set(placed), SELF_CACHE_AXES)

    def put_cross(big: Array, small: Array) -> Array:
        return layers.constrain(big.at[:, rows].set(small.astype(big.dtype)), CROSS_CACHE_AXES)

    return cache.replace(
        k=put(cache.k, new.k),
        v=put(cache.v, new.v),
        encoder_mask=cache.encoder_mask.at[rows].set(new.encoder_mask),
        start=cache.start.at[rows].set(at + new.start),
        cross_k=put_cross(cache.cross_k, new.cross_k),
        cross_v=put_cross(cache.cross_v, new.cross_v),
    )


def shift_cache(cache: DecodeCache, shift: Array) -> DecodeCache:
    """Move every row's decoder slots by `shift`, start and index with them (as `cohere.shift_cache`)."""

    def roll(buf: Array) -> Array:
        return layers.constrain(jnp.roll(buf, shift, axis=3), SELF_CACHE_AXES)

    return cache.replace(
        k=roll(cache.k), v=roll(cache.v), start=cache.start + shift, index=cache.index + shift
    )


# ============================================================================================================
# Layers
# ============================================================================================================


def _init(std: float, names: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _dropout(module: nn.Module, x: Array) -> Array:
    """Inverted dropout at `module.cfg.dropout_rate` unless the module is deterministic (functional, so setup-
    style modules can use it too; the "dropout" rng is split per layer by the scan)."""
    rate = module.cfg.dropout_rate
    if module.deterministic or rate == 0:
        return x
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class MT5Attention(nn.Module):
    """q/k/v/o projections of one attention block (self or cross); the caller picks the attention itself.
    Init as transformers' T5 (`initializer_factor` f): q N(0, f (d_model d_kv)^-1/2), k and v N(0, f d_model^-1/2),
    o N(0, f (heads d_kv)^-1/2) — the q scale stands in for the missing 1/sqrt(d_kv)."""

    cfg: MT5Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        cfg = self.cfg
        e, h, d, f = cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.initializer_factor
        in_axes, out_axes = ("embed", "heads", "head_dim"), ("heads", "head_dim", "embed")
        self.q_proj = self.param("q_proj", _init(f * (e * d) ** -0.5, in_axes), (e, h, d), self.param_dtype)
        self.k_proj = self.param("k_proj", _init(f * e**-0.5, in_axes), (e, h, d), self.param_dtype)
        self.v_proj = self.param("v_proj", _init(f * e**-0.5, in_axes), (e, h, d), self.param_dtype)
        self.o_proj = self.param("o_proj", _init(f * (h * d) ** -0.5, out_axes), (h, d, e), self.param_dtype)

    def _project(self, x: Array, kernel: Array) -> Array:
        out = layers.einsum("bte,ehd->bthd", x, kernel.astype(self.dtype))  # [batch, len, heads, d_kv]
        return layers.constrain(out, ("act_batch", "act_len", "act_heads", None))

    def query(self, x: Array) -> Array:
        return self._project(x, self.q_proj)

    def key_value(self, x: Array) -> tuple[Array, Array]:
        return self._project(x, self.k_proj), self._project(x, self.v_proj)

    def output(self, attended: Array) -> Array:
        """[batch, len, heads, d_kv] -> [batch, len, d_model]."""
        attended = layers.constrain(attended, ("act_batch", "act_len", "act_heads", None))
        return layers.einsum("bthd,hde->bte", attended, self.o_proj.astype(self.dtype))


class MT5MLP(nn.Module):
    """Gated-GELU FFN `wo(gelu_tanh(wi_0 h) * wi_1 h)` (our gate_proj, up_proj, down_proj); init N(0, f
    d_model^-1/2) for wi_0 / wi_1 and N(0, f d_ff^-1/2) for wo."""

    cfg: MT5Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    deterministic: bool = True

    @nn.compact
    def __call__(self, h: Array) -> Array:
        cfg = self.cfg
        e, f, s = cfg.d_model, cfg.d_ff, cfg.initializer_factor

        def kernel(name, shape, std, axes):
            return self.param(name, _init(std, axes), shape, self.param_dtype).astype(self.dtype)

        gate = layers.einsum("bte,ef->btf", h, kernel("gate_proj", (e, f), s * e**-0.5, ("embed", "mlp")))
        up = layers.einsum("bte,ef->btf", h, kernel("up_proj", (e, f), s * e**-0.5, ("embed", "mlp")))
        act = layers.constrain(nn.gelu(gate, approximate=True) * up, ("act_batch", "act_len", "act_mlp"))
        act = _dropout(self, act)
        return layers.einsum("btf,fe->bte", act, kernel("down_proj", (f, e), s * f**-0.5, ("mlp", "embed")))


def _norm(cfg: MT5Config, param_dtype: Any, name: str) -> layers.RMSNorm:
    return layers.RMSNorm(cfg.layer_norm_eps, param_dtype, name=name)


class MT5EncoderLayer(nn.Module):
    cfg: MT5Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: Array, bias: Array, mask: Array) -> tuple[Array, None]:
        """(x [batch, len, d_model], None) for nn.scan; `bias` [batch or 1, heads, len, len], `mask`
        [batch, 1, len, len] are the stack's, shared by every layer."""
        cfg = self.cfg
        x = layers.constrain(x, ("act_batch", "act_len", "act_embed"))
        attn = MT5Attention(cfg, self.dtype, self.param_dtype, name="self_attn")
        h = _norm(cfg, self.param_dtype, "self_attn_norm")(x)
        k, v = attn.key_value(h)
        out = layers.dot_product_attention(attn.query(h), k, v, mask, scale=1.0, bias=bias)
        x = x + _dropout(self, attn.output(out))
        h = _norm(cfg, self.param_dtype, "mlp_norm")(x)
        x = x + _dropout(self, MT5MLP(cfg, self.dtype, self.param_dtype, self.deterministic, name="mlp")(h))
        return x, None


LayerCache = tuple[Array, Array, Array | None, Array | None]  # (k, v, cross_k, cross_v) of one layer


class MT5DecoderLayer(nn.Module):
    cfg: MT5Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    deterministic: bool = True

    @nn.compact
    def __call__(
        self,
        y: Array,
        self_bias: Array | tuple[Array, Array],
        self_mask: Array | tuple[Array, Array],
        encoded: Array | None,
        cross_mask: Array,
        layer_cache: LayerCache | None = None,
    ) -> tuple[Array, tuple[Array, Array, Array | None, Array | None] | None]:
        """(y [batch, len, d_model], per-layer output) for nn.scan.

        Training (`layer_cache` None): `self_bias` [batch or 1, heads, len, len] and `self_mask`
        [batch, 1, len, len]; cross-attention keys/values come from `encoded` [batch, enc_len, d_model].
        Decoding: `layer_cache` is this layer's slice of the `DecodeCache`; `self_bias` and `self_mask` are pairs
        (over the cache slots, over the new tokens). When its cross_k/cross_v are None (the first call) they are
        computed from `encoded`. The per-layer output is then (k, v) of the new tokens [batch, heads, len, d_kv]
        and the cross keys/values computed by this call (None when read from the cache)."""
        cfg = self.cfg
        y = layers.constrain(y, ("act_batch", "act_len", "act_embed"))
        self_attn = MT5Attention(cfg, self.dtype, self.param_dtype, name="self_attn")
        cross_attn = MT5Attention(cfg, self.dtype, self.param_dtype, name="cross_attn")

        h = _norm(cfg, self.param_dtype, "self_attn_norm")(y)
        q = self_attn.query(h)
        k, v = self_attn.key_value(h)
        if layer_cache is None:
            out = layers.dot_product_attention(q, k, v, self_mask, scale=1.0, bias=self_bias)
        else:
            k_cache, v_cache, cross_k, cross_v = layer_cache
            (cache_bias, new_bias), (cache_mask, new_mask) = self_bias, self_mask
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [batch, heads, len, d_kv]
            # In the cache's dtype (see cohere.CohereAttention): no per-step conversion of the whole cache.
            wide = k_cache.dtype
            out = layers.cached_dot_product_attention(
                q.astype(wide),
                k_cache,
                v_cache,
                cache_mask,
                k.astype(wide),
                v.astype(wide),
                new_mask,
                1.0,
                cache_bias=cache_bias,
                new_bias=new_bias,
            ).astype(self.dtype)
        y = y + _dropout(self, self_attn.output(out))

        h = _norm(cfg, self.param_dtype, "cross_attn_norm")(y)
        computed = layer_cache is None or layer_cache[2] is None
        if computed:
            ck, cv = cross_attn.key_value(encoded)  # [batch, enc_len, heads, d_kv]
        else:
            ck, cv = layer_cache[2], layer_cache[3]
        out = layers.dot_product_attention(
            cross_attn.query(h).astype(ck.dtype), ck, cv, cross_mask, scale=1.0
        )
        out = out.astype(self.dtype)
        y = y + _dropout(self, cross_attn.output(out))

        h = _norm(cfg, self.param_dtype, "mlp_norm")(y)
        y = y + _dropout(self, MT5MLP(cfg, self.dtype, self.param_dtype, self.deterministic, name="mlp")(h))
        if layer_cache is None:
            return y, None
        return y, (k, v, ck if computed else None, cv if computed else None)


# ============================================================================================================
# Stacks
# ============================================================================================================


def _layer_stack(module: nn.Module, layer_cls: type, length: int, in_axes: tuple) -> Any:
    """`length` layers: one nn.scan'd module (params stacked on a leading `layers` axis) or a list."""
    policy = layers.remat_policy(module.remat)
    if module.remat != "none":
        layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not module.scan_layers)
    args = (module.cfg, module.dtype, module.param_dtype, module.deterministic)
    if module.scan_layers:
        return nn.scan(
            layer_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=in_axes,
            length=length,
            unroll=min(module.scan_unroll, length),
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(*args, name="layers")
    return [layer_cls(*args, name=f"layers_{i}") for i in range(length)]


def _bias_table(module: nn.Module) -> Array:
    cfg = module.cfg
    return module.param(
        "relative_attention_bias",
        # The bucket axis is tiny (32) and never sharded: no logical name.
        _init(cfg.initializer_factor * cfg.d_model**-0.5, (None, "heads")),
        (cfg.relative_attention_num_buckets, cfg.num_heads),
        module.param_dtype,
    )


def _constrain_bias(bias: Array) -> Array:
    if bias.shape[0] == 1:  # one bias for the whole batch (unpacked rows)
        return layers.constrain(bias, (None, "act_heads", None, None))
    return layers.constrain(bias, ("act_batch", "act_heads", None, None))


class MT5Encoder(nn.Module):
    cfg: MT5Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"
    scan_layers: bool = True
    deterministic: bool = True
    scan_unroll: int = 1

    def setup(self) -> None:
        self.relative_attention_bias = _bias_table(self)
        self.layers = _layer_stack(
            self, MT5EncoderLayer, self.cfg.num_encoder_layers, (nn.broadcast, nn.broadcast)
        )
        self.final_norm = layers.RMSNorm(self.cfg.layer_norm_eps, self.param_dtype)

    def __call__(self, x: Array, positions: Array, segment_ids: Array) -> Array:
        """Embedded tokens [batch, len, d_model], positions [batch or 1, len], segment ids [batch, len] ->
        the encoder output [batch, len, d_model] (after the final norm)."""
        bias = relative_bias(self.relative_attention_bias, positions, positions, True, self.cfg)
        bias = _constrain_bias(bias.astype(self.dtype))
        mask = layers.attention_mask(segment_ids, segment_ids, causal=False)  # [batch, 1, len, len]
        if self.scan_layers:
            x, _ = self.layers(x, bias, mask)
        else:
            for layer in self.layers:
                x, _ = layer(x, bias, mask)
        return _dropout(self, self.final_norm(x))


class MT5Decoder(nn.Module):
    cfg: MT5Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"
    scan_layers: bool = True
    deterministic: bool = True
    scan_unroll: int = 1

    def setup(self) -> None:
        self.relative_attention_bias = _bias_table(self)
        self.layers = _layer_stack(
            self,
            MT5DecoderLayer,
            self.cfg.num_decoder_layers,
            (nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0),
        )
        self.final_norm = layers.RMSNorm(self.cfg.layer_norm_eps, self.param_dtype)

    def _bias(self, query_positions: Array, key_positions: Array) -> Array:
        bias = relative_bias(self.relative_attention_bias, query_positions, key_positions, False, self.cfg)
        return _constrain_bias(bias.astype(self.dtype))

    def __call__(
        self, y: Array, positions: Array, segment_ids: Array, encoded: Array, encoder_segment_ids: Array
    ) -> Array:
        """Teacher-forced: embedded decoder inputs [batch, len, d_model] -> final-norm hidden states."""
        bias = self._bias(positions, positions)
        mask = layers.attention_mask(segment_ids, segment_ids, causal=True)  # [batch, 1, len, len]
        cross_mask = layers.attention_mask(segment_ids, encoder_segment_ids, causal=False)
        if self.scan_layers:
            y, _ = self.layers(y, bias, mask, encoded, cross_mask, None)
        else:
            for layer in self.layers:
                y, _ = layer(y, bias, mask, encoded, cross_mask)
        return _dropout(self, self.final_norm(y))

    def decode(self, y: Array, cache: DecodeCache, encoded: Array | None) -> tuple[Array, DecodeCache]:
        """Incremental: embedded new tokens [batch, len, d_model] at slots cache.index.. -> (final-norm hidden
        states, updated cache)."""
        length = y.shape[1]
        positions = (cache.index + jnp.arange(length, dtype=jnp.int32))[None]  # [1, len]
        slots = jnp.arange(cache.max_len, dtype=jnp.int32)[None]  # [1, max_len]
        biases = (self._bias(positions, slots), self._bias(positions, positions))
        visible = (slots < cache.index) & (slots >= cache.start[:, None])  # [batch, max_len]
        cache_mask = jnp.broadcast_to(visible[:, None, None, :], (y.shape[0], 1, length, cache.max_len))
        new_mask = (positions[0][:, None] >= positions[0][None, :])[None, None]  # [1, 1, len, len]
        cross_mask = cache.encoder_mask[:, None, None, :]  # [batch, 1, 1, enc_len]
        if self.scan_layers:
            y, (k_new, v_new, ck, cv) = self.layers(
                y,
                biases,
                (cache_mask, new_mask),
                encoded,
                cross_mask,
                (cache.k, cache.v, cache.cross_k, cache.cross_v),
            )
        else:
            outs = []
            for i, layer in enumerate(self.layers):
                crossed = (None, None) if cache.cross_k is None else (cache.cross_k[i], cache.cross_v[i])
                y, out = layer(
                    y, biases, (cache_mask, new_mask), encoded, cross_mask, (cache.k[i], cache.v[i], *crossed)
                )
                outs.append(out)
            k_new, v_new = (jnp.stack([o[j] for o in outs]) for j in range(2))
            ck, cv = (
                (None, None)
                if cache.cross_k is not None
                else (jnp.stack([o[j] for o in outs]) for j in (2, 3))
            )
        # k_new, v_new: [layers, batch, heads, len, d_kv], written at slot `index` of every row.
        at = (0, 0, 0, cache.index, 0)
        k = layers.constrain(
            jax.lax.dynamic_update_slice(cache.k, k_new.astype(cache.k.dtype), at), SELF_CACHE_AXES
        )
        v = layers.constrain(
            jax.lax.dynamic_update_slice(cache.v, v_new.astype(cache.v.dtype), at), SELF_CACHE_AXES
        )
        cache = cache.replace(k=k, v=v, index=cache.index + length)
        if ck is not None:
            cache = cache.replace(
                cross_k=layers.constrain(ck.astype(cache.k.dtype), CROSS_CACHE_AXES),
                cross_v=layers.constrain(cv.astype(cache.k.dtype), CROSS_CACHE_AXES),
            )
        return self.final_norm(y), cache


# ============================================================================================================
# The model
# ============================================================================================================


class MT5(nn.Module):
    """mT5 encoder-decoder. `__call__(encoder_input_tokens, decoder_input_tokens, ...)` -> fp32 logits
    [batch, dec_len, vocab] (teacher forcing; decoder inputs are the targets shifted right behind
    `decoder_start_id`), or with `return_hidden=True` the decoder's final-norm hidden states
    [batch, dec_len, d_model] (fused losses: logits = hidden @ output_kernel(params).T).

    Segment ids (seqio layout: 0 is padding; several ids in one row are packed examples) and positions
    (restarting at 0 per segment) describe each side. Without encoder segment ids, encoder padding is
    `token == pad_id`; without decoder segment ids every decoder token is real (the decoder input starts with
    decoder_start_id, which equals pad_id in mT5, so padding cannot be read off the tokens) — right padding
    there only affects the padded positions. Without positions they count from 0.

    `encode` / `decode` split the two halves; `decode_step` is the cached incremental decoder (module
    docstring). Parameters: `embedding` [vocab, d_model] (HF `shared`), `lm_head` [vocab, d_model] when untied,
    and `encoder` / `decoder` stacks with their `relative_attention_bias` [buckets, heads], `layers` and
    `final_norm`.
    """

    cfg: MT5Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"
    scan_layers: bool = True
    deterministic: bool = True  # False: apply cfg.dropout_rate (needs a "dropout" rng)
    scan_unroll: int = 1  # layers per iteration of each stack's scan loop (nn.scan's unroll)

    def setup(self) -> None:
        cfg = self.cfg
        std = cfg.initializer_factor  # shared embedding N(0, factor), as transformers and t5x
        shape = (cfg.vocab_size, cfg.d_model)
        self.embedding = self.param("embedding", _init(std, ("vocab", "embed")), shape, self.param_dtype)
        # The untied lm_head: N(0, factor / sqrt(d_model)) as t5x's fan-in init of its logits layer, so that a
        # new model starts near the uniform distribution (loss ~ log(vocab)); transformers' N(0, factor) starts
        # with logits of std sqrt(d_model) (loss several times log(vocab)). Imported weights replace either.
        head_std = cfg.initializer_factor * cfg.d_model**-0.5
        stack_args = (cfg, self.dtype, self.param_dtype, self.remat, self.scan_layers, self.deterministic)
        self.encoder = MT5Encoder(*stack_args, scan_unroll=self.scan_unroll)
        self.decoder = MT5Decoder(*stack_args, scan_unroll=self.scan_unroll)
        if not cfg.tie_word_embeddings:
            # Same [vocab, d_model] layout as the embedding (and as Hugging Face's lm_head.weight).
            self.lm_head = self.param("lm_head", _init(head_std, ("vocab", "embed")), shape, self.param_dtype)

    def _embed(self, tokens: Array) -> Array:
        x = jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)  # [batch, len, d_model]
        return _dropout(self, layers.constrain(x, ("act_batch", "act_len", "act_embed")))

    def _logits(self, h: Array) -> Array:
        head = self.embedding if self.cfg.tie_word_embeddings else self.lm_head
        logits = jnp.einsum("bte,ve->btv", h, head.astype(self.dtype), preferred_element_type=jnp.float32)
        return layers.constrain(logits, ("act_batch", "act_len", "act_vocab"))

    def encoder_segments(self, encoder_input_tokens: Array) -> Array:
        """Segment ids [batch, len] of unpacked encoder rows: 1 for real tokens, 0 for `pad_id`."""
        return (encoder_input_tokens != self.cfg.pad_id).astype(jnp.int32)

    def encode(
        self,
        encoder_input_tokens: Array,
        encoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
    ) -> Array:
        """Encoder tokens [batch, enc_len] -> encoder output [batch, enc_len, d_model]."""
        if encoder_segment_ids is None:
            encoder_segment_ids = self.encoder_segments(encoder_input_tokens)
        if encoder_positions is None:
            encoder_positions = jnp.arange(encoder_input_tokens.shape[1], dtype=jnp.int32)[None]
        return self.encoder(self._embed(encoder_input_tokens), encoder_positions, encoder_segment_ids)

    def decode(
        self,
        decoder_input_tokens: Array,
        encoded: Array,
        encoder_segment_ids: Array,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        *,
        return_hidden: bool = False,
    ) -> Array:
        """Teacher-forced decoder over `encoded` [batch, enc_len, d_model] whose segment ids are
        `encoder_segment_ids` [batch, enc_len] -> logits [batch, dec_len, vocab] (or hidden states)."""
        batch, length = decoder_input_tokens.shape
        if decoder_segment_ids is None:
            decoder_segment_ids = jnp.ones((batch, length), jnp.int32)
        if decoder_positions is None:
            decoder_positions = jnp.arange(length, dtype=jnp.int32)[None]
        h = self.decoder(
            self._embed(decoder_input_tokens),
            decoder_positions,
            decoder_segment_ids,
            encoded,
            encoder_segment_ids,
        )
        return h if return_hidden else self._logits(h)

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        decoder_positions: Array | None = None,
        *,
        return_hidden: bool = False,
    ) -> Array:
        if encoder_segment_ids is None:
            encoder_segment_ids = self.encoder_segments(encoder_input_tokens)
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions)
        return self.decode(
            decoder_input_tokens,
            encoded,
            encoder_segment_ids,
            decoder_segment_ids,
            decoder_positions,
            return_hidden=return_hidden,
        )

    def decode_step(
        self,
        decoder_input_tokens: Array,
        cache: DecodeCache,
        encoded: Array | None = None,
        *,
        return_hidden: bool = False,
    ) -> tuple[Array, DecodeCache]:
        """Incremental decoding: new decoder tokens [batch, len] at slots `cache.index`.. -> (logits
        [batch, len, vocab] or hidden states, updated cache). The first call on a fresh `init_cache` passes the
        encoder output `encoded` (its cross-attention keys/values go into the cache); later calls must not."""
        if (cache.cross_k is None) != (encoded is not None):
            raise ValueError(
                "MT5.decode_step: pass `encoded` on the first call on a fresh cache (to compute the "
                "cross-attention keys/values), and only then"
            )
        h, cache = self.decoder.decode(self._embed(decoder_input_tokens), cache, encoded)
        return (h if return_hidden else self._logits(h)), cache


# ------------------------------------------------------------------------------------------------------------
# Incremental decoding (the two halves of aya_jax/sampling.py's loop)
# ------------------------------------------------------------------------------------------------------------


def prefill(
    model: MT5, params: Any, tokens: Array, segment_ids: Array, max_new_tokens: int, cache_dtype: Any
) -> tuple[Array, DecodeCache]:
    """Encode the prompts [batch, S] once (real tokens where `segment_ids` > 0; padding may sit anywhere: the
    encoder is bidirectional and its position bias relative), then run the decoder on `decoder_start_id`,
    which also puts every layer's cross-attention keys/values in the cache. The self-attention cache holds the
    start token and the max_new_tokens chosen ones. Returns (logits of the first new token [batch, vocab],
    the cache)."""
    encoded = model.apply({"params": params}, tokens, segment_ids, method=MT5.encode)
    cache = init_cache(model.cfg, segment_ids, 1 + max_new_tokens, cache_dtype)
    start = jnp.full((tokens.shape[0], 1), model.cfg.decoder_start_id, jnp.int32)
    logits, cache = model.apply({"params": params}, start, cache, encoded, method=MT5.decode_step)
    return logits[:, -1], cache


def decode(model: MT5, params: Any, tokens: Array, cache: DecodeCache) -> tuple[Array, DecodeCache]:
    """New decoder tokens [batch, T] -> (logits of the token after the last of them [batch, vocab], cache)."""
    logits, cache = model.apply({"params": params}, tokens, cache, method=MT5.decode_step)
    return logits[:, -1], cache
