"""Batched, sharded text generation with a KV cache: one jitted prefill + decode loop.

    sampler = Sampler(model, params, mesh=mesh, rules=rules)
    out = sampler.generate([[5, 1001, 1002], [5, 7]], SamplingParams(max_new_tokens=32, eos_ids=(255001,)))
    out.tokens[i, :out.lengths[i]], out.log_probs[i, :out.lengths[i]]
    for token, log_prob in sampler.stream([5, 1001], params): ...        # one prompt, token by token

Layout. Prompts are *left-padded* to a common length P (rounded up to `prompt_bucket` to bound recompiles);
row b's real tokens start at slot `start[b]`. The cache has P + max_new_tokens slots; every row writes its next
token at the same slot, and RoPE positions are `slot - start[b]`, so a padded row computes exactly what it would
alone (see `aya_jax.models.cohere.KVCache`). The batch is padded to a multiple of the data-parallel size with
one-token dummy rows that are dropped from the result.

Decoding. `generate_from_prompt` (pure, jittable: RLOO calls it inside its own jitted step) runs the prefill
(the whole prompt in one call, logits of the last slot only), then `jax.lax.while_loop` over new tokens until
every row has stopped or `max_new_tokens` is reached. Per step: logits -> temperature -> top-k -> top-p ->
sample (greedy `argmax` when temperature is 0). A row stops after emitting one of `eos_ids` or completing one
of `stop_sequences` (token-id sequences; the stop token(s) are kept, later slots hold `pad_id`).

Log-probs. `Generation.log_probs[b, t]` is log p(token | prefix) under the model's own distribution
(temperature 1, no top-k/top-p), i.e. what RLOO's and DPO's sequence log-probs sum; after a stop it is 0.

Determinism. Token t of row b is drawn with `fold_in(fold_in(key(seed), t), row_id)`: the same seed and
prompts give the same tokens whatever the batch padding, mesh or chunking; different rows get independent
draws (RLOO's k samples of one prompt are k rows).

Model families. The loop `decode_loop` is model-agnostic: it takes the first logits and a
`step_fn(tokens [batch, 1], cache) -> (logits [batch, vocab], cache)` closing over params. Both come from the
model's `Family` record (aya_jax/models/families.py): `prefill` and `decode`. A decoder-only model (Cohere)
prefills its KV cache with the whole prompt; an encoder-decoder (mT5) runs the encoder once, "prefills" the
decoder with its start token and keeps every decoder layer's cross-attention keys/values in the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct
from jax.sharding import Mesh

from aya_jax import sharding
from aya_jax.data import chat_template
from aya_jax.models import families

Array = jax.Array
StepFn = Callable[[Array, Any], tuple[Array, Any]]  # (tokens [batch, 1], cache) -> (logits [batch, V], cache)


class SamplingError(ValueError):
    """A sampling setting or prompt that cannot work; names the field."""


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # keep the k most likely tokens; 0: all
    top_p: float = 1.0  # nucleus: the smallest set of tokens whose probability reaches top_p; 1: all
    eos_ids: tuple[int, ...] = ()
    stop_sequences: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if int(self.max_new_tokens) < 1:
            raise SamplingError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise SamplingError(f"temperature: must be >= 0, got {self.temperature}")
        if int(self.top_k) < 0:
            raise SamplingError(f"top_k: must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p: must be in (0, 1], got {self.top_p}")
        if any(len(s) == 0 for s in self.stop_sequences):
            raise SamplingError("stop_sequences: an empty sequence would stop at once")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@struct.dataclass
class Generation:
    tokens: Array  # [batch, max_new_tokens] int32; pad_id after a row stopped
    log_probs: (
        Array  # [batch, max_new_tokens] float32; log p(token | prefix) at temperature 1, 0 after a stop
    )
    lengths: Array  # [batch] int32: generated tokens, the stop token included
    stopped: Array  # [batch] bool: ended by eos_ids / stop_sequences (False: reached max_new_tokens)


# ============================================================================================================
# Token choice
# ============================================================================================================


def filter_logits(logits: Array, temperature: float, top_k: int, top_p: float) -> Array:
    """[batch, vocab] fp32 logits -> tempered logits with the tokens outside top-k / top-p set to -inf.
    Order as in transformers: temperature, then top-k, then top-p (ties at a cut-off are all kept)."""
    logits = logits.astype(jnp.float32) / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [batch, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = -jnp.sort(-logits, axis=-1)  # descending
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the strictly more likely tokens
        keep = before < top_p  # always keeps the most likely token
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def row_keys(rng: Array, step: Array, row_ids: Array) -> Array:
    """Independent keys per (step, row) [batch]; see the module docstring."""
    step_key = jax.random.fold_in(rng, step)
    return jax.vmap(lambda r: jax.random.fold_in(step_key, r))(row_ids)


def choose_tokens(
    logits: Array, rng: Array, step: Array, row_ids: Array, sampling: SamplingParams
) -> tuple[Array, Array]:
    """Next tokens [batch] and their log-probs under the unfiltered distribution [batch]."""
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    top = jnp.max(logits, axis=-1, keepdims=True)  # [batch, 1]
    if sampling.greedy:
        # argmax as the first index holding the maximum: a max and a min-reduce, which XLA:CPU vectorises; its
        # argmax (a variadic reduce) took several times longer over a 32k vocabulary, every step. Clipped so
        # that NaN logits (no index equals the max) still give a valid token id.
        ids = jnp.arange(vocab, dtype=jnp.int32)
        tokens = jnp.minimum(jnp.min(jnp.where(logits == top, ids, vocab), axis=-1), vocab - 1)
    else:
        filtered = filter_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
        tokens = jax.vmap(jax.random.categorical)(row_keys(rng, step, row_ids), filtered)
    tokens = tokens.astype(jnp.int32)
    # log softmax of the chosen tokens alone, not of the whole [batch, vocab] row
    log_z = top[:, 0] + jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1))
    return tokens, jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0] - log_z


def choose_tokens_rows(
    logits: Array,
    keys: Array,
    temperature: Array,
    top_k: Array,
    top_p: Array,
    *,
    any_sampled: bool = True,
) -> tuple[Array, Array]:
    """`choose_tokens` with each row's own settings ([batch] arrays; temperature 0 = greedy, top_k 0 = off,
    top_p 1 = off) and its own key [batch] (a server's batch mixes requests). The same steps in the same order
    as `filter_logits`, so a row draws what `choose_tokens` draws for it alone with the same key; top-k reads
    the k-th largest logit off one descending sort (which top-p needs anyway) instead of `lax.top_k`, as k
    varies per row. `any_sampled=False` (a static flag) skips the sort when every row is greedy."""
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    top = jnp.max(logits, axis=-1, keepdims=True)
    ids = jnp.arange(vocab, dtype=jnp.int32)
    tokens = jnp.minimum(jnp.min(jnp.where(logits == top, ids, vocab), axis=-1), vocab - 1)
    if any_sampled:
        scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
        ordered = -jnp.sort(-scaled, axis=-1)
        use_k = (top_k > 0) & (top_k < vocab)
        kth = jnp.take_along_axis(ordered, jnp.clip(top_k - 1, 0, vocab - 1)[:, None], axis=-1)
        kth = jnp.where(use_k[:, None], kth, -jnp.inf)
        scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
        ordered = jnp.where(ordered < kth, -jnp.inf, ordered)
        probs = jax.nn.softmax(ordered, axis=-1)
        keep = jnp.cumsum(probs, axis=-1) - probs < top_p[:, None]
        threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
        scaled = jnp.where((top_p < 1.0)[:, None] & (scaled < threshold), -jnp.inf, scaled)
        drawn = jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
        tokens = jnp.where(temperature > 0, drawn, tokens)
    log_z = top[:, 0] + jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1))
    return tokens, jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0] - log_z


def _ends_stop_sequence(tokens: Array, step: Array, sequences: tuple[tuple[int, ...], ...]) -> Array:
    """[batch] bool: the generated tokens [batch, N] up to `step` end with one of `sequences`."""
    batch, n = tokens.shape
    hit = jnp.zeros((batch,), bool)
    for seq in sequences:
        if len(seq) > n:
            continue
        begin = jnp.clip(step - len(seq) + 1, 0, n - len(seq))
        window = jax.lax.dynamic_slice_in_dim(tokens, begin, len(seq), axis=1)
        match = jnp.all(window == jnp.asarray(seq, jnp.int32)[None], axis=1)
        hit = hit | (match & (step >= len(seq) - 1))
    return hit


# ============================================================================================================
# The loop (model-agnostic)
# ============================================================================================================


@struct.dataclass
class DecodeState:
    step: Array  # [] int32: index of the token chosen next
    logits: Array  # [batch, vocab] fp32: the distribution of that token
    cache: Any
    out: Generation


def init_decode_state(first_logits: Array, cache: Any, sampling: SamplingParams, pad_id: int) -> DecodeState:
    batch, n = first_logits.shape[0], sampling.max_new_tokens
    out = Generation(
        tokens=jnp.full((batch, n), pad_id, jnp.int32),
        log_probs=jnp.zeros((batch, n), jnp.float32),
        lengths=jnp.zeros((batch,), jnp.int32),
        stopped=jnp.zeros((batch,), bool),
    )
    return DecodeState(step=jnp.zeros((), jnp.int32), logits=first_logits, cache=cache, out=out)


def decode_step(
    state: DecodeState,
    step_fn: StepFn,
    rng: Array,
    row_ids: Array,
    sampling: SamplingParams,
    pad_id: int,
) -> DecodeState:
    """Choose token `state.step` for every row still running, then run the model on it to get the next
    distribution. The body of `decode_loop`, and one streaming step."""
    out = state.out
    running = ~out.stopped
    with jax.named_scope("choose_tokens"):  # names the sampling ops in profiles (benchmarks/decode.py)
        token, log_prob = choose_tokens(state.logits, rng, state.step, row_ids, sampling)
    token = jnp.where(running, token, pad_id)
    log_prob = jnp.where(running, log_prob, 0.0)
    tokens = jax.lax.dynamic_update_index_in_dim(out.tokens, token, state.step, axis=1)
    log_probs = jax.lax.dynamic_update_index_in_dim(out.log_probs, log_prob, state.step, axis=1)
    stop = jnp.isin(token, jnp.asarray(sampling.eos_ids or (-1,), jnp.int32))
    stop = running & (stop | _ends_stop_sequence(tokens, state.step, sampling.stop_sequences))
    out = Generation(
        tokens=tokens,
        log_probs=log_probs,
        lengths=out.lengths + running.astype(jnp.int32),
        stopped=out.stopped | stop,
    )
    # The forward pass after the last token is wasted (one of max_new_tokens); skipping it with lax.cond made
    # XLA copy the cache through the conditional every step, which cost far more.
    logits, cache = step_fn(token[:, None], state.cache)
    return DecodeState(step=state.step + 1, logits=logits, cache=cache, out=out)


def decode_loop(
    first_logits: Array,
    cache: Any,
    step_fn: StepFn,
    rng: Array,
    row_ids: Array,
    sampling: SamplingParams,
    pad_id: int = 0,
) -> Generation:
    """Sample up to `max_new_tokens` tokens per row inside one `while_loop`, stopping when every row has."""
    state = init_decode_state(first_logits, cache, sampling, pad_id)
    state = jax.lax.while_loop(
        lambda s: (s.step < sampling.max_new_tokens) & ~jnp.all(s.out.stopped),
        lambda s: decode_step(s, step_fn, rng, row_ids, sampling, pad_id),
        state,
    )
    return state.out


# ============================================================================================================
# Prefill + loop, for any model family
# ============================================================================================================


def default_cache_dtype(model: nn.Module) -> jnp.dtype:
    """The KV cache's dtype: the model's compute dtype, except fp32 for a bf16/fp16 model on CPU. XLA:CPU has
    no low-precision batched dot: with a bf16 cache it converted every layer's whole cache to fp32 at every
    decode step, ~2.4 ms per buffer at batch 32 on the benchmark model, more than the attention itself
    (benchmarks/decode.py --dtype bfloat16). Keys and values are computed in the compute dtype either way;
    an fp32 cache holds them exactly."""
    dtype = jnp.dtype(model.dtype)
    if jax.default_backend() == "cpu" and dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def generate(
    model: nn.Module,
    params: Any,
    tokens: Array,
    segment_ids: Array,
    rng: Array,
    sampling: SamplingParams,
    *,
    row_ids: Array | None = None,
    pad_id: int = 0,
    cache_dtype: Any = None,
) -> Generation:
    """Pure and jittable: prompts `tokens` [batch, P] whose real tokens are where `segment_ids` is non-zero ->
    `Generation`. The model's family (aya_jax/models/families.py) prefills a cache in `cache_dtype` (default:
    `default_cache_dtype`) and decodes one token at a time; a decoder-only model needs left padding, an
    encoder-decoder's prompt may be padded anywhere (it is the encoder input)."""
    family = families.family_of(model)
    model, params = family.decoding_view(model, params)
    row_ids = jnp.arange(tokens.shape[0], dtype=jnp.int32) if row_ids is None else row_ids
    logits, cache = family.prefill(
        model, params, tokens, segment_ids, sampling.max_new_tokens, cache_dtype or default_cache_dtype(model)
    )
    step = functools.partial(family.decode, model, params)
    return decode_loop(logits, cache, step, rng, row_ids, sampling, pad_id)


def left_padded_segment_ids(length: int, start: Array) -> Array:
    """Segment ids [batch, length] of `left_pad`'s rows: 1 from slot `start[b]` on, 0 before."""
    return (jnp.arange(length, dtype=jnp.int32)[None, :] >= start[:, None]).astype(jnp.int32)


def generate_from_prompt(
    model: nn.Module,
    params: Any,
    tokens: Array,
    start: Array,
    rng: Array,
    sampling: SamplingParams,
    *,
    row_ids: Array | None = None,
    pad_id: int = 0,
    cache_dtype: Any = None,
) -> Generation:
    """`generate` on `left_pad`'s layout: left-padded prompts `tokens` [batch, P] whose real tokens begin at
    `start` [batch]. The cache holds P + max_new_tokens slots (decoder-only) or 1 + max_new_tokens decoder
    slots (encoder-decoder)."""
    return generate(
        model,
        params,
        tokens,
        left_padded_segment_ids(tokens.shape[1], start),
        rng,
        sampling,
        row_ids=row_ids,
        pad_id=pad_id,
        cache_dtype=cache_dtype,
    )


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, bucket: int = 64, rows_multiple: int = 1
) -> tuple[np.ndarray, np.ndarray, int]:
    """Host-side: prompts -> (tokens [rows, P] left-padded, start [rows], number of real rows). P is the longest
    prompt rounded up to `bucket`; rows are padded to a multiple of `rows_multiple` with one-token dummies."""
    if not prompts:
        raise SamplingError("prompts: nothing to generate from")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise SamplingError(
                f"prompts[{i}]: empty prompt (the first token needs something to condition on)"
            )
    longest = max(len(p) for p in prompts)
    length = max(bucket, int(math.ceil(longest / bucket)) * bucket)
    rows = int(math.ceil(len(prompts) / rows_multiple)) * rows_multiple
    tokens = np.full((rows, length), pad_id, np.int32)
    start = np.full((rows,), length - 1, np.int32)
    for i, p in enumerate(prompts):
        tokens[i, length - len(p) :] = np.asarray(p, np.int32)
        start[i] = length - len(p)
    return tokens, start, len(prompts)


class Sampler:
    """Generation from a model of any family on a mesh: host-side padding and batching around the jitted
    `generate_from_prompt`, plus token-by-token streaming of one prompt (same tokens, same seed). An
    encoder-decoder takes the prompts as encoder inputs (same padding and batching)."""

    def __init__(
        self,
        model: nn.Module,
        params: Any,
        *,
        mesh: Mesh | None = None,
        rules: Any = (),
        pad_id: int = 0,
        prompt_bucket: int = 64,
        cache_dtype: Any = None,
    ):
        self.family = families.family_of(model)
        # The model in the form decoding runs fastest in (Cohere: layers unrolled, weights split per layer), made
        # once here rather than inside every jitted call; the sampler keeps only this copy of the weights.
        self.model, self.params = self.family.decoding_view(model, params)
        self.mesh, self.pad_id = mesh, int(pad_id)
        self.rules = sharding.normalize_rules(rules, mesh) if mesh is not None else ()
        self.prompt_bucket = int(prompt_bucket)
        self.cache_dtype = cache_dtype or default_cache_dtype(model)
        self.rows_multiple = sharding.data_parallel_size(mesh, self.rules) if mesh is not None else 1
        self._generate = jax.jit(
            functools.partial(
                generate_from_prompt, self.model, pad_id=self.pad_id, cache_dtype=self.cache_dtype
            ),
            static_argnames=("sampling",),
        )
        self._stream_fns: dict[SamplingParams, tuple[Callable, Callable]] = {}

    # -- placement ------------------------------------------------------------------------------------------
    def _context(self) -> contextlib.ExitStack:
        return sharding.rules_context(self.mesh, self.rules)

    def _put_rows(self, x: np.ndarray) -> Array:
        return sharding.put_rows(x, self.mesh, self.rules)

    def _check_length(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> None:
        limit = self.family.max_positions(self.model.cfg)
        if limit is None:  # relative position buckets: no maximum length
            return
        longest = max(len(p) for p in prompts) + sampling.max_new_tokens
        if longest > limit:
            raise SamplingError(
                f"max_new_tokens: longest prompt + {sampling.max_new_tokens} new tokens = {longest} positions, "
                f"more than the model's max_position_embeddings {limit}"
            )

    # -- batched --------------------------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        seed: int = 0,
        row_ids: Sequence[int] | None = None,
    ) -> Generation:
        """Token-id prompts -> Generation of NumPy arrays, one row per prompt. `row_ids` (default: the rows'
        positions) key each row's random stream: a caller that names its rows (a prompt's number in a pool and
        a sample's number) draws the same sample for a row whichever batch it lands in."""
        self._check_length(prompts, sampling)
        tokens, start, n = left_pad(prompts, self.pad_id, self.prompt_bucket, self.rows_multiple)
        ids = np.arange(tokens.shape[0], dtype=np.int32)
        if row_ids is not None:
            if len(row_ids) != n:
                raise ValueError(f"row_ids: {len(row_ids)} ids for {n} prompts")
            ids[:n] = np.asarray(row_ids, np.int64).astype(np.int32)
        row_ids = ids
        with self._context():
            out = self._generate(
                self.params,
                self._put_rows(tokens),
                self._put_rows(start),
                jax.random.PRNGKey(seed),
                sampling=sampling,
                row_ids=self._put_rows(row_ids),
            )
            out = sharding.to_host(out)  # on many hosts: every host gets every row
        return jax.tree.map(lambda x: np.asarray(x)[:n], out)

    # -- streaming ------------------------------------------------------------------------------------------
    def _stream_functions(self, sampling: SamplingParams):
        if sampling not in self._stream_fns:
            model, family, pad_id, cache_dtype = self.model, self.family, self.pad_id, self.cache_dtype

            def prefill(params, tokens, start):
                segment_ids = left_padded_segment_ids(tokens.shape[1], start)
                logits, cache = family.prefill(
                    model, params, tokens, segment_ids, sampling.max_new_tokens, cache_dtype
                )
                return init_decode_state(logits, cache, sampling, pad_id)

            def step(params, state, rng, row_ids):
                step_fn = functools.partial(family.decode, model, params)
                return decode_step(state, step_fn, rng, row_ids, sampling, pad_id)

            self._stream_fns[sampling] = (jax.jit(prefill), jax.jit(step, donate_argnums=(1,)))
        return self._stream_fns[sampling]

    def stream(
        self, prompt: Sequence[int], sampling: SamplingParams, seed: int = 0
    ) -> Iterator[tuple[int, float]]:
        """Yield (token, log-prob) for one prompt as each is decoded; the stop token is the last one yielded.
        The same tokens as `generate([prompt], sampling, seed)`."""
        self._check_length([prompt], sampling)
        prefill, step = self._stream_functions(sampling)
        tokens, start, _ = left_pad([prompt], self.pad_id, self.prompt_bucket, self.rows_multiple)
        rng = jax.random.PRNGKey(seed)
        with self._context():
            row_ids = self._put_rows(np.arange(tokens.shape[0], dtype=np.int32))
            state = prefill(self.params, self._put_rows(tokens), self._put_rows(start))
            for t in range(sampling.max_new_tokens):
                state = step(self.params, state, rng, row_ids)
                token, log_prob, stopped = jax.device_get(
                    (state.out.tokens[0, t], state.out.log_probs[0, t], state.out.stopped[0])
                )
                yield int(token), float(log_prob)
                if stopped:
                    return


# ============================================================================================================
# Prompts
# ============================================================================================================


def cohere_chat_prompt(user: str, system: str | None = None) -> str:
    """One user turn in the Cohere chat format (Aya 23 / Aya Expanse), ready for the model's reply — the text
    `tokenizer.apply_chat_template([...], add_generation_prompt=True)` renders with
    `aya_jax.hf.cohere.CHAT_TEMPLATE`, and the prompt SFT rows are trained on in the chat format (`config.data.format`)
    (one implementation: `aya_jax.data.chat_template`). Encode it with special tokens parsed and none added."""
    return chat_template.prompt_text(user, system or "")
