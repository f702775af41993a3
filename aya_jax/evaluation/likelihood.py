"""Log-likelihoods of text under a model of any family, batched and sharded over the mesh: what every
likelihood-scored evaluation reads (Global-MMLU, perplexity, the lm-evaluation-harness adapter).

Two layers:

* `Scorer` — token level. For requests (context ids, continuation ids) it returns the log-probability of each
  continuation token given everything before it, and whether that token is the argmax of its distribution.
  A decoder-only model reads `(context + continuation)[-(max_length + 1):][:-1]` left-padded, so every row's
  continuation ends in the last column and only the last K columns (K = the batch's longest continuation,
  rounded up to a power of two) go through the output projection; an encoder-decoder reads the context as
  encoder input and `[decoder start] + continuation[:-1]` as decoder input. The output projection runs a chunk
  of tokens at a time (aya_jax/losses.py `token_log_probs_and_greedy`), so [batch, len, vocab] logits never
  exist at once. Requests are sorted longest first (as the harness does: the first batch is the largest, so
  running out of memory shows at once) and batched `batch_size` rows at a time, the rows sharded over the
  mesh's batch axes (every host builds the same batch and places the rows its devices hold; the results are
  gathered to every host). Lengths are rounded up to `length_bucket` to bound recompilations. The same
  batches give text embeddings: `mean_hidden_states` averages the final hidden states over each sequence's
  tokens (an encoder-decoder's encoder output), what data curation clusters and routes prompts by.
* `TextModel` — text level, with lm-evaluation-harness's `TemplateLM` semantics so that a score here equals the
  harness's on the same checkpoint: `encode_pair` moves the context's trailing whitespace into the
  continuation and, for a decoder, encodes `context + continuation` whole and takes the continuation's ids as
  what follows the context's (so " A" is scored however the tokenizer splits it); an encoder-decoder encodes
  the two apart. An empty context is the prefix token (BOS, else the end-of-text id). `tok_encode` adds the
  tokenizer's own special tokens unless the text already starts with BOS (the harness's `hf` model default).
  `loglikelihood_rolling` splits a text into disjoint windows of at most `max_length` predicted tokens, each
  with as much context as fits (the harness's `get_rolling_token_windows` with context length 1, re-derived
  here), and sums their log-probs.

Departures from transformers-based scoring: none in the arithmetic (fp32 log-softmax over the full vocabulary);
the padding side and batching differ, which changes nothing but float rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from aya_jax import losses, pretrained, sharding
from aya_jax.data import chat_template
from aya_jax.models import families

TokenPair = tuple[Sequence[int], Sequence[int]]
DEFAULT_MAX_LENGTH = 2048  # for families with relative positions (mT5): the harness's default too


@dataclasses.dataclass(frozen=True)
class TokenScores:
    """A text's token ids and the log-probability of each given all before it (the first given the prefix)."""

    ids: np.ndarray  # [n] int
    log_probs: np.ndarray  # [n] float


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


def _power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _scores(
    model: nn.Module, params: Any, batch: dict[str, jax.Array], k: int, chunk_size: int, top: int = 0
):
    """(log-probs, greedy flags) of the last k columns; with `top`: (log-probs, top log-probs, top ids)."""
    family = families.family_of(model)
    hidden = family.hidden_states(model, params, batch)[:, -k:]
    kernel = family.output_kernel(params).astype(model.dtype)
    targets, scale = batch["targets"][:, -k:], family.logit_scale(model.cfg)
    if top:
        return losses.token_log_probs_and_top(
            hidden, kernel, targets, k=top, logit_scale=scale, chunk_size=chunk_size
        )
    return losses.token_log_probs_and_greedy(
        hidden, kernel, targets, logit_scale=scale, chunk_size=chunk_size
    )


def _mean_hidden(model: nn.Module, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
    """[batch, embed] fp32: the final hidden states averaged over each row's real tokens (a decoder's
    final-norm states over its input; an encoder-decoder's encoder output over the encoder input)."""
    family = families.family_of(model)
    if family.encoder_decoder:
        segments = batch["encoder_segment_ids"]
        hidden = model.apply(
            {"params": params}, batch["encoder_input_tokens"], segments, batch["encoder_positions"],
            method="encode",
        )  # fmt: skip
    else:
        segments = batch["decoder_segment_ids"]
        hidden = family.hidden_states(model, params, batch)
    mask = (segments > 0).astype(jnp.float32)[..., None]
    return jnp.sum(hidden.astype(jnp.float32) * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


class Scorer:
    """Token-level log-likelihoods of a model on a mesh (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        params: Any,
        *,
        mesh: Mesh | None = None,
        rules: Any = (),
        pad_id: int = 0,
        batch_size: int = 32,
        max_length: int = 0,
        length_bucket: int = 64,
        chunk_size: int = 1024,
    ):
        self.model, self.params, self.mesh, self.pad_id = model, params, mesh, int(pad_id)
        self.rules = sharding.normalize_rules(rules, mesh) if mesh is not None else ()
        self.family = families.family_of(model)
        self.max_length = int(max_length) or self.family.max_positions(model.cfg) or DEFAULT_MAX_LENGTH
        self.length_bucket = int(length_bucket)
        multiple = sharding.data_parallel_size(mesh, self.rules) if mesh is not None else 1
        self.batch_size = _round_up(int(batch_size), multiple)  # every batch splits evenly over the devices
        self.start_id = self.family.decoder_start_id(model.cfg)
        self._fn = jax.jit(
            functools.partial(_scores, model, chunk_size=int(chunk_size)), static_argnames=("k", "top")
        )
        self._mean_fn = jax.jit(functools.partial(_mean_hidden, model))

    # -- batches ------------------------------------------------------------------------------------------
    def _decoder_batch(self, rows: Sequence[TokenPair]) -> tuple[dict[str, np.ndarray], int]:
        seqs = [(list(c) + list(t))[-(self.max_length + 1) :] for c, t in rows]
        length = _round_up(max(len(s) - 1 for s in seqs), self.length_bucket)
        k = min(length, _power_of_two(max(len(t) for _, t in rows)))
        n = self.batch_size
        tokens = np.full((n, length), self.pad_id, np.int32)
        targets = np.zeros((n, length), np.int32)
        segments = np.zeros((n, length), np.int32)
        positions = np.zeros((n, length), np.int32)
        for i, s in enumerate(seqs):
            m = len(s) - 1
            tokens[i, length - m :] = s[:-1]
            targets[i, length - m :] = s[1:]
            segments[i, length - m :] = 1
            positions[i, length - m :] = np.arange(m)
        batch = {
            "decoder_input_tokens": tokens, "decoder_positions": positions, "decoder_segment_ids": segments,
            "targets": targets,
        }  # fmt: skip
        return batch, k

    def _encoder_decoder_batch(self, rows: Sequence[TokenPair]) -> tuple[dict[str, np.ndarray], int]:
        contexts = [list(c)[-self.max_length :] for c, _ in rows]
        conts = [list(t)[: self.max_length] for _, t in rows]
        enc_len = _round_up(max(len(c) for c in contexts), self.length_bucket)
        k = _power_of_two(max(len(t) for t in conts))
        n = self.batch_size
        batch = {
            name: np.zeros((n, size), np.int32)
            for name, size in (
                ("encoder_input_tokens", enc_len), ("encoder_positions", enc_len), ("encoder_segment_ids", enc_len),
                ("decoder_input_tokens", k), ("decoder_positions", k), ("decoder_segment_ids", k), ("targets", k),
            )
        }  # fmt: skip
        batch["encoder_input_tokens"][:] = self.pad_id
        batch["decoder_input_tokens"][:] = self.pad_id
        for i, (c, t) in enumerate(zip(contexts, conts, strict=True)):
            batch["encoder_input_tokens"][i, : len(c)] = c
            batch["encoder_positions"][i, : len(c)] = np.arange(len(c))
            batch["encoder_segment_ids"][i, : len(c)] = 1
            batch["decoder_input_tokens"][i, : len(t)] = [self.start_id, *t[:-1]]
            batch["decoder_positions"][i, : len(t)] = np.arange(len(t))
            batch["decoder_segment_ids"][i, : len(t)] = 1
            batch["targets"][i, : len(t)] = t
        return batch, k

    def _run(self, rows: Sequence[TokenPair], top: int = 0) -> list[tuple[np.ndarray, ...]]:
        return self.apply(rows, lambda placed, k: self._fn(self.params, placed, k=k, top=top))

    def apply(self, rows: Sequence[TokenPair], compute: Callable[[dict[str, jax.Array], int], Any]):
        """`compute(batch placed on the mesh, k)` -> per-token arrays [batch, k] on one batch of requests, cut
        back to each request's continuation tokens: per row a tuple of [len(continuation)] arrays."""
        if self.family.encoder_decoder:
            batch, k = self._encoder_decoder_batch(rows)
        else:
            batch, k = self._decoder_batch(rows)
        with sharding.rules_context(self.mesh, self.rules):
            placed = {name: sharding.put_rows(x, self.mesh, self.rules) for name, x in batch.items()}
            scores = sharding.to_host(compute(placed, k))
        out = []
        for i, (_, continuation) in enumerate(rows):
            n = min(len(continuation), self.max_length)
            # an encoder-decoder's continuation starts the decoder row; a decoder's ends it (left padding), a
            # continuation longer than max_length keeping its last tokens
            part = slice(0, n) if self.family.encoder_decoder else slice(k - n, k)
            out.append(tuple(x[i, part] for x in scores))
        return out

    # -- requests -----------------------------------------------------------------------------------------
    def token_log_probs(
        self, requests: Sequence[TokenPair], progress: Callable[[int], None] | None = None, *, top: int = 0
    ) -> list[tuple[np.ndarray, ...]]:
        """(log-probs [len(continuation)], greedy flags [len(continuation)]) per request, in request order;
        with `top` > 0 instead (log-probs, the `top` largest log-probs [len, top], their ids [len, top]).
        `progress(n)` is called with the number of requests each batch finished."""
        return self.batched(requests, lambda rows: self._run(rows, top), progress)

    def batched(
        self,
        requests: Sequence[TokenPair],
        run: Callable[[Sequence[TokenPair]], list[Any]],
        progress: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """`run` on the requests, longest first, `batch_size` at a time; results in request order."""
        for i, (context, continuation) in enumerate(requests):
            if not continuation:
                raise ValueError(f"request {i}: empty continuation (nothing to score)")
            if not context:
                raise ValueError(f"request {i}: empty context (pass at least the prefix token)")
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
        results: list[Any] = [None] * len(requests)
        for begin in range(0, len(order), self.batch_size):
            chunk = order[begin : begin + self.batch_size]
            for i, scored in zip(chunk, run([requests[i] for i in chunk]), strict=True):
                results[i] = scored
            if progress is not None:
                progress(len(chunk))
        return results

    def mean_hidden_states(
        self, sequences: Sequence[Sequence[int]], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """[len(sequences), embed] float32: each sequence's final hidden states averaged over its tokens (a
        decoder reads the whole sequence, an encoder-decoder's encoder does); a sequence longer than
        `max_length` keeps its first `max_length` tokens. Batched and sharded as the log-likelihoods are."""

        def run(rows: Sequence[TokenPair]) -> list[np.ndarray]:
            build = self._encoder_decoder_batch if self.family.encoder_decoder else self._decoder_batch
            batch, _ = build(rows)
            with sharding.rules_context(self.mesh, self.rules):
                placed = {name: sharding.put_rows(x, self.mesh, self.rules) for name, x in batch.items()}
                pooled = sharding.to_host(self._mean_fn(self.params, placed))
            return list(pooled[: len(rows)])

        # (sequence, one placeholder token): the batch builders drop a row's last token from the input
        rows = [(list(seq)[: self.max_length], [self.pad_id]) for seq in sequences]
        return np.stack(self.batched(rows, run, progress)).astype(np.float32)

    def loglikelihood(
        self, requests: Sequence[TokenPair], progress: Callable[[int], None] | None = None
    ) -> list[tuple[float, bool]]:
        """(Σ log p(continuation | context), every continuation token greedy) per request."""
        return [
            (float(np.sum(logp, dtype=np.float64)), bool(np.all(greedy)))
            for logp, greedy in self.token_log_probs(requests, progress)
        ]


# ============================================================================================================
# Text
# ============================================================================================================


def _divergences(model_p: nn.Module, model_q: nn.Module, params_p, params_q, batch, k: int, chunk_size: int):
    fp, fq = families.family_of(model_p), families.family_of(model_q)
    return losses.token_divergences(
        fp.hidden_states(model_p, params_p, batch)[:, -k:], fp.output_kernel(params_p).astype(model_p.dtype),
        fq.hidden_states(model_q, params_q, batch)[:, -k:], fq.output_kernel(params_q).astype(model_q.dtype),
        batch["targets"][:, -k:], scale_p=fp.logit_scale(model_p.cfg), scale_q=fq.logit_scale(model_q.cfg),
        chunk_size=chunk_size,
    )  # fmt: skip


class Divergence:
    """Two models' next-token distributions compared token by token on the same requests: per continuation
    token (log p(token), KL(p || q), cross-entropy H(p, q)), p the first scorer's model and q the second's
    (`losses.token_divergences`). The two must read the same token ids: one tokenizer, one vocabulary size, and
    both decoders or both encoder-decoders; batches are built and placed as the first scorer does."""

    def __init__(self, p: Scorer, q: Scorer, *, chunk_size: int = 1024):
        vocab_p = p.family.output_kernel(p.params).shape[0]
        vocab_q = q.family.output_kernel(q.params).shape[0]
        if vocab_p != vocab_q or p.family.encoder_decoder != q.family.encoder_decoder:
            raise ValueError(
                f"the two models do not read the same tokens (vocabularies {vocab_p} and {vocab_q}, "
                f"{'encoder-decoder' if p.family.encoder_decoder else 'decoder'} and "
                f"{'encoder-decoder' if q.family.encoder_decoder else 'decoder'})"
            )
        self.p, self.q = p, q
        self._fn = jax.jit(
            functools.partial(_divergences, p.model, q.model, chunk_size=int(chunk_size)), static_argnames="k"
        )

    def token_divergences(
        self, requests: Sequence[TokenPair], progress: Callable[[int], None] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(log p [n], KL(p || q) [n], H(p, q) [n]) per request, n = len(continuation), in request order."""

        def run(rows: Sequence[TokenPair]) -> list[Any]:
            return self.p.apply(rows, lambda placed, k: self._fn(self.p.params, self.q.params, placed, k=k))

        return self.p.batched(requests, run, progress)


def rolling_windows(tokens: Sequence[int], prefix_id: int, max_length: int) -> Iterator[TokenPair]:
    """Disjoint (context, continuation) windows covering every token of `tokens` once: the first predicts up
    to `max_length` tokens from the prefix token; each next one predicts the following up to `max_length`
    tokens with as many earlier tokens as context as the window has room for (`max_length` inputs in all)."""
    tokens = list(tokens)
    done = 0
    while done < len(tokens):
        end = min(len(tokens), done + max_length)
        if done == 0:
            yield [prefix_id], tokens[:end]
        else:
            context_start = max(0, end - max_length - 1)
            yield tokens[context_start:done], tokens[done:end]
        done = end


class TextModel:
    """Text-level likelihoods (module docstring): a `Scorer` and the tokenizer's codec."""

    def __init__(self, scorer: Scorer, codec: Any, *, add_special_tokens: bool | None = None):
        self.scorer, self.codec = scorer, codec
        self.encoder_decoder = scorer.family.encoder_decoder
        self.add_special_tokens = add_special_tokens  # None: the tokenizer's own default (BOS for Cohere)
        self.eot_id = int(codec.eos_ids[0]) if codec.eos_ids else int(scorer.model.cfg.eos_id)
        bos = codec.encode(chat_template.BOS, False) if codec.has_cohere_chat_tokens else []
        self.bos_id = int(bos[0]) if len(bos) == 1 else None
        self.prefix_id = self.bos_id if self.bos_id is not None else self.eot_id

    @classmethod
    def from_checkpoint(
        cls, source: str, model_config: Any, data_config: Any, mesh: Mesh | None, rules: Any, *,
        tokenizer: str = "", batch_size: int = 32, max_length: int = 0, field: str = "",
    ) -> TextModel:  # fmt: skip
        """Any checkpoint the project reads (`pretrained.load_inference_model`) with its tokenizer, on `mesh`."""
        loaded = pretrained.load_inference_model(
            source, model_config, data_config, mesh, rules, tokenizer=tokenizer, field=field
        )
        scorer = Scorer(
            loaded.model, loaded.params, mesh=mesh, rules=rules, pad_id=loaded.codec.pad_id,
            batch_size=batch_size, max_length=max_length,
        )  # fmt: skip
        return cls(scorer, loaded.codec)

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    def tok_encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        if add_special_tokens is None:
            add_special_tokens = True if self.add_special_tokens is None else self.add_special_tokens
            if self.bos_id is not None and text.startswith(chat_template.BOS):
                add_special_tokens = False  # the text carries its own BOS (a chat-formatted prompt)
        ids = self.codec.encode(text, add_special_tokens)
        seqio_eos = getattr(getattr(self.codec, "vocab", None), "eos_id", None)
        if self.encoder_decoder and add_special_tokens and seqio_eos is not None:
            ids = ids + [int(seqio_eos)]  # as an HF T5 tokenizer ends encoder inputs (and the SFT rows were)
        return ids

    def embed(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """[len(texts), embed] float32 text embeddings: mean-pooled final hidden states
        (`Scorer.mean_hidden_states`) of each text encoded with the tokenizer's special tokens."""
        return self.scorer.mean_hidden_states([self.tok_encode(t) for t in texts], progress)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_id:
                return cont[:1], cont[1:]
            return [self.prefix_id], cont
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if self.encoder_decoder:
            return self.tok_encode(context), self.tok_encode(continuation, add_special_tokens=False)
        whole = self.tok_encode(context + continuation)
        context_ids = self.tok_encode(context)
        return context_ids, whole[len(context_ids) :]

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], progress: Callable[[int], None] | None = None
    ) -> list[tuple[float, bool]]:
        """(log p(continuation | context), greedy) per (context, continuation) text pair."""
        return self.scorer.loglikelihood([self.encode_pair(c, t) for c, t in requests], progress)

    def token_scores(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> list[TokenScores]:
        """Each text's token ids and per-token log-probs over rolling windows (module docstring)."""
        windows, owners, ids = [], [], []
        for i, text in enumerate(texts):
            tokens = self.tok_encode(text)
            ids.append(np.asarray(tokens, np.int64))
            for window in rolling_windows(tokens, self.prefix_id, self.max_length):
                windows.append(window)
                owners.append(i)
        per_text: list[list[np.ndarray]] = [[] for _ in texts]
        for owner, (logp, _) in zip(owners, self.scorer.token_log_probs(windows, progress), strict=True):
            per_text[owner].append(np.asarray(logp, np.float64))
        return [
            TokenScores(ids[i], np.concatenate(parts) if parts else np.zeros((0,), np.float64))
            for i, parts in enumerate(per_text)
        ]

    def loglikelihood_rolling(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> list[float]:
        """Σ log p of every token of each text (rolling windows)."""
        return [float(np.sum(s.log_probs)) for s in self.token_scores(texts, progress)]
