"""Losses as small pure functions over arrays. Logits are fp32 [batch, len, vocab]."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def token_log_probs(logits: Array, targets: Array) -> Array:
    """log p(target) per token. logits [batch, len, vocab] fp32, targets [batch, len] int -> [batch, len]."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return target_logits - log_z


def cross_entropy(
    logits: Array, targets: Array, weights: Array, z_loss: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """Weighted next-token cross-entropy, mean over weighted tokens, with optional z-loss.

    z-loss (PaLM, t5x): `z_loss * log(Z)^2` per token keeps the softmax normaliser near 1.
    Returns (loss, aux) with the sums needed to combine microbatches exactly: aux["loss_sum"] and
    aux["weight_sum"] (so accumulation averages over tokens, not over microbatches).
    """
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, len]
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = log_z - target_logits
    total = nll + z_loss * jnp.square(log_z) if z_loss else nll
    weight_sum = jnp.sum(weights)
    denom = jnp.maximum(weight_sum, 1.0)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    aux = {
        "loss_sum": jnp.sum(total * weights),
        "nll_sum": jnp.sum(nll * weights),
        "z_loss_sum": jnp.sum(jnp.square(log_z) * weights),
        "correct_sum": jnp.sum(correct * weights),
        "weight_sum": weight_sum,
    }
    return jnp.sum(total * weights) / denom, aux


def per_group_sums(nll: Array, weights: Array, group_ids: Array, num_groups: int) -> tuple[Array, Array]:
    """Sum of weighted per-token losses and of weights per group id (e.g. language): two [num_groups] arrays."""
    w = weights.astype(jnp.float32).reshape(-1)
    ids = group_ids.reshape(-1)
    loss_sums = jax.ops.segment_sum(nll.reshape(-1) * w, ids, num_segments=num_groups)
    weight_sums = jax.ops.segment_sum(w, ids, num_segments=num_groups)
    return loss_sums, weight_sums


# ------------------------------------------------------------------------------------------------------------
# Fused output projection + cross-entropy
# ------------------------------------------------------------------------------------------------------------


def linear_cross_entropy(
    hidden: Array,
    kernel: Array,
    targets: Array,
    weights: Array,
    *,
    logit_scale: float = 1.0,
    z_loss: float = 0.0,
    chunk_size: int = 1024,
) -> dict[str, Array]:
    """Cross-entropy of `logits = (hidden @ kernel.T) * logit_scale` without ever holding all the logits.

    hidden [..., embed] (the final-norm state), kernel [vocab, embed] (the tied embedding or lm_head), targets
    and weights [...]. Tokens are processed `chunk_size` at a time: the forward keeps only each token's
    log-normaliser, and the backward recomputes one chunk of logits at a time and turns it into gradients
    (softmax - onehot) on the spot. Peak memory is O(chunk_size x vocab) instead of O(tokens x vocab) — at
    Aya's 256k vocabulary and 8k context the full fp32 logits of one sequence are 8 GB — and on CPU it is also
    faster: no [tokens, vocab] tensor is written, transposed or scattered into.

    Returns {"loss_sum", "nll_sum", "z_loss_sum", "correct_sum", "weight_sum"} (scalars, the same keys as
    `cross_entropy`'s aux) and the per-token {"nll", "correct"} [...]. Only "loss_sum" is differentiable
    (w.r.t. hidden and kernel); the rest are statistics.
    """
    lead = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1).astype(jnp.int32)
    w = weights.reshape(-1).astype(jnp.float32)
    loss_sum, nll, correct, log_z = _linear_ce(
        h, kernel, t, w, float(logit_scale), float(z_loss), int(chunk_size)
    )
    nll, correct, log_z = jax.lax.stop_gradient((nll, correct, log_z))
    return {
        "loss_sum": loss_sum,
        "nll_sum": jnp.sum(nll * w),
        "z_loss_sum": jnp.sum(jnp.square(log_z) * w),
        "correct_sum": jnp.sum(correct * w),
        "weight_sum": jnp.sum(w),
        "nll": nll.reshape(lead),
        "correct": correct.reshape(lead),
    }


def _chunked(x: Array, chunk: int) -> Array:
    """[n, ...] -> [n_chunks, chunk, ...], zero-padded at the end."""
    n = x.shape[0]
    pad = (-n) % chunk
    if pad:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape(-1, chunk, *x.shape[1:])


def _chunk_logits(h: Array, kernel: Array, scale: float) -> Array:
    # [chunk, embed] x [vocab, embed] -> [chunk, vocab] fp32; accumulate in fp32 whatever the compute dtype.
    return jnp.einsum("ce,ve->cv", h, kernel.astype(h.dtype), preferred_element_type=jnp.float32) * scale


def _linear_ce_forward(h, kernel, t, w, scale, z_loss, chunk):
    n = h.shape[0]
    chunk = min(chunk, n)

    def body(_, xs):
        hc, tc = xs
        logits = _chunk_logits(hc, kernel, scale)
        log_z = jax.nn.logsumexp(logits, axis=-1)
        # The target logit by comparison with an iota, not a gather: no scatter in anyone's backward.
        hit = jnp.arange(logits.shape[-1], dtype=jnp.int32)[None, :] == tc[:, None]
        target_logit = jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)
        correct = (jnp.argmax(logits, axis=-1) == tc).astype(jnp.float32)
        return None, (log_z, target_logit, correct)

    _, (log_z, target_logit, correct) = jax.lax.scan(body, None, (_chunked(h, chunk), _chunked(t, chunk)))
    log_z, target_logit, correct = (x.reshape(-1)[:n] for x in (log_z, target_logit, correct))
    nll = log_z - target_logit
    loss_sum = jnp.sum(w * (nll + z_loss * jnp.square(log_z))) if z_loss else jnp.sum(w * nll)
    return (loss_sum, nll, correct, log_z), (h, kernel, t, w, log_z)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _linear_ce(h, kernel, t, w, scale, z_loss, chunk):
    return _linear_ce_forward(h, kernel, t, w, scale, z_loss, chunk)[0]


def _linear_ce_fwd(h, kernel, t, w, scale, z_loss, chunk):
    return _linear_ce_forward(h, kernel, t, w, scale, z_loss, chunk)


def _linear_ce_bwd(scale, z_loss, chunk, residuals, cotangents):
    h, kernel, t, w, log_z = residuals
    g = cotangents[0]  # only loss_sum is differentiable
    n = h.shape[0]
    chunk = min(chunk, n)
    coef = g * w  # [n]: d loss_sum / d (per-token loss)

    def body(d_kernel, xs):
        hc, tc, cc, zc = xs
        logits = _chunk_logits(hc, kernel, scale)
        probs = jnp.exp(logits - zc[:, None])
        hit = jnp.arange(logits.shape[-1], dtype=jnp.int32)[None, :] == tc[:, None]
        # d(nll)/d logits = softmax - onehot; d(z * log_z^2)/d logits = 2 z log_z softmax.
        d_logits = probs * (1.0 + 2.0 * z_loss * zc)[:, None] - hit.astype(jnp.float32)
        d_logits = (d_logits * (cc * scale)[:, None]).astype(hc.dtype)  # [chunk, vocab]
        d_h = jnp.einsum("cv,ve->ce", d_logits, kernel.astype(hc.dtype), preferred_element_type=jnp.float32)
        d_kernel = d_kernel + jnp.einsum("cv,ce->ve", d_logits, hc, preferred_element_type=jnp.float32)
        return d_kernel, d_h.astype(hc.dtype)

    d_kernel0 = jnp.zeros(kernel.shape, jnp.float32)
    xs = (_chunked(h, chunk), _chunked(t, chunk), _chunked(coef, chunk), _chunked(log_z, chunk))
    d_kernel, d_h = jax.lax.scan(body, d_kernel0, xs)
    d_h = d_h.reshape(-1, h.shape[-1])[:n]
    return d_h, d_kernel.astype(kernel.dtype), None, None


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)


# ------------------------------------------------------------------------------------------------------------
# Preference losses: Bradley–Terry and DPO
# ------------------------------------------------------------------------------------------------------------


def _weighted_mean(x: Array, weights: Array | None) -> Array:
    """Mean of `x` [batch] over the rows with weight > 0 (all rows when `weights` is None); 0 when none."""
    if weights is None:
        return jnp.mean(x)
    w = weights.astype(jnp.float32)
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def pairwise_accuracy(better: Array, worse: Array, weights: Array | None = None) -> Array:
    """Fraction of pairs ranked right: 1 when better > worse, 1/2 on a tie (a constant scorer gets exactly
    chance, 0.5), 0 otherwise; weighted mean over pairs."""
    hit = jnp.where(better > worse, 1.0, jnp.where(better == worse, 0.5, 0.0))
    return _weighted_mean(hit, weights)


def bradley_terry_loss(
    r_chosen: Array, r_rejected: Array, weights: Array | None = None
) -> tuple[Array, Array]:
    """Reward-model loss (InstructGPT, arXiv 2203.02155; docs/objectives.md): mean over pairs of
    `-log σ(r_chosen - r_rejected)`, the negative log-likelihood of the preference under the Bradley–Terry
    model P(c ≻ r) = σ(r_c - r_r).

    r_chosen, r_rejected: [pairs] scores; `weights` [pairs] (0 drops padding pairs). Returns (loss, pairwise
    accuracy). `softplus(-x)` is `-log σ(x)` without overflow for large |x|.
    """
    margin = r_chosen.astype(jnp.float32) - r_rejected.astype(jnp.float32)
    loss = _weighted_mean(jax.nn.softplus(-margin), weights)
    return loss, pairwise_accuracy(r_chosen, r_rejected, weights)


DPO_LOSS_TYPES = ("sigmoid", "ipo")


def dpo_loss(
    pi_chosen: Array,
    pi_rejected: Array,
    ref_chosen: Array,
    ref_rejected: Array,
    beta: float,
    label_smoothing: float = 0.0,
    *,
    loss_type: str = "sigmoid",
    weights: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Direct Preference Optimisation (Rafailov et al. 2023, arXiv 2305.18290; docs/objectives.md) on sequence
    log-probabilities [pairs].

    With the implicit rewards `r_c = β (log π(c) - log π_ref(c))`, `r_r = β (log π(r) - log π_ref(r))` and
    `h = (log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))`:

      sigmoid  -(1 - ε) log σ(β h) - ε log σ(-β h)     ε = label_smoothing; ε = 0 is DPO, ε > 0 is
               conservative DPO (cDPO, Mitchell 2023: the label is flipped with probability ε), as TRL's
               `label_smoothing`
      ipo      (h - 1 / (2β))²                          IPO (Azar et al. 2023), as TRL's `loss_type="ipo"`
                                                        (TRL feeds IPO per-token mean log-probs; pass those
                                                        if you want its exact objective)

    The reference log-probs carry no gradient. Mean over pairs (weighted by `weights`, 0 drops a pair).
    Metrics (weighted means): rewards/chosen, rewards/rejected, rewards/margin (= r_c - r_r),
    rewards/accuracy (r_c > r_r, ties 1/2), logps/chosen, logps/rejected (the policy's).
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type: {loss_type!r} is not one of {', '.join(DPO_LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing: must be in [0, 0.5), got {label_smoothing}")
    pi_c, pi_r = pi_chosen.astype(jnp.float32), pi_rejected.astype(jnp.float32)
    ref_c = jax.lax.stop_gradient(ref_chosen.astype(jnp.float32))
    ref_r = jax.lax.stop_gradient(ref_rejected.astype(jnp.float32))
    chosen_ratio, rejected_ratio = pi_c - ref_c, pi_r - ref_r
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        per_pair = (1.0 - label_smoothing) * jax.nn.softplus(-beta * h) + label_smoothing * jax.nn.softplus(
            beta * h
        )
    else:
        per_pair = jnp.square(h - 1.0 / (2.0 * beta))
    r_c = jax.lax.stop_gradient(beta * chosen_ratio)
    r_r = jax.lax.stop_gradient(beta * rejected_ratio)
    metrics = {
        "rewards/chosen": _weighted_mean(r_c, weights),
        "rewards/rejected": _weighted_mean(r_r, weights),
        "rewards/margin": _weighted_mean(r_c - r_r, weights),
        "rewards/accuracy": pairwise_accuracy(r_c, r_r, weights),
        "logps/chosen": _weighted_mean(jax.lax.stop_gradient(pi_c), weights),
        "logps/rejected": _weighted_mean(jax.lax.stop_gradient(pi_r), weights),
    }
    return _weighted_mean(per_pair, weights), metrics


def _per_token_chunks(
    score, hidden: Array, kernel: Array, targets: Array, logit_scale: float, chunk_size: int, *, remat: bool
):
    """`score(logits [chunk, vocab] fp32, targets [chunk] int32) -> tuple of [chunk] arrays` over every token of
    hidden [batch, len, embed] / targets [batch, len], `chunk_size` tokens at a time inside a `jax.lax.scan`
    (`logits = hidden @ kernel.T * logit_scale`, kernel [vocab, embed]): one [chunk, vocab] block of logits
    exists at a time, never [batch, len, vocab]. `remat` rematerialises the body (`jax.checkpoint`) so that a
    gradient through the scan also holds one block at a time (a no-op without one). Returns the tuple with
    each array [batch, len]."""
    batch, length = targets.shape
    h = hidden.reshape(batch * length, hidden.shape[-1])
    t = targets.reshape(-1).astype(jnp.int32)
    n = h.shape[0]
    chunk = min(int(chunk_size), n)

    def body(hc: Array, tc: Array):
        return score(_chunk_logits(hc, kernel, float(logit_scale)), tc)

    body = jax.checkpoint(body) if remat else body
    _, out = jax.lax.scan(lambda _, xs: (None, body(*xs)), None, (_chunked(h, chunk), _chunked(t, chunk)))
    return tuple(x.reshape(-1)[:n].reshape(batch, length) for x in out)


def _target_log_prob(logits: Array, log_z: Array, tc: Array) -> Array:
    return jnp.take_along_axis(logits, tc[:, None], axis=-1)[:, 0] - log_z


def completion_log_probs(
    hidden: Array,
    kernel: Array,
    targets: Array,
    weights: Array,
    *,
    logit_scale: float = 1.0,
    chunk_size: int = 1024,
) -> Array:
    """Differentiable sequence log-probabilities `Σ_t w_t log p(target_t)` per row [batch] (DPO's log π(y|x)
    over the completion tokens), from the final hidden state [batch, len, embed] and the output kernel
    [vocab, embed] (`logits = hidden @ kernel.T * logit_scale`).

    Tokens go through the output projection `chunk_size` at a time inside a scan whose body is
    rematerialised (`jax.checkpoint`): forward and backward hold one [chunk, vocab] block of logits at a time,
    never [batch, len, vocab] (at Aya's 256k vocabulary that is the difference between fitting and not).
    """

    def score(logits: Array, tc: Array) -> tuple[Array]:
        # The target logit by comparison with an iota, not a gather: no scatter in the backward.
        hit = jnp.arange(logits.shape[-1], dtype=jnp.int32)[None, :] == tc[:, None]
        return (jnp.sum(jnp.where(hit, logits, 0.0), axis=-1) - jax.nn.logsumexp(logits, axis=-1),)

    (logp,) = _per_token_chunks(score, hidden, kernel, targets, logit_scale, chunk_size, remat=True)
    return jnp.sum(logp * weights.astype(jnp.float32), axis=-1)


def token_log_probs_and_greedy(
    hidden: Array, kernel: Array, targets: Array, *, logit_scale: float = 1.0, chunk_size: int = 1024
) -> tuple[Array, Array]:
    """(log p(target_t) [batch, len] fp32, whether target_t is the argmax of its distribution [batch, len]) from
    the final hidden states [batch, len, embed] and the output kernel [vocab, embed]: what likelihood evaluation
    reads (lm-evaluation-harness's `(logprob, is_greedy)`). Like `completion_log_probs`, `chunk_size` tokens at
    a time, so [batch, len, vocab] logits never exist at once (no gradient here, so no remat). The argmax takes
    the first of equal maxima, as torch.argmax does."""

    def score(logits: Array, tc: Array) -> tuple[Array, Array]:
        greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32) == tc
        return _target_log_prob(logits, jax.nn.logsumexp(logits, axis=-1), tc), greedy

    return _per_token_chunks(score, hidden, kernel, targets, logit_scale, chunk_size, remat=False)


def token_log_probs_and_top(
    hidden: Array, kernel: Array, targets: Array, *, k: int, logit_scale: float = 1.0, chunk_size: int = 1024
) -> tuple[Array, Array, Array]:
    """(log p(target_t) [batch, len] fp32, the k largest log-probs of the distribution at t [batch, len, k] fp32
    in descending order, their token ids [batch, len, k]) — what an OpenAI-style `logprobs` answer reports for
    an echoed prompt (aya_jax/openai_server.py). `chunk_size` tokens at a time, as `token_log_probs_and_greedy`;
    ties keep the lower id first, as `lax.top_k` does."""

    def score(logits: Array, tc: Array) -> tuple[Array, ...]:
        log_z = jax.nn.logsumexp(logits, axis=-1)
        values, ids = top_k_by_argmax(logits, k)
        return (_target_log_prob(logits, log_z, tc), *(values - log_z[:, None]).T, *ids.T)

    out = _per_token_chunks(score, hidden, kernel, targets, logit_scale, chunk_size, remat=False)
    return out[0], jnp.stack(out[1 : 1 + k], axis=-1), jnp.stack(out[1 + k :], axis=-1)


def top_k_by_argmax(logits: Array, k: int) -> tuple[Array, Array]:
    """The k largest values of each row of logits [n, vocab] in descending order and their ids (int32), ties
    lower id first — what `lax.top_k` returns — as k passes of max/argmax, each masking the id it found. For the
    few alternatives an API reports (OpenAI allows at most 20) this is linear in the vocabulary and stays a
    reduction over a vocabulary sharded across devices; `lax.top_k` there gathers the whole [n, vocab] block
    onto every device and runs XLA:CPU's TopK on it (measured: 50 s for 1024 tokens x 256k vocabulary on an
    8-device CPU mesh, against ~1 s this way)."""
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    values, found = [], []
    for _ in range(int(k)):
        best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        values.append(jnp.max(logits, axis=-1))
        found.append(best)
        logits = jnp.where(ids == best[..., None], -jnp.inf, logits)
    return jnp.stack(values, axis=-1), jnp.stack(found, axis=-1)


def token_log_probs_and_entropy(
    hidden: Array, kernel: Array, targets: Array, *, logit_scale: float = 1.0, chunk_size: int = 1024
) -> tuple[Array, Array]:
    """(log p(target_t) [batch, len] fp32, entropy of the distribution at t [batch, len] fp32) from the final
    hidden states [batch, len, embed] and the output kernel [vocab, embed] (`logits = hidden @ kernel.T *
    logit_scale`; pass `logit_scale / temperature` for the distribution sampling at that temperature draws
    from): what RL scoring reads (aya_jax/training/rollouts.py `sequence_log_probs`). The entropy is
    `H = log Z - Σ_v p_v logit_v`. Like `token_log_probs_and_greedy`, `chunk_size` tokens at a time, so
    [batch, len, vocab] logits never exist at once. Differentiable; the scan body is rematerialised as in
    `completion_log_probs`, so a gradient also holds one [chunk, vocab] block at a time."""

    def score(logits: Array, tc: Array) -> tuple[Array, Array]:
        log_z = jax.nn.logsumexp(logits, axis=-1)
        probs = jax.nn.softmax(logits, axis=-1)
        return _target_log_prob(logits, log_z, tc), log_z - jnp.sum(probs * logits, axis=-1)

    return _per_token_chunks(score, hidden, kernel, targets, logit_scale, chunk_size, remat=True)


def token_divergences(
    hidden_p: Array, kernel_p: Array, hidden_q: Array, kernel_q: Array, targets: Array, *,
    scale_p: float = 1.0, scale_q: float = 1.0, chunk_size: int = 1024,
) -> tuple[Array, Array, Array]:  # fmt: skip
    """Two models' next-token distributions p and q at the same positions of the same tokens (their final
    hidden states [batch, len, embed] and output kernels [vocab, embed], one shared vocabulary) ->
    (log p(target_t), KL(p_t || q_t) = Σ_v p_v (log p_v - log q_v), cross-entropy H(p_t, q_t) = -Σ_v p_v log q_v),
    each [batch, len] fp32 (H(p, q) = H(p) + KL(p || q)). What prompt prioritisation reads (aya_jax/evaluation/
    prompt_priority.py). `chunk_size` tokens at a time: one [chunk, vocab] block of each model's logits exists at
    once."""
    batch, length = targets.shape
    hp = hidden_p.reshape(batch * length, hidden_p.shape[-1])
    hq = hidden_q.reshape(batch * length, hidden_q.shape[-1])
    t = targets.reshape(-1).astype(jnp.int32)
    n = hp.shape[0]
    chunk = min(int(chunk_size), n)

    def body(_, xs):
        hpc, hqc, tc = xs
        log_p = jax.nn.log_softmax(_chunk_logits(hpc, kernel_p, float(scale_p)), axis=-1)
        log_q = jax.nn.log_softmax(_chunk_logits(hqc, kernel_q, float(scale_q)), axis=-1)
        probs = jnp.exp(log_p)
        cross = -jnp.sum(probs * log_q, axis=-1)
        kl = jnp.sum(probs * (log_p - log_q), axis=-1)
        return None, (jnp.take_along_axis(log_p, tc[:, None], axis=-1)[:, 0], kl, cross)

    _, out = jax.lax.scan(body, None, (_chunked(hp, chunk), _chunked(hq, chunk), _chunked(t, chunk)))
    return tuple(x.reshape(-1)[:n].reshape(batch, length) for x in out)


# ------------------------------------------------------------------------------------------------------------
# RLOO
# ------------------------------------------------------------------------------------------------------------


def _std(x: Array) -> Array:
    """Unbiased standard deviation (ddof = 1, torch's default, as TRL normalises with)."""
    n = x.size
    return jnp.sqrt(jnp.sum(jnp.square(x - jnp.mean(x))) / max(n - 1, 1))


def shape_scores(
    scores: Array,
    ended_with_eos: Array,
    *,
    missing_eos_penalty: float = 0.0,
    normalize: bool = False,
    clip: float = 0.0,
) -> Array:
    """Task scores [n] -> the scores RLOO optimises, in TRL's order: subtract `missing_eos_penalty` where a
    completion did not end with EOS; standardise over the batch when `normalize` (unbiased std + 1e-8);
    clip to [-clip, clip] when `clip` > 0 (TRL clips only normalised scores; here the clip applies either way)."""
    scores = scores.astype(jnp.float32)
    if missing_eos_penalty:
        scores = scores - missing_eos_penalty * (~ended_with_eos.astype(bool)).astype(jnp.float32)
    if normalize:
        scores = (scores - jnp.mean(scores)) / (_std(scores) + 1e-8)
    if clip:
        scores = jnp.clip(scores, -clip, clip)
    return scores


def rloo_advantages(rewards: Array) -> Array:
    """Leave-one-out advantages [prompts, k] of rewards [prompts, k] (the k samples of a prompt on the last
    axis): `A_i = R_i - (1/(k-1)) Σ_{j≠i} R_j`, which equals `k/(k-1) (R_i - mean_j R_j)`."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(
            f"rloo_advantages: need k >= 2 samples per prompt, got rewards of shape {rewards.shape}"
        )
    baseline = (jnp.sum(rewards, axis=-1, keepdims=True) - rewards) / (k - 1)
    return rewards - baseline


def normalize_advantages(advantages: Array) -> Array:
    """Standardise over the whole batch: `(A - mean A) / (std A + 1e-8)` (unbiased std, as TRL)."""
    return (advantages - jnp.mean(advantages)) / (_std(advantages) + 1e-8)


def rloo_policy_loss(
    log_probs: Array, old_log_probs: Array, advantages: Array, clip_eps: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """REINFORCE on whole completions with an optional PPO-style clip of the *sequence* ratio.

    log_probs [n]: Σ_t log π(y_t | ...) of each completion under the params being trained; old_log_probs [n]:
    the same under the params that sampled them (no gradient); advantages [n] (no gradient). With
    `ratio = exp(log_probs - old_log_probs)`:

        loss = mean_i max(-A_i ratio_i, -A_i clip(ratio_i, 1 - eps, 1 + eps))      (eps = clip_eps > 0)
        loss = mean_i -A_i ratio_i                                                  (clip_eps = 0)

    On fresh samples the ratio is 1 and the gradient is `-mean_i A_i ∇ Σ_t log π(y_i,t)`: the RLOO estimator
    (arXiv 2402.14740; docs/objectives.md). Reusing the samples for more updates, the clip stops a completion's
    probability from moving more than a factor 1 ± eps from the sampler's. Metrics: the clipped fraction, the
    mean ratio, and the k3 estimate of KL(old || new) (`E[(r - 1) - log r]`).
    """
    advantages = jax.lax.stop_gradient(advantages.astype(jnp.float32))
    log_ratio = log_probs - jax.lax.stop_gradient(old_log_probs)
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    if clip_eps:
        clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
        per_row = jnp.maximum(unclipped, clipped)
        clip_fraction = jnp.mean((clipped > unclipped).astype(jnp.float32))
    else:
        per_row, clip_fraction = unclipped, jnp.zeros((), jnp.float32)
    ratio_sg = jax.lax.stop_gradient(ratio)
    metrics = {
        "clip_fraction": clip_fraction,
        "ratio": jnp.mean(ratio_sg),
        "approx_kl_old_new": jnp.mean((ratio_sg - 1.0) - jax.lax.stop_gradient(log_ratio)),
    }
    return jnp.mean(per_row), metrics
