"""Continuous batching: one decode batch shared by requests that come and go, for the `serve` job's HTTP server.

    engine = Engine(model, params, mesh=mesh, rules=rules, pad_id=codec.pad_id, slots=32, max_len=2048)
    engine.start()
    request = engine.submit(Request(prompt=ids, max_tokens=64, eos_ids=eos_ids))
    for event in request.events():      # Token(token, log_prob, top) ..., then Finished(reason)
        ...
    engine.close()                      # stop taking requests, finish those in flight

The batch has `slots` rows over one KV cache of `max_len` slots, in the layout of aya_jax/sampling.py: every
row writes its next token at the same slot (`index`), each row's tokens start at its own `start`. A request
joins at the next step: its prompt is prefilled on its own (a few joiners together, their count padded to a
power of two and the prompt length to `prompt_bucket`, to bound recompilations) and its cache slots are copied
into a free row so that they end at `index` (`Family.insert_cache_rows`). Positions count from each row's
start (RoPE) or are relative (mT5's bias), so a joined row computes what it would alone. When the next write
would fall off the end of the cache, every row's slots move left by the smallest start of a running row
(`Family.shift_cache`, one copy of the cache); a prompt longer than `index` moves them right. An admitted request
always fits: prompt + max_tokens <= max_len is checked on submission, and a running row's window
(prompt + tokens so far) is then shorter than the cache.

Each step chooses one token for every row with its own sampling settings (`sampling.choose_tokens_rows`) and
runs the model once; free rows compute padding that nobody reads. A request's token t is drawn with the key
`fold_in(fold_in(PRNGKey(seed), t), row_id)`, the offline sampler's, so a request gives the tokens
`Sampler.generate([prompt] * n, params, seed)` gives its row `row_id` (greedy: identical; sampled: the same draw
up to float rounding of differently shaped computations).

The engine runs in one thread; `submit` and `events` are safe to call from any other (the HTTP handlers).
Requests wait in arrival order for a free row. `Request.cancel` frees a row at the next step (a stop string
found by the caller, a client gone). Sharding: the rows and the cache are placed over the mesh's batch axes
like the sampler's (`slots` is rounded up to a multiple of the data-parallel size).

Departs from vLLM/SGLang: no paged attention (the cache is one dense block per row, read whole every step,
as in the offline sampler) and no chunked prefill (a joiner's prompt is prefilled in one call, between two
decode steps of the others).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from aya_jax import losses, sampling, sharding
from aya_jax.models import families

Array = jax.Array
MAX_TOP_LOGPROBS = 20  # the most alternatives a request may ask for per token (the OpenAI API's limit)


class EngineClosed(RuntimeError):
    """The engine no longer takes requests (shutting down)."""


@dataclasses.dataclass(frozen=True)
class Token:
    token: int
    log_prob: float  # log p(token | prefix) under the model's own distribution (temperature 1, unfiltered)
    top: tuple[tuple[int, float], ...] = ()  # the most likely tokens and their log-probs, if asked for


@dataclasses.dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (an EOS id), "length" (max_tokens), "cancelled"


@dataclasses.dataclass
class Request:
    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    row_id: int = 0  # the row of an offline batch of identical prompts this request reproduces (choice n)
    eos_ids: tuple[int, ...] = ()
    top_logprobs: int = 0
    _events: queue.Queue = dataclasses.field(default_factory=queue.Queue, repr=False)
    _cancelled: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def events(self, timeout: float | None = None) -> Iterator[Token | Finished]:
        """The request's tokens as they are decoded, then one `Finished`."""
        while True:
            event = self._events.get(timeout=timeout)
            yield event
            if isinstance(event, Finished):
                return


@dataclasses.dataclass
class _Row:
    request: Request
    dispatched: int = 0  # decode steps sent to the device for this row (= the index of its next token)
    generated: int = 0  # tokens handed to the request


def _power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class Engine:
    """Continuous batching over one KV cache (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        params: Any,
        *,
        mesh: Mesh | None = None,
        rules: Any = (),
        pad_id: int = 0,
        slots: int = 8,
        max_len: int = 2048,
        prompt_bucket: int = 64,
        encoder_len: int = 512,
        cache_dtype: Any = None,
    ):
        self.family = families.family_of(model)
        self.model, self.params = self.family.decoding_view(model, params)
        self.mesh, self.pad_id = mesh, int(pad_id)
        self.rules = sharding.normalize_rules(rules, mesh) if mesh is not None else ()
        self.rows_multiple = sharding.data_parallel_size(mesh, self.rules) if mesh is not None else 1
        self.slots = int(math.ceil(int(slots) / self.rows_multiple)) * self.rows_multiple
        limit = self.family.max_positions(self.model.cfg)
        self.max_len = min(int(max_len), limit) if limit else int(max_len)
        self.prompt_bucket, self.encoder_len = int(prompt_bucket), int(encoder_len)
        self.cache_dtype = cache_dtype or sampling.default_cache_dtype(model)

        self._lock = threading.Condition()
        self._waiting: collections.deque[Request] = collections.deque()
        self._rows: list[_Row | None] = [None] * self.slots
        self._closing = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.steps = 0  # decode steps run (for benchmarks and tests)
        self.generated = 0  # tokens handed out
        self.moves = {"left": 0, "right": 0}  # cache moves (tests check both happen)

        # host mirrors of the cache's bookkeeping
        self._index = 0
        self._start = np.zeros((self.slots,), np.int64)
        self._prefill = jax.jit(self._prefill_fn, donate_argnums=(1, 2))
        self._step = jax.jit(self._step_fn, donate_argnums=(1, 2), static_argnames=("any_sampled", "n_top"))
        self._shift = jax.jit(self.family.shift_cache, donate_argnums=(0,))
        self._cache: Any = None
        self._logits: Any = None

    # -- limits ---------------------------------------------------------------------------------------------
    @property
    def prompt_limit(self) -> int:
        """The longest prompt (tokens) a request may bring."""
        return self.encoder_len if self.family.encoder_decoder else self.max_len - 1

    def check(self, request: Request) -> None:
        """SamplingError naming the field for a request that cannot run."""
        n = len(request.prompt)
        if n == 0:
            raise sampling.SamplingError("prompt: empty (the first token needs something to condition on)")
        if n > self.prompt_limit:
            raise sampling.SamplingError(
                f"prompt: {n} tokens, more than this server's limit of {self.prompt_limit}"
            )
        budget = self.max_len - (1 if self.family.encoder_decoder else n)
        if request.max_tokens < 1:
            raise sampling.SamplingError(f"max_tokens: must be >= 1, got {request.max_tokens}")
        if request.max_tokens > budget:
            raise sampling.SamplingError(
                f"max_tokens: the prompt's {n} tokens + {request.max_tokens} new tokens do not fit this server's "
                f"context of {self.max_len} tokens (at most {budget} new tokens for this prompt)"
            )
        if not request.temperature >= 0:
            raise sampling.SamplingError(f"temperature: must be >= 0, got {request.temperature}")
        if not 0 < request.top_p <= 1:
            raise sampling.SamplingError(f"top_p: must be in (0, 1], got {request.top_p}")
        if not 0 <= request.seed < 2**32:
            raise sampling.SamplingError(f"seed: must be in [0, 2**32), got {request.seed}")
        if not 0 <= request.top_logprobs <= MAX_TOP_LOGPROBS:
            raise sampling.SamplingError(
                f"top_logprobs: must be in [0, {MAX_TOP_LOGPROBS}], got {request.top_logprobs}"
            )

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> Engine:
        """Build the empty batch (compiles the step) and start the engine thread."""
        with self._context():
            self._cache, self._logits = self._empty()
        self._thread = threading.Thread(target=self._run, name="aya_jax-engine", daemon=True)
        self._thread.start()
        return self

    def submit(self, request: Request) -> Request:
        self.check(request)
        with self._lock:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            if self._error is not None:
                raise EngineClosed(f"the engine failed: {self._error!r}")
            self._waiting.append(request)
            self._lock.notify_all()
        return request

    def close(self, timeout: float | None = None) -> None:
        """Take no new request; return once every admitted and waiting one has finished."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def closing(self) -> bool:
        """`close` was called: new requests are refused."""
        return self._closing

    @property
    def busy(self) -> int:
        """Requests running or waiting."""
        with self._lock:
            return len(self._waiting) + sum(r is not None for r in self._rows)

    # -- device functions -----------------------------------------------------------------------------------
    def _context(self):
        return sharding.rules_context(self.mesh, self.rules)

    def _put_rows(self, x: np.ndarray) -> Array:
        return sharding.put_rows(x, self.mesh, self.rules)

    def _empty(self) -> tuple[Any, Array]:
        """A cache of `slots` rows and `max_len` slots (one-token dummy prompts: every row is free)."""
        length = self.encoder_len if self.family.encoder_decoder else 1
        tokens = np.full((self.slots, length), self.pad_id, np.int32)
        start = np.full((self.slots,), length - 1, np.int32)
        prefilled = 1 if self.family.encoder_decoder else length

        def empty(params, tokens, start):
            segment_ids = sampling.left_padded_segment_ids(tokens.shape[1], start)
            return self.family.prefill(
                self.model, params, tokens, segment_ids, self.max_len - prefilled, self.cache_dtype
            )[::-1]

        cache, logits = jax.jit(empty)(self.params, self._put_rows(tokens), self._put_rows(start))
        self._index = prefilled
        self._start[:] = prefilled - 1
        return cache, logits

    def _prefill_fn(self, params, cache, logits, tokens, start, rows):
        segment_ids = sampling.left_padded_segment_ids(tokens.shape[1], start)
        new_logits, new = self.family.prefill(self.model, params, tokens, segment_ids, 0, self.cache_dtype)
        cache = self.family.insert_cache_rows(cache, rows, new)
        return cache, logits.at[rows].set(new_logits.astype(logits.dtype))

    def _step_fn(self, params, cache, logits, seeds, t, row_ids, temperature, top_k, top_p, running, *,
                 any_sampled, n_top):  # fmt: skip
        keys = jax.vmap(
            lambda seed, step, row: jax.random.fold_in(
                jax.random.fold_in(jax.random.PRNGKey(seed), step), row
            )
        )(seeds, t, row_ids)
        tokens, log_probs = sampling.choose_tokens_rows(
            logits, keys, temperature, top_k, top_p, any_sampled=any_sampled
        )
        tokens = jnp.where(running, tokens, self.pad_id)
        top = ()
        if n_top:
            top = losses.top_k_by_argmax(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), n_top)
        new_logits, cache = self.family.decode(self.model, params, tokens[:, None], cache)
        return cache, new_logits.astype(jnp.float32), tokens, log_probs, top

    # -- the loop -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        pending = None  # the step sent to the device whose tokens are not handed out yet
        try:
            while True:
                with self._lock:
                    while not self._waiting and not any(self._rows) and not self._closing and pending is None:
                        self._lock.wait()
                    if self._closing and not self._waiting and not any(self._rows) and pending is None:
                        return
                    free = [i for i, r in enumerate(self._rows) if r is None]
                    joining = [self._waiting.popleft() for _ in range(min(len(free), len(self._waiting)))]
                with self._context():
                    if joining:
                        self._admit(joining, free[: len(joining)])
                    # Step k+1 goes to the device before step k's tokens are handed out: the host's work (and
                    # its wait for the interpreter lock, with many HTTP threads) overlaps the device's.
                    sent = self._dispatch()
                    if pending is not None:
                        self._collect(*pending)
                    pending = sent
        except BaseException as e:  # a failed step must not leave clients waiting forever
            with self._lock:
                self._error = e
                stranded = [r.request for r in self._rows if r is not None] + list(self._waiting)
                self._rows = [None] * self.slots
                self._waiting.clear()
            for request in stranded:
                request._events.put(Finished("error"))
            raise

    def _move(self, shift: int) -> None:
        if shift:
            self.moves["left" if shift < 0 else "right"] += 1
            self._cache = self._shift(self._cache, jnp.int32(shift))
            self._index += shift
            self._start += shift

    def _admit(self, requests: list[Request], rows: list[int]) -> None:
        encoder_decoder = self.family.encoder_decoder
        longest = max(len(r.prompt) for r in requests)
        if encoder_decoder:
            length, slots_needed = self.encoder_len, 1
        else:
            length = min(int(math.ceil(longest / self.prompt_bucket)) * self.prompt_bucket, self.max_len - 1)
            slots_needed = length
        if not any(self._rows):
            self._move(slots_needed - self._index)  # an idle batch: start right after the prompt
        elif self._index < slots_needed:
            self._move(slots_needed - self._index)
        n = int(math.ceil(_power_of_two(len(requests)) / self.rows_multiple)) * self.rows_multiple
        tokens = np.full((n, length), self.pad_id, np.int32)
        start = np.zeros((n,), np.int32)
        row_of = np.zeros((n,), np.int32)
        for i in range(
            n
        ):  # padding rows repeat the last joiner: the same cache written to the same row twice
            request, row = requests[min(i, len(requests) - 1)], rows[min(i, len(rows) - 1)]
            tokens[i, length - len(request.prompt) :] = (
                request.prompt
            )  # left-padded (an encoder reads it anywhere)
            start[i], row_of[i] = length - len(request.prompt), row
        self._cache, self._logits = self._prefill(
            self.params,
            self._cache,
            self._logits,
            self._put_rows(tokens),
            self._put_rows(start),
            jnp.asarray(row_of),
        )
        with self._lock:
            for request, row in zip(requests, rows, strict=True):
                self._rows[row] = _Row(request)
                self._start[row] = self._index - (1 if encoder_decoder else len(request.prompt))

    def _finish(self, row: int, reason: str) -> None:
        with self._lock:
            self._rows[row].request._events.put(Finished(reason))
            self._rows[row] = None

    def _dispatch(self) -> tuple[Any, list[tuple[int, Request]]] | None:
        """Send one decode step of every running row to the device; None when no row runs. A row runs until
        its last token is sent (its stop by an EOS id is only seen when its tokens come back, so it may run one
        step more, whose token nobody reads)."""
        for i, row in enumerate(self._rows):
            if row is not None and row.request.cancelled:
                self._finish(i, "cancelled")
        running = [
            i for i, r in enumerate(self._rows) if r is not None and r.dispatched < r.request.max_tokens
        ]
        if not running:
            return None
        if self._index >= self.max_len:  # the next write would fall off the cache: move every row left
            self._move(-int(min(self._start[i] for i in running)))
        req = [self._rows[i].request if i in running else None for i in range(self.slots)]

        def column(get, dtype, default):
            return self._put_rows(np.array([get(q) if q is not None else default for q in req], dtype))

        temperature = np.array([q.temperature if q is not None else 0.0 for q in req], np.float32)
        self._cache, self._logits, tokens, log_probs, top = self._step(
            self.params,
            self._cache,
            self._logits,
            column(lambda q: q.seed, np.uint32, 0),
            self._put_rows(
                np.array(
                    [self._rows[i].dispatched if i in running else 0 for i in range(self.slots)], np.int32
                )
            ),  # fmt: skip
            column(lambda q: q.row_id, np.int32, 0),
            self._put_rows(temperature),
            column(lambda q: q.top_k, np.int32, 0),
            column(lambda q: q.top_p, np.float32, 1.0),
            self._put_rows(np.array([q is not None for q in req])),
            any_sampled=bool(np.any(temperature > 0)),
            n_top=int(max((q.top_logprobs for q in req if q is not None), default=0)),
        )
        self._index += 1
        self.steps += 1
        for i in running:
            self._rows[i].dispatched += 1
        return (tokens, log_probs, top), [(i, self._rows[i].request) for i in running]

    def _collect(self, outputs: Any, rows: list[tuple[int, Request]]) -> None:
        """Hand a step's tokens to the requests that were running in it and are still there."""
        tokens, log_probs, top = jax.device_get(sharding.to_host(outputs))
        for i, request in rows:
            row = self._rows[i]
            if row is None or row.request is not request:  # finished (an EOS id) before this step came back
                continue
            if request.cancelled:
                self._finish(i, "cancelled")
                continue
            token = int(tokens[i])
            alternatives = ()
            if request.top_logprobs:
                values, ids = top
                alternatives = tuple(
                    (int(ids[i, j]), float(values[i, j])) for j in range(request.top_logprobs)
                )
            request._events.put(Token(token, float(log_probs[i]), alternatives))
            row.generated += 1
            self.generated += 1
            if token in request.eos_ids:
                self._finish(i, "stop")
            elif row.generated >= request.max_tokens:
                self._finish(i, "length")
