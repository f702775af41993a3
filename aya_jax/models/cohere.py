"""The Cohere / Command-R decoder of Aya 23 (arXiv 2405.15032) and Aya Expanse (arXiv 2412.04261), in Flax
linen: the architecture of transformers' `CohereForCausalLM` (model_type "cohere"). The equations, and where
each preset's numbers come from, are written out in docs/models.md.

    h   = LayerNorm(x)                       # mean-centred, no bias, fp32
    x' = x + Attention(h) + SwiGLU(h)        # parallel residual: one norm per layer
    logits = (LayerNorm(x_L) @ E.T) * logit_scale   # tied embeddings, no input scaling

Attention is GQA without biases, optional per-head qk-norm before RoPE, and interleaved (GPT-J) RoPE.
Layers are stacked with `nn.scan` (parameters get a leading `layers` axis) so compile time does not grow with
depth; `scan_layers=False` unrolls them. `scan_unroll=n` keeps the stacked parameters and runs n layers per
iteration of the scan loop: on XLA:CPU each iteration slices the stacked weights and writes gradient slices,
and a fully unrolled scan trained the 8-layer benchmark model ~1.5x faster per step in bf16
(benchmarks/train_step.py, variant scan-unroll); compile time grows with n.

Incremental decoding (aya_jax/sampling.py) passes an explicit, functional `KVCache` and gets the updated one
back: `logits, cache = model.apply(v, tokens, cache=cache, last_logits_only=True)`. Rows are *left-padded*:
every row writes its new tokens at the same slot (`cache.index`), so the update is one dynamic_update_slice on
the length axis for the whole batch, and the last prompt token of every row sits at the same slot. Row `b`'s
RoPE position is `slot - cache.start[b]`; slots before `start[b]` are padding and are never attended to.

The cache holds one buffer per layer (not one stacked array), and each layer first writes its new keys/values
into its buffer, then attends over the whole buffer with one masked softmax. Decoding applies the layers one
by one (`decoding_view`: the scanned parameters split into per-layer ones, once, before the loop), so every
matmul reads a layer's weights and cache where they lie. Under `nn.scan` each step would slice the stacked
weights and caches into fresh buffers first: on XLA:CPU those copies (dynamic-slice feeding a library dot)
cost more than the attention itself (benchmarks/decode.py). Writing before reading keeps each update in place:
reading the old buffer and writing a new one in the same step made XLA copy every cache buffer every step.
A scanned model applied with a cache still works (the scan stacks the buffers), for tests and one-off calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from aya_jax.models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CohereConfig:
    vocab_size: int = 256000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int | None = None  # None: hidden_size // num_heads
    max_position_embeddings: int = 8192
    rope_theta: float = 10000.0
    logit_scale: float = 0.0625
    layer_norm_eps: float = 1e-5
    use_qk_norm: bool = False
    initializer_range: float = 0.02
    # False: a separate output projection `lm_head` [vocab, embed] (Hugging Face `tie_word_embeddings`); every
    # released Aya model ties them.
    tie_word_embeddings: bool = True
    pad_id: int = 0
    bos_id: int = 5
    eos_id: int = 255001

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def replace(self, **kw: Any) -> CohereConfig:
        return dataclasses.replace(self, **kw)


PRESETS: dict[str, CohereConfig] = {
    # The released models: the numbers of their Hugging Face config.json files (docs/models.md, Cohere presets).
    "aya-23-8b": CohereConfig(256000, 4096, 14336, 32, 32, 8, rope_theta=10000.0, logit_scale=0.0625),
    "aya-23-35b": CohereConfig(256000, 8192, 22528, 40, 64, 64, rope_theta=8000000.0, logit_scale=0.0625),
    "aya-expanse-8b": CohereConfig(256000, 4096, 14336, 32, 32, 8, rope_theta=10000.0, logit_scale=0.125),
    "aya-expanse-32b": CohereConfig(256000, 8192, 24576, 40, 64, 8, rope_theta=4000000.0, logit_scale=0.0625),
    # Small ones for CPU and tests; the data pipeline's vocabulary size replaces vocab_size at run time when
    # the preset's is the placeholder 0 (see `resolve`).
    "cohere-tiny": CohereConfig(
        0, 256, 768, 4, 4, 2, max_position_embeddings=2048, logit_scale=0.125, bos_id=-1, eos_id=1
    ),
    "cohere-small": CohereConfig(
        0, 512, 1536, 8, 8, 8, max_position_embeddings=2048, logit_scale=0.125, bos_id=-1, eos_id=1
    ),
    # The benchmark model of benchmarks/train_step.py: hidden 512, ffn 1536, 8 layers, 8 heads, vocab 32000.
    "cohere-bench": CohereConfig(
        32000, 512, 1536, 8, 8, 8, max_position_embeddings=2048, logit_scale=0.125, bos_id=-1, eos_id=1
    ),
}


def resolve(preset: str, vocab_size: int | None = None, **overrides: Any) -> CohereConfig:
    """A preset by name with overrides; a placeholder vocab (0) takes the data pipeline's `vocab_size`."""
    if preset not in PRESETS:
        raise ValueError(
            f"config.model.preset: unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})"
        )
    cfg = PRESETS[preset]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(CohereConfig)}
    if unknown:
        raise ValueError(f"config.model.overrides: unknown field(s) {sorted(unknown)} for CohereConfig")
    cfg = cfg.replace(**overrides)
    if cfg.vocab_size == 0:
        if not vocab_size:
            raise ValueError(f"preset {preset!r} takes its vocab size from the data; none was given")
        cfg = cfg.replace(vocab_size=vocab_size)
    return cfg


def param_count(cfg: CohereConfig) -> int:
    """Exact parameter count (tied embeddings counted once)."""
    e, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.dim_per_head
    h, k = cfg.num_heads, cfg.num_kv_heads
    per_layer = e + e * h * d + 2 * e * k * d + h * d * e + 3 * e * f
    if cfg.use_qk_norm:
        per_layer += h * d + k * d
    embeddings = cfg.vocab_size * e * (1 if cfg.tie_word_embeddings else 2)
    return embeddings + cfg.num_layers * per_layer + e


def train_flops_per_token(cfg: CohereConfig, seq_len: int) -> float:
    """Model FLOPs of one training token (forward + backward = 3x forward), PaLM-style (appendix B):
    6 x matmul parameters (the tied embedding counts once, as the output projection; the input lookup is
    free) plus 12 x layers x heads x head_dim x seq_len for attention scores and values (no causal discount)."""
    e, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.dim_per_head
    h, k = cfg.num_heads, cfg.num_kv_heads
    matmul_params = cfg.num_layers * (e * h * d + 2 * e * k * d + h * d * e + 3 * e * f) + cfg.vocab_size * e
    return 6.0 * matmul_params + 12.0 * cfg.num_layers * h * d * seq_len


# Logical axes of one layer's cache buffer [batch, kv_heads, max_len, head_dim]: sharded like the activations it
# holds, so `aya_jax.sharding` places it with the same rules table. Heads come before length so that attention
# contracts over trailing axes with no transpose of the cache (see layers.cached_dot_product_attention).
KV_CACHE_AXES = ("act_batch", "act_kv_heads", "act_len", None)


@struct.dataclass
class KVCache:
    """Keys (after RoPE) and values of every layer, for incremental decoding of left-padded rows.

    k, v:   one buffer per layer, each [batch, kv_heads, max_len, head_dim]
    start:  [batch] int32, the first real slot of each row (the slots before it hold left padding)
    index:  [] int32, the next slot to write; the same for every row
    """

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    start: Array
    index: Array

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


def init_cache(cfg: CohereConfig, start: Array, max_len: int, dtype: jnp.dtype = jnp.float32) -> KVCache:
    """An empty cache for rows whose real tokens begin at slot `start` [batch] (left padding before it)."""
    shape = (start.shape[0], cfg.num_kv_heads, max_len, cfg.dim_per_head)

    def buffers() -> tuple[Array, ...]:
        # Separate buffers: a shared zeros array would make donating the cache donate it several times.
        return tuple(layers.constrain(jnp.zeros(shape, dtype), KV_CACHE_AXES) for _ in range(cfg.num_layers))

    return KVCache(k=buffers(), v=buffers(), start=start.astype(jnp.int32), index=jnp.zeros((), jnp.int32))


def insert_rows(cache: KVCache, rows: Array, new: KVCache) -> KVCache:
    """Put the prefilled caches `new` (one per row of `rows` [n], `new.index` == its slot count P) into `cache`
    so that each prompt's slots end where `cache` writes next: slots [index - P, index) of row `rows[i]`, its
    start moved with it. The other rows are untouched; RoPE positions count from each row's start, so the
    keys stay valid wherever the slots sit. A row listed twice must bring the same cache twice (batch padding).
    Continuous batching (aya_jax/serving.py) joins requests to a running batch this way; needs index >= P."""
    at = cache.index - new.max_len

    def put(big: Array, small: Array) -> Array:
        placed = jax.lax.dynamic_update_slice(big[rows], small.astype(big.dtype), (0, 0, at, 0))
        return layers.constrain(big.at[rows].set(placed), KV_CACHE_AXES)

    return cache.replace(
        k=tuple(map(put, cache.k, new.k)),
        v=tuple(map(put, cache.v, new.v)),
        start=cache.start.at[rows].set(at + new.start),
    )


def shift_cache(cache: KVCache, shift: Array) -> KVCache:
    """Move every row's slots by `shift` (negative: towards slot 0), start and index with them: the slots that
    wrap around land outside every row's [start, index) window, so nothing visible changes. Frees room at
    the end of a long-running batch (or at the start, for a prompt longer than the index)."""

    def roll(buf: Array) -> Array:
        return layers.constrain(jnp.roll(buf, shift, axis=2), KV_CACHE_AXES)

    return cache.replace(
        k=tuple(map(roll, cache.k)),
        v=tuple(map(roll, cache.v)),
        start=cache.start + shift,
        index=cache.index + shift,
    )


def _decode_positions_and_mask(cache: KVCache, length: int) -> tuple[Array, Array]:
    """For `length` new tokens written at slot `cache.index`: RoPE positions [batch, length] and their mask over
    the cache after the write [batch, 1, length, max_len]: a query at slot q sees the real slots up to q."""
    slots = cache.index + jnp.arange(length, dtype=jnp.int32)  # [length]
    positions = jnp.maximum(slots[None, :] - cache.start[:, None], 0)  # [batch, length]
    key_slots = jnp.arange(cache.max_len, dtype=jnp.int32)
    mask = (key_slots[None, None, :] >= cache.start[:, None, None]) & (key_slots[None, :] <= slots[:, None])[
        None
    ]  # [batch, length, max_len]
    return positions, mask[:, None]


def decoding_view(model: CohereLM, params: Any) -> tuple[CohereLM, Any]:
    """The same model with its layers unrolled, and its parameters split per layer (`layers_0` ...), for
    decoding (module docstring). Inside jit the split costs one copy of the layer weights per call, outside
    the decode loop; an unrolled model is returned as it is."""
    if not model.scan_layers:
        return model, params
    params = nn.unbox(params)
    stacked = params["layers"]
    split = {f"layers_{i}": jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(model.cfg.num_layers)}
    rest = {name: value for name, value in params.items() if name != "layers"}
    return model.clone(scan_layers=False, remat="none"), rest | split


def output_kernel(params: Any) -> Array:
    """The [vocab, embed] output projection in a params tree: `lm_head` when untied, else the embedding.
    Fused losses use it with the `return_hidden=True` state: logits = (hidden @ kernel.T) * logit_scale."""
    return params["lm_head"] if "lm_head" in params else params["embedding"]


def _init(cfg: CohereConfig, names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), names)


class CohereAttention(nn.Module):
    cfg: CohereConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, h: Array, positions: Array, mask: Array, cache: tuple[Array, Array, Array] | None = None
    ) -> Array | tuple[Array, Array, Array]:
        """Training: (h, positions, mask) -> out. Decoding: `cache = (k_cache, v_cache, index)`, this layer's
        buffers [batch, kv_heads, max_len, head_dim] and the slot to write; `mask` [batch, 1, len, max_len] is
        then the new tokens' mask over the buffer after the write. Returns (out, k_cache, v_cache) with the new
        tokens' keys (after RoPE) and values written at `index`."""
        cfg = self.cfg
        e, d, nh, nk = cfg.hidden_size, cfg.dim_per_head, cfg.num_heads, cfg.num_kv_heads

        def kernel(name, shape, axes):
            return self.param(name, _init(cfg, axes), shape, self.param_dtype).astype(self.dtype)

        wq = kernel("q_proj", (e, nh, d), ("embed", "heads", "head_dim"))
        wk = kernel("k_proj", (e, nk, d), ("embed", "kv_heads", "head_dim"))
        wv = kernel("v_proj", (e, nk, d), ("embed", "kv_heads", "head_dim"))
        wo = kernel("o_proj", (nh, d, e), ("heads", "head_dim", "embed"))

        q = layers.einsum("bte,ehd->bthd", h, wq)  # [batch, len, heads, head_dim]
        k = layers.einsum("bte,ehd->bthd", h, wk)  # [batch, len, kv_heads, head_dim]
        v = layers.einsum("bte,ehd->bthd", h, wv)
        q = layers.constrain(q, ("act_batch", "act_len", "act_heads", None))
        k = layers.constrain(k, ("act_batch", "act_len", "act_kv_heads", None))
        v = layers.constrain(v, ("act_batch", "act_len", "act_kv_heads", None))
        if cfg.use_qk_norm:
            q = layers.CohereLayerNorm(
                cfg.layer_norm_eps, ("heads", "head_dim"), self.param_dtype, name="q_norm"
            )(q)
            k = layers.CohereLayerNorm(
                cfg.layer_norm_eps, ("kv_heads", "head_dim"), self.param_dtype, name="k_norm"
            )(k)
        q = layers.interleaved_rope(q, positions, cfg.rope_theta)
        k = layers.interleaved_rope(k, positions, cfg.rope_theta)
        if cache is None:  # training: the mask is causal by index
            out = layers.dot_product_attention(q, k, v, mask, scale=d**-0.5, causal_block=layers.CAUSAL_BLOCK)
        else:
            k_cache, v_cache, index = cache
            # [batch, kv_heads, len, head_dim], written before the read (module docstring)
            at = (0, 0, index, 0)
            k_cache = jax.lax.dynamic_update_slice(k_cache, k.transpose(0, 2, 1, 3).astype(k_cache.dtype), at)
            v_cache = jax.lax.dynamic_update_slice(v_cache, v.transpose(0, 2, 1, 3).astype(v_cache.dtype), at)
            k_cache = layers.constrain(k_cache, KV_CACHE_AXES)
            v_cache = layers.constrain(v_cache, KV_CACHE_AXES)
            # In the cache's dtype, which may be wider than the compute dtype (fp32 caches of bf16 models on
            # CPU, sampling.default_cache_dtype): converting a whole cache per step would cost more than reading it.
            out = layers.cached_dot_product_attention(
                q.astype(k_cache.dtype), k_cache, v_cache, mask, scale=d**-0.5
            ).astype(self.dtype)
        # out: [batch, len, heads, head_dim]
        out = layers.constrain(out, ("act_batch", "act_len", "act_heads", None))
        out = layers.einsum("bthd,hde->bte", out, wo)
        if cache is not None:
            return out, k_cache, v_cache
        return out


class CohereMLP(nn.Module):
    cfg: CohereConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array) -> Array:
        cfg = self.cfg
        e, f = cfg.hidden_size, cfg.intermediate_size

        def kernel(name, shape, axes):
            return self.param(name, _init(cfg, axes), shape, self.param_dtype).astype(self.dtype)

        gate = layers.einsum("bte,ef->btf", h, kernel("gate_proj", (e, f), ("embed", "mlp")))
        up = layers.einsum("bte,ef->btf", h, kernel("up_proj", (e, f), ("embed", "mlp")))
        act = layers.constrain(nn.silu(gate) * up, ("act_batch", "act_len", "act_mlp"))  # [batch, len, ffn]
        return layers.einsum("btf,fe->bte", act, kernel("down_proj", (f, e), ("mlp", "embed")))


class CohereDecoderLayer(nn.Module):
    cfg: CohereConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: Array,
        positions: Array,
        mask: Array,
        layer_cache: tuple[Array, Array] | None = None,
        index: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        """(x, per-layer output) for nn.scan. Decoding passes this layer's (k, v) cache buffers and the slot
        `index` to write (`mask` is then over the buffers); the per-layer output is the updated buffers."""
        cfg = self.cfg
        x = layers.constrain(x, ("act_batch", "act_len", "act_embed"))
        h = layers.CohereLayerNorm(cfg.layer_norm_eps, ("norm",), self.param_dtype, name="input_norm")(x)
        attention = CohereAttention(cfg, self.dtype, self.param_dtype, name="attn")
        mlp = CohereMLP(cfg, self.dtype, self.param_dtype, name="mlp")(h)
        if layer_cache is None:
            return x + attention(h, positions, mask) + mlp, None
        attn, k, v = attention(h, positions, mask, (*layer_cache, index))
        return x + attn + mlp, (k, v)


class CohereLM(nn.Module):
    """Cohere decoder language model. Call with tokens [batch, len]; returns fp32 logits [batch, len, vocab].

    `positions` and `segment_ids` describe packed rows (seqio layout: segment 0 is padding); without them the
    row is one causal sequence. `return_hidden=True` returns the final-norm hidden state [batch, len, embed]
    instead (reward heads). `last_logits_only=True` keeps only the last position ([batch, 1, ...]).

    Decoding: with `cache` (a `KVCache`, see the module docstring) the tokens [batch, len] are written at slot
    `cache.index` (positions and masks come from the cache; `positions`/`segment_ids` must be None) and the call
    returns (logits or hidden, updated cache).
    """

    cfg: CohereConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"
    scan_layers: bool = True
    scan_unroll: int = 1  # layers per iteration of the scan loop (nn.scan's unroll; see the module docstring)

    def setup(self) -> None:
        cfg = self.cfg
        self.embedding = self.param(
            "embedding", _init(cfg, ("vocab", "embed")), (cfg.vocab_size, cfg.hidden_size), self.param_dtype
        )
        layer_cls = CohereDecoderLayer
        policy = layers.remat_policy(self.remat)
        if self.remat != "none":
            layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not self.scan_layers)
        if self.scan_layers:
            self.layers = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast),
                length=cfg.num_layers,
                unroll=min(self.scan_unroll, cfg.num_layers),
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, self.dtype, self.param_dtype, name="layers")
        else:
            self.layers = [
                layer_cls(cfg, self.dtype, self.param_dtype, name=f"layers_{i}")
                for i in range(cfg.num_layers)
            ]
        self.final_norm = layers.CohereLayerNorm(cfg.layer_norm_eps, ("norm",), self.param_dtype)
        if not cfg.tie_word_embeddings:
            # Same [vocab, embed] layout as the embedding (and as Hugging Face's lm_head.weight).
            self.lm_head = self.param(
                "lm_head", _init(cfg, ("vocab", "embed")), (cfg.vocab_size, cfg.hidden_size), self.param_dtype
            )

    def __call__(
        self,
        tokens: Array,
        positions: Array | None = None,
        segment_ids: Array | None = None,
        *,
        return_hidden: bool = False,
        last_logits_only: bool = False,
        cache: KVCache | None = None,
    ) -> Array | tuple[Array, KVCache]:
        batch, length = tokens.shape
        if cache is not None:
            if positions is not None or segment_ids is not None:
                raise ValueError("CohereLM: with a cache, positions and the mask come from the cache")
            positions, mask = _decode_positions_and_mask(cache, length)
        else:
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
            if segment_ids is None:
                segment_ids = jnp.ones((batch, length), jnp.int32)
            mask = layers.attention_mask(segment_ids, segment_ids, causal=True)  # [batch, 1, len, len]

        x = jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)  # [batch, len, embed]
        x = layers.constrain(x, ("act_batch", "act_len", "act_embed"))
        if cache is None:
            if self.scan_layers:
                x, _ = self.layers(x, positions, mask, None, None)
            else:
                for layer in self.layers:
                    x, _ = layer(x, positions, mask)
        elif self.scan_layers:  # stacks the buffers for the scan: correct, but see `decoding_view`
            x, (k, v) = self.layers(x, positions, mask, (jnp.stack(cache.k), jnp.stack(cache.v)), cache.index)
            cache = cache.replace(k=tuple(k), v=tuple(v), index=cache.index + length)
        else:
            buffers = []
            for i, layer in enumerate(self.layers):
                x, kv = layer(x, positions, mask, (cache.k[i], cache.v[i]), cache.index)
                buffers.append(kv)
            k, v = zip(*buffers, strict=True)
            cache = cache.replace(k=tuple(k), v=tuple(v), index=cache.index + length)
        if last_logits_only:
            x = x[:, -1:]
        h = self.final_norm(x)
        if return_hidden:
            return h if cache is None else (h, cache)
        head = self.embedding if self.cfg.tie_word_embeddings else self.lm_head
        logits = jnp.einsum("bte,ve->btv", h, head.astype(self.dtype), preferred_element_type=jnp.float32)
        logits = layers.constrain(logits, ("act_batch", "act_len", "act_vocab"))
        logits = logits * self.cfg.logit_scale
        return logits if cache is None else (logits, cache)


# ------------------------------------------------------------------------------------------------------------
# Incremental decoding (the two halves of aya_jax/sampling.py's loop)
# ------------------------------------------------------------------------------------------------------------


def prefill(
    model: CohereLM, params: Any, tokens: Array, segment_ids: Array, max_new_tokens: int, cache_dtype: Any
) -> tuple[Array, KVCache]:
    """Run the left-padded prompts [batch, P] (real tokens where `segment_ids` is 1, padding first) through the
    model once, into a cache of P + max_new_tokens slots. Returns (logits of the first new token
    [batch, vocab] fp32, the filled cache)."""
    start = tokens.shape[1] - jnp.sum(segment_ids != 0, axis=1).astype(jnp.int32)
    cache = init_cache(model.cfg, start, tokens.shape[1] + max_new_tokens, cache_dtype)
    return decode(model, params, tokens, cache)


def decode(model: CohereLM, params: Any, tokens: Array, cache: KVCache) -> tuple[Array, KVCache]:
    """New tokens [batch, T] at slot `cache.index` -> (logits of the token after the last of them
    [batch, vocab], cache)."""
    logits, cache = model.apply({"params": params}, tokens, cache=cache, last_logits_only=True)
    return logits[:, -1], cache
