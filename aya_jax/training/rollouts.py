"""Rollouts: k sampled completions per prompt from the current policy, and their log-probs under any params.

    ro = sample(model, params, prompt_tokens, prompt_start, k, rng, sampling_params, pad_id=pad)   # jitted
    sums, token_logps, entropy = sequence_log_probs(model, params, ro)                            # jitted

`sample` repeats each left-padded prompt k times (row `i * k + j` is sample j of prompt i, so rewards reshape
to [prompts, k]) and decodes all rows in one `sampling.generate_from_prompt` call — inside the caller's jit and
mesh, with row ids `0..n-1`, so the draws do not depend on how the batch is sharded. The result is laid out for
one training forward pass over whole rows:

    slot        0 .. P-1                         P .. P+L-1
    tokens      [pad .. pad, prompt]             [completion (EOS included), pad ..]
    segment_ids 0 on padding, 1 on real tokens   1 up to the completion's end, then 0
    positions   slot - start (0 on padding)      continues the prompt's count
    completion_mask                              1 on completion tokens (EOS included), else 0

These are exactly the positions and visibility the KV-cache decoder used, so `sequence_log_probs` of the
sampling params recomputes the sampler's own log-probs (`sample_log_probs`, at temperature 1) up to float
rounding. `sequence_log_probs` gives, per row, the sum of log p(completion token | prefix) over the completion,
the per-token values ([n, P+L], zero outside the completion) and the mean per-token entropy of the policy over
the completion — differentiable in `params` (RLOO's loss, DPO's sequence log-probs).

Only the completion's logits are formed (hidden states of slots P-1 .. P+L-2 through the output projection),
never the prompt's, and never all at once: `sequence_log_probs` goes through
`losses.token_log_probs_and_entropy`, a chunk of tokens at a time (fp32 logits [chunk, vocab], not
[n, L, vocab]). The training loss needs only the sums: `sequence_log_prob_sums` computes them through
`losses.completion_log_probs`, a chunk of tokens at a time with the logits recomputed in the backward pass,
so the update never holds [n, L, vocab] at all either.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from aya_jax import losses, sampling
from aya_jax.models import cohere

Array = jax.Array


@struct.dataclass
class Rollouts:
    tokens: Array  # [n, P+L] int32: left-padded prompt, then the completion, then pad_id
    positions: Array  # [n, P+L] int32
    segment_ids: Array  # [n, P+L] int32: 1 on real tokens, 0 on padding
    completion_mask: Array  # [n, P+L] float32: 1 on completion tokens (EOS included)
    prompt_index: Array  # [n] int32: which prompt of the batch the row continues (row // k)
    lengths: Array  # [n] int32: completion tokens, the stop token included
    ended_with_eos: Array  # [n] bool: stopped by an EOS / stop sequence (False: hit max_new_tokens)
    sample_log_probs: Array  # [n] float32: the sampler's sum of log p(token | prefix) over the completion
    prompt_len: int = struct.field(pytree_node=False, default=0)  # P

    @property
    def completion_tokens(self) -> Array:
        """[n, L]: the completion slots (pad after a row's stop)."""
        return self.tokens[:, self.prompt_len :]


@functools.partial(jax.jit, static_argnames=("model", "k", "sampling_params", "pad_id"))
def sample(
    model: cohere.CohereLM,
    params: Any,
    prompt_tokens: Array,
    prompt_start: Array,
    k: int,
    rng: Array,
    sampling_params: sampling.SamplingParams,
    pad_id: int = 0,
) -> Rollouts:
    """k completions of each left-padded prompt `prompt_tokens` [B, P] (real tokens from `prompt_start` [B])
    -> Rollouts of n = B * k rows. Call under `with mesh, nn.logical_axis_rules(rules)` for a sharded model."""
    batch, prompt_len = prompt_tokens.shape
    tokens = jnp.repeat(prompt_tokens, k, axis=0)  # [n, P]: row i * k + j is prompt i
    start = jnp.repeat(prompt_start.astype(jnp.int32), k, axis=0)
    n = batch * k
    out = sampling.generate_from_prompt(
        model,
        params,
        tokens,
        start,
        rng,
        sampling_params,
        row_ids=jnp.arange(n, dtype=jnp.int32),
        pad_id=pad_id,
    )
    new = sampling_params.max_new_tokens
    slots = jnp.arange(prompt_len + new, dtype=jnp.int32)[None, :]  # [1, P+L]
    completion = (slots >= prompt_len) & (slots < prompt_len + out.lengths[:, None])
    real = (slots >= start[:, None]) & (slots < prompt_len + out.lengths[:, None])
    return Rollouts(
        tokens=jnp.concatenate([tokens, out.tokens], axis=1),
        positions=jnp.where(real, slots - start[:, None], 0),
        segment_ids=real.astype(jnp.int32),
        completion_mask=completion.astype(jnp.float32),
        prompt_index=jnp.arange(n, dtype=jnp.int32) // k,
        lengths=out.lengths,
        ended_with_eos=out.stopped,
        sample_log_probs=jnp.sum(out.log_probs, axis=1),
        prompt_len=prompt_len,
    )


def _completion_states(model: cohere.CohereLM, params: Any, rollouts: Rollouts) -> Array:
    """Final hidden states [n, L, embed] that predict the completion tokens: the state at slot t predicts the
    token at slot t + 1, so slots P-1 .. P+L-2."""
    hidden = model.apply(
        {"params": params},
        rollouts.tokens,
        rollouts.positions,
        rollouts.segment_ids,
        return_hidden=True,
    )  # [n, P+L, embed]
    return hidden[:, rollouts.prompt_len - 1 : -1]


@functools.partial(jax.jit, static_argnames=("model", "temperature"))
def sequence_log_probs(
    model: cohere.CohereLM, params: Any, rollouts: Rollouts, temperature: float = 1.0
) -> tuple[Array, Array, Array]:
    """(sums [n], token_logps [n, P+L], entropy [n]) of the rollouts' completions under `params`: the sum of
    log p(token | prefix) over each completion, the per-token values (0 outside the completion), and the mean
    per-token entropy of the model's distribution over the completion (0 for an empty one). `temperature`
    divides the logits first: the distribution that sampling at that temperature draws from (top-k/top-p
    aside), as TRL computes its policy and reference log-probs."""
    p = rollouts.prompt_len
    h = _completion_states(model, params, rollouts)  # [n, L, embed]
    kernel = cohere.output_kernel(params).astype(model.dtype)
    mask = rollouts.completion_mask[:, p:]
    token_logps, entropy_t = losses.token_log_probs_and_entropy(
        h, kernel, rollouts.tokens[:, p:], logit_scale=model.cfg.logit_scale / temperature
    )  # [n, L] each, a chunk of tokens at a time; entropy H = log Z - E_p[logit]
    token_logps = token_logps * mask
    count = jnp.sum(mask, axis=1)
    entropy = jnp.sum(entropy_t * mask, axis=1) / jnp.maximum(count, 1.0)
    full = jnp.concatenate([jnp.zeros_like(rollouts.completion_mask[:, :p]), token_logps], axis=1)
    return jnp.sum(token_logps, axis=1), full, entropy


@functools.partial(jax.jit, static_argnames=("model", "temperature", "chunk_size"))
def sequence_log_prob_sums(
    model: cohere.CohereLM, params: Any, rollouts: Rollouts, temperature: float = 1.0, chunk_size: int = 1024
) -> Array:
    """The `sums` of `sequence_log_probs` alone [n], differentiable, with the output projection fused into a
    chunked log-softmax (aya_jax/losses.py `completion_log_probs`): what the policy-gradient update uses."""
    p = rollouts.prompt_len
    return losses.completion_log_probs(
        _completion_states(model, params, rollouts),
        cohere.output_kernel(params).astype(model.dtype),
        rollouts.tokens[:, p:],
        rollouts.completion_mask[:, p:],
        logit_scale=model.cfg.logit_scale / temperature,
        chunk_size=chunk_size,
    )


def sampling_params(
    section: Any, eos_ids: tuple[int, ...], *, greedy: bool = False
) -> sampling.SamplingParams:
    """The sampling settings of a config section with temperature / top_k / top_p / max_new_tokens (dpo, rloo);
    `greedy` keeps only max_new_tokens."""
    return sampling.SamplingParams(
        max_new_tokens=int(section.max_new_tokens),
        temperature=0.0 if greedy else float(section.temperature),
        top_k=0 if greedy else int(section.top_k),
        top_p=1.0 if greedy else float(section.top_p),
        eos_ids=eos_ids,
    )


def roll(
    run: Any, model: Any, params: Any, prompts: Any, indices: Any, k: int, rng: Array,
    sampling_params: sampling.SamplingParams, *, pad_id: int,
) -> Rollouts:  # fmt: skip
    """`sample` of prompts `indices` of a PromptSet (training/prompt_sets.py) on the run's mesh: every host holds
    the same whole prompt batch (the same prompts and keys whatever the host count); the rows are sharded
    over every host's devices. Call inside `run.context()`."""
    tokens, start = prompts.batch(indices)
    return sample(model, params, run.global_rows(tokens), run.global_rows(start), k, rng, sampling_params,
                  pad_id=pad_id)  # fmt: skip
