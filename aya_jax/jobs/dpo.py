"""DPO: offline on preference pairs, then online iterative DPO with a reward model — Aya Expanse's preference
stage (SPEC §3).

The loss (aya_jax/losses.py `dpo_loss`), with sequence log-probabilities over the completion tokens (EOS
included) and β = `config.dpo.beta`:

    L = -log σ(β [(log π(c|x) - log π_ref(c|x)) - (log π(r|x) - log π_ref(r|x))])

(`label_smoothing` ε > 0: conservative DPO; `loss_type="ipo"`: IPO.) Two stages, one policy, one optimiser:

1. Offline: `config.dpo.offline_steps` steps on the (chosen, rejected) pairs of the `preference_pairs` task
   (`config.dpo.task`; by default the pairs built from the embedded default data: the real answer vs a real
   answer in another language, aya_jax/data/preference_default.py), reference = the SFT policy
   (`config.checkpoint.init_from`). One pair per row of the data: a data set with several rated completions
   per prompt should be written as its (best, worst) pair.
2. Online, `config.dpo.iterations` times (Aya Expanse: 3):
     a. sample `samples_per_prompt` (k) completions for each of `prompts_per_iteration` training prompts from
        the current policy (temperature T; aya_jax/training/rollouts.py, jitted on the training mesh)
     b. score every completion with the trained reward model (`config.dpo.reward_model`, the `reward` job's
        workdir; aya_jax/rewards.py `reward_model_scorer`), minus `missing_eos_penalty` for one that hit
        `max_new_tokens` without an EOS
     c. per prompt, the best-scored completion is chosen and the worst rejected; a prompt whose best and worst
        scores are within `min_score_gap` (all k tied, by default) gives no pair
     d. train `epochs_per_iteration` passes over the new pairs (shuffled, `global_batch_size` pairs a step)
   The reference of iteration t is the policy at its start (`reference = "iteration_start"`: iterative DPO as
   in Xu et al. 2023 and Yuan et al. 2024, where iteration t+1 starts from and is anchored to model t — the
   default here) or the fixed SFT policy (`reference = "sft"`). The Aya Expanse report does not say which;
   both are one config value apart.

Evaluation, before training (iteration 0 = the SFT policy), after the offline stage and after each online
iteration: `eval_samples` completions per held-out prompt (the default data's validation split; fixed seed,
temperature T) scored by the reward model (mean RM score), by the verifiable reward `config.dpo.verifiable_reward`
(aya_jax/rewards.py, e.g. `script`: the fraction of letters in the asked-for language's script), plus
KL(π || π_SFT) per completion (Monte-Carlo: Σ_t log π - log π_SFT over the sampled tokens, unbiased at
temperature 1), entropy, length and EOS rate. Logged to metrics.jsonl / TensorBoard with the DPO loss, implicit-reward accuracy and margin and the
chosen / rejected log-probs of every step; `dpo_progress.png` plots them.

Where this departs from the papers: the policy is trained in one optimiser run across stages (no optimiser
reset per iteration); online pairs are the policy's own samples re-laid out as right-padded rows (the same
tokens and positions the sampler used), so both stages share one jitted step; the reference's log-probs are
recomputed in every step instead of cached per pair.

Checkpoints: every `config.checkpoint.every` steps of the offline stage, at its end, and at the end of every
online iteration, with the stage, the offline data position and the iterations done. Rerunning the command
resumes; an online iteration interrupted midway (SIGTERM) restarts from its beginning — its prompts and
sampling keys are functions of the iteration, so it redoes exactly the same work. Policy, reference(s) and
reward model share one mesh and the config's sharding rules; memory per device is logged before the run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import NamedSharding

from aya_jax import checkpoint as ckpt_lib
from aya_jax import losses, metrics, optimizers, pretrained, rewards, sampling, sharding
from aya_jax.models import cohere
from aya_jax.training import loop as run_utils
from aya_jax.training import policy as policy_state
from aya_jax.training import prompt_sets, rollouts
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

QUICKSTART_HINT = "run the quickstart first: python -m aya_jax.main --config configs/quickstart.py"
REFERENCES = ("iteration_start", "sft")
PLOT = "dpo_progress.png"


class DpoConfigError(ValueError):
    """A config value that cannot work for DPO; raised before anything is loaded or compiled."""


# ============================================================================================================
# Config validation
# ============================================================================================================


def validate_config(config: Any) -> None:
    d = config.dpo
    if not float(d.beta) > 0:
        raise DpoConfigError(f"config.dpo.beta: must be > 0, got {d.beta}")
    if not 0.0 <= float(d.label_smoothing) < 0.5:
        raise DpoConfigError(f"config.dpo.label_smoothing: must be in [0, 0.5), got {d.label_smoothing}")
    if d.loss_type not in losses.DPO_LOSS_TYPES:
        raise DpoConfigError(
            f"config.dpo.loss_type: {d.loss_type!r} is not one of {', '.join(losses.DPO_LOSS_TYPES)}"
        )
    if d.reference not in REFERENCES:
        raise DpoConfigError(f"config.dpo.reference: {d.reference!r} is not one of {', '.join(REFERENCES)}")
    for field in ("offline_steps", "iterations"):
        if int(d[field]) < 0:
            raise DpoConfigError(f"config.dpo.{field}: must be >= 0, got {d[field]}")
    if int(d.offline_steps) + int(d.iterations) == 0:
        raise DpoConfigError("config.dpo: offline_steps and iterations are both 0: nothing to train")
    for field in ("prompts_per_iteration", "epochs_per_iteration", "max_new_tokens", "eval_samples"):
        if int(d[field]) < 1:
            raise DpoConfigError(f"config.dpo.{field}: must be >= 1, got {d[field]}")
    if int(d.samples_per_prompt) < 2:
        raise DpoConfigError(
            f"config.dpo.samples_per_prompt: must be >= 2 (a best and a worst), got {d.samples_per_prompt}"
        )
    if int(d.eval_prompts) < 0:
        raise DpoConfigError(f"config.dpo.eval_prompts: must be >= 0, got {d.eval_prompts}")
    if float(d.missing_eos_penalty) < 0:
        raise DpoConfigError(f"config.dpo.missing_eos_penalty: must be >= 0, got {d.missing_eos_penalty}")
    if float(d.min_score_gap) < 0:
        raise DpoConfigError(f"config.dpo.min_score_gap: must be >= 0, got {d.min_score_gap}")
    if not float(d.temperature) > 0:
        raise DpoConfigError(
            f"config.dpo.temperature: must be > 0 (greedy samples of one prompt are all equal), got {d.temperature}"
        )
    if not str(d.reward_model):
        raise DpoConfigError(
            "config.dpo.reward_model: empty; online iterations and the evaluation score with a trained reward model "
            "(the `reward` job's workdir: python -m aya_jax.main --config configs/reward.py)"
        )
    if d.verifiable_reward:
        try:
            rewards.get_reward(str(d.verifiable_reward))
        except ValueError as e:
            raise DpoConfigError(f"config.dpo.verifiable_reward: {e}") from None
    seq_len = int(config.data.seq_len)
    if not 0 < int(d.prompt_len) < seq_len:
        raise DpoConfigError(
            f"config.dpo.prompt_len: must be in [1, config.data.seq_len={seq_len}), got {d.prompt_len}"
        )
    if int(d.prompt_len) + int(d.max_new_tokens) > seq_len:
        raise DpoConfigError(
            f"config.dpo.max_new_tokens: prompt_len {d.prompt_len} + max_new_tokens {d.max_new_tokens} must fit a "
            f"pair row of config.data.seq_len={seq_len} tokens"
        )
    try:
        _sampling_params(config, (1,))
    except sampling.SamplingError as e:
        raise DpoConfigError(f"config.dpo.{e}") from None
    for field in ("global_batch_size", "log_every"):
        if int(config.train[field]) < 1:
            raise DpoConfigError(f"config.train.{field}: must be >= 1, got {config.train[field]}")
    if int(config.checkpoint.every) < 1:
        raise DpoConfigError(f"config.checkpoint.every: must be >= 1, got {config.checkpoint.every}")


def _sampling_params(config: Any, eos_ids: tuple[int, ...]) -> sampling.SamplingParams:
    d = config.dpo
    return sampling.SamplingParams(
        max_new_tokens=int(d.max_new_tokens),
        temperature=float(d.temperature),
        top_k=int(d.top_k),
        top_p=float(d.top_p),
        eos_ids=eos_ids,
    )


def _check_mesh_fit(config: Any, dp: int, max_positions: int) -> None:
    d = config.dpo
    for field, value in (
        ("config.train.global_batch_size", int(config.train.global_batch_size)),
        ("config.dpo.prompts_per_iteration", int(d.prompts_per_iteration)),
    ):
        if value % dp:
            raise DpoConfigError(f"{field}: {value} is not divisible by the data-parallel size {dp}")
    if int(config.data.seq_len) > max_positions:
        raise DpoConfigError(
            f"config.data.seq_len: {config.data.seq_len} exceeds the model's max_position_embeddings {max_positions}"
        )


def total_steps_bound(config: Any) -> int:
    """Optimiser steps at most (the schedule's length): offline steps plus, per online iteration, every prompt
    giving a pair."""
    d = config.dpo
    per_iteration = int(d.epochs_per_iteration) * math.ceil(
        int(d.prompts_per_iteration) / int(config.train.global_batch_size)
    )
    return int(d.offline_steps) + int(d.iterations) * per_iteration


# ============================================================================================================
# Steps (pure; jitted in `train`)
# ============================================================================================================


# What the step reads of each side of a pair (PreferencePairFeatureConverter's layout; online pairs are built
# in it too).
SIDE_FEATURES = ("target_tokens", "loss_weights", "segment_ids", "positions")


def pair_features(batch: dict[str, Any]) -> dict[str, Any]:
    """The features of a pair batch that `pair_log_probs` reads (one pytree structure for both stages)."""
    return {
        f"{side}_{name}": batch[f"{side}_{name}"] for side in ("chosen", "rejected") for name in SIDE_FEATURES
    }


def pair_log_probs(
    model: cohere.CohereLM, params: Any, batch: dict[str, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """(log π(chosen | x), log π(rejected | x)) [pairs]: sums over each completion's tokens (loss weight 1) of
    rows in the PreferencePairFeatureConverter layout, both sides in one forward pass.

    The rows are read as the sampler conditions (aya_jax/sampling.py, rollouts.sequence_log_probs): the
    sequence `target_tokens` itself goes in, its first token at position 0, and the state at slot t predicts
    token t + 1 — not the converter's `input_tokens`, which shift a 0 in front. So an online pair's log-probs
    are exactly those of the distribution its completions were sampled from. The output projection is chunked
    (losses.completion_log_probs), never [rows, len, vocab]."""

    def both(name: str) -> jax.Array:
        return jnp.concatenate([batch[f"chosen_{name}"], batch[f"rejected_{name}"]], axis=0)

    tokens = both("target_tokens")
    hidden = model.apply(
        {"params": params}, tokens, both("positions"), both("segment_ids"), return_hidden=True
    )
    logps = losses.completion_log_probs(
        hidden[:, :-1],
        cohere.output_kernel(params).astype(model.dtype),
        tokens[:, 1:],
        both("loss_weights")[:, 1:],
        logit_scale=model.cfg.logit_scale,
    )
    n = batch["chosen_target_tokens"].shape[0]
    return logps[:n], logps[n:]


def make_train_step(model: cohere.CohereLM, tx: optax.GradientTransformation, schedule, config: Any):
    """(state, reference params, batch, pair weights [pairs]) -> (state, metrics): one optax step on the DPO
    loss of the weighted pairs (weight 0: padding of a short last batch)."""
    d = config.dpo

    def loss_fn(params, ref_params, batch, weights):
        pi_c, pi_r = pair_log_probs(model, params, batch)
        ref_c, ref_r = jax.lax.stop_gradient(pair_log_probs(model, ref_params, batch))
        return losses.dpo_loss(
            pi_c,
            pi_r,
            ref_c,
            ref_r,
            float(d.beta),
            float(d.label_smoothing),
            loss_type=str(d.loss_type),
            weights=weights,
        )

    def step(state: ts.TrainState, ref_params: Any, batch: dict[str, jax.Array], weights: jax.Array):
        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, ref_params, batch, weights)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, {
            "loss": loss,
            **m,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state.step),
        }

    return step


def make_eval_scores(model: cohere.CohereLM):
    """(policy params, SFT params, rollouts) -> (KL(π || π_SFT) per row (Σ_t log π - log π_SFT over the sampled
    completion), entropy per row)."""

    def scores(params: Any, sft_params: Any, ro: rollouts.Rollouts):
        pi, _, entropy = rollouts.sequence_log_probs(model, params, ro)
        ref, _, _ = rollouts.sequence_log_probs(model, sft_params, ro)
        return pi - ref, entropy

    return scores


# ============================================================================================================
# Online pairs: best / worst of k samples, re-laid out as right-padded pair rows
# ============================================================================================================


def best_and_worst(scores: np.ndarray, k: int, min_gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scores [prompts * k] (row i*k + j = sample j of prompt i) -> (best row, worst row, keep) per prompt; a
    prompt is kept iff its best and worst scores differ by more than `min_gap` (ties give no pair). The first
    of equal maxima / minima is taken."""
    s = scores.reshape(-1, k)
    best, worst = s.argmax(axis=1), s.argmin(axis=1)
    keep = (s.max(axis=1) - s.min(axis=1)) > min_gap
    base = np.arange(s.shape[0]) * k
    return base + best, base + worst, keep


def rollout_rows_as_pair_side(ro: Any, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Host-side rollouts (left-padded prompt ++ completion) -> rows `rows` in the pair converter's layout of one
    side, right-padded to `length` (`SIDE_FEATURES`): target_tokens (prompt ++ completion), loss_weights (1 on
    the completion, EOS included), segment_ids, positions (0.. from the first real token, as the sampler had
    them)."""
    tokens = np.asarray(ro.tokens)
    seg = np.asarray(ro.segment_ids)
    mask = np.asarray(ro.completion_mask)
    out = {name: np.zeros((len(rows), length), np.int32) for name in SIDE_FEATURES}
    for i, r in enumerate(rows):
        real = np.nonzero(seg[r])[0]  # contiguous: the prompt's first token .. the completion's last
        seq, weights = tokens[r, real], mask[r, real]
        n = len(seq)
        if n > length:
            raise ValueError(f"a rollout row of {n} tokens does not fit pair rows of {length}")
        out["target_tokens"][i, :n] = seq
        out["loss_weights"][i, :n] = weights
        out["segment_ids"][i, :n] = 1
        out["positions"][i, :n] = np.arange(n)
    return out


def online_pairs(
    ro: Any, scores: np.ndarray, k: int, length: int, min_gap: float
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The (best, worst) pairs of one batch of rollouts, in the pair converter's layout, and their statistics."""
    best, worst, keep = best_and_worst(scores, k, min_gap)
    pairs = {}
    for side, rows in (("chosen", best[keep]), ("rejected", worst[keep])):
        for name, value in rollout_rows_as_pair_side(ro, rows, length).items():
            pairs[f"{side}_{name}"] = value
    s = scores.reshape(-1, k)
    stats = {
        "pairs": float(keep.sum()),
        "prompts_tied": float((~keep).sum()),
        "score_mean": float(s.mean()),
        "score_best": float(s.max(axis=1)[keep].mean()) if keep.any() else float("nan"),
        "score_worst": float(s.min(axis=1)[keep].mean()) if keep.any() else float("nan"),
    }
    return pairs, stats


def pair_batches(pairs: dict[str, np.ndarray], batch_size: int, epochs: int, rng: np.random.Generator):
    """`epochs` shuffled passes over the pairs in batches of `batch_size`; the last batch of a pass is topped up
    with weight-0 copies. Yields (batch, weights [batch_size])."""
    n = len(next(iter(pairs.values())))
    for _ in range(epochs):
        order = rng.permutation(n)
        for begin in range(0, n, batch_size):
            idx = order[begin : begin + batch_size]
            weights = np.zeros((batch_size,), np.float32)
            weights[: len(idx)] = 1.0
            idx = np.concatenate([idx, np.full((batch_size - len(idx),), idx[0])])
            yield {k: v[idx] for k, v in pairs.items()}, weights


# ============================================================================================================
# The run
# ============================================================================================================


@dataclasses.dataclass
class DpoSummary:
    workdir: str
    start_step: int
    end_step: int
    evaluations: list[
        dict[str, Any]
    ]  # one per evaluation point: stage, iteration, score, verifiable, kl, ...
    checkpoint_dir: str
    metrics_jsonl: str
    tensorboard_dir: str
    plot: str | None
    preempted: bool


def train(config: Any, workdir: str) -> DpoSummary:
    from aya_jax.data import pipeline, preference_default, prompt_converters

    workdir_path = pathlib.Path(workdir)
    validate_config(config)
    if jax.process_count() > 1:
        raise DpoConfigError("config.mesh: DPO runs on one host (online pairs are built on that host's rows)")
    d = config.dpo
    k, seq_len, batch_size = (
        int(d.samples_per_prompt),
        int(config.data.seq_len),
        int(config.train.global_batch_size),
    )
    tx, schedule = optimizers.make_optimizer(config.optimizer, total_steps_bound(config))

    # ---- policy, references, reward model -----------------------------------------------------------------
    setup = policy_state.setup_policy(config, workdir_path, tx, seq_len=seq_len, missing_hint=QUICKSTART_HINT)
    mesh, rules, model = setup.mesh, setup.rules, setup.model
    dp = sharding.data_parallel_size(mesh, rules)
    _check_mesh_fit(config, dp, setup.model_cfg.max_position_embeddings)
    dtype = pretrained.dtype_from_name(config.model.dtype, "config.model.dtype")
    scorer = rewards.reward_model_scorer(
        str(d.reward_model), mesh, rules, vocab_size=setup.model_cfg.vocab_size, dtype=dtype
    )
    trees = {
        "policy state": (setup.state, setup.state_shardings),
        "SFT params (reference, KL)": (setup.ref_params, setup.params_shardings),
    }
    if d.reference == "iteration_start" and int(d.iterations):
        trees["iteration reference"] = (setup.ref_params, setup.params_shardings)  # a copy of the policy's
    trees["reward model"] = (scorer.params, scorer.params_shardings)
    policy_state.log_memory(trees)
    verifiable = rewards.get_reward(str(d.verifiable_reward)) if d.verifiable_reward else None
    log.info(
        "DPO: beta %g (%s%s), %d offline steps, then %d online iteration(s) of %d prompts x k=%d, reference %s; "
        "reward model %s (step %d)",
        float(d.beta), d.loss_type, f", label smoothing {d.label_smoothing}" if float(d.label_smoothing) else "",
        int(d.offline_steps), int(d.iterations), int(d.prompts_per_iteration), k, d.reference, d.reward_model, scorer.step,
    )  # fmt: skip

    # ---- data ---------------------------------------------------------------------------------------------
    policy_spec = pipeline.prepare(config.data)
    lengths = {"prompt": int(d.prompt_len), "chosen": seq_len, "rejected": seq_len}
    resumed = setup.resumed_state or {}
    offline_done = int(resumed.get("offline_step", 0))
    iterations_done = int(resumed.get("iteration", 0))
    offline_iter = None
    if offline_done < int(d.offline_steps):
        pairs_config = preference_default.pairs_data_config(
            config.data, str(d.task), bool(d.default_pairs), policy_spec.vocab, "config.dpo.default_pairs"
        )
        pairs_spec = pipeline.prepare(pairs_config)
        offline_iter = pipeline.HostTrainIterator(
            pairs_spec, pairs_config, shard_batch_size=batch_size, shards=range(1), num_shards=1, seed=int(config.seed),
            start_position=int(resumed.get("data_position", 0)),
            make_converter=prompt_converters.PreferencePairFeatureConverter, feature_lengths=lengths,
        )  # fmt: skip
    chat = bool(config.data.chat_template)
    train_prompts = prompt_sets.load_prompt_set(
        config.data, str(d.prompts_file), "train", setup.codec, max_tokens=int(d.prompt_len), chat=chat,
        field="config.dpo.prompts_file",
    )  # fmt: skip
    eval_prompts = prompt_sets.load_prompt_set(
        config.data, str(d.eval_prompts_file), "validation", setup.codec, max_tokens=int(d.prompt_len), chat=chat,
        field="config.dpo.eval_prompts_file",
    )  # fmt: skip
    n_eval = min(int(d.eval_prompts) or len(eval_prompts), len(eval_prompts)) // dp * dp
    eval_index = np.random.default_rng([int(config.seed), 1]).permutation(len(eval_prompts))[:n_eval]

    # ---- compile ------------------------------------------------------------------------------------------
    row_sh = NamedSharding(mesh, sharding.batch_spec(rules, 1))
    mat_sh = NamedSharding(mesh, sharding.batch_spec(rules, 2))
    sample_params = _sampling_params(config, setup.eos_ids)
    pad_id = int(setup.codec.pad_id)
    with mesh, nn.logical_axis_rules(rules):
        p_step = jax.jit(
            make_train_step(model, tx, schedule, config),
            in_shardings=(setup.state_shardings, setup.params_shardings, None, row_sh),
            out_shardings=(setup.state_shardings, None),
            donate_argnums=(0,),
        )
        p_eval_scores = jax.jit(make_eval_scores(model))
        p_copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=setup.params_shardings)

    def put(x: np.ndarray) -> jax.Array:
        return jax.device_put(x, mat_sh if x.ndim == 2 else row_sh)

    def roll(
        params: Any, tokens: np.ndarray, start: np.ndarray, kk: int, rng: jax.Array
    ) -> rollouts.Rollouts:
        return rollouts.sample(model, params, put(tokens), put(start), kk, rng, sample_params, pad_id=pad_id)

    writer = metrics.MetricWriter(
        workdir_path, jsonl=bool(config.metrics.jsonl), tensorboard=bool(config.metrics.tensorboard)
    )
    eval_key = jax.random.PRNGKey(int(config.seed) + 1)  # the same draws at every evaluation
    evaluations: list[dict[str, Any]] = []

    def run_eval(stage: str, iteration: int, params: Any) -> None:
        if not n_eval:
            return
        tokens, start = eval_prompts.batch(eval_index)
        ne = int(d.eval_samples)
        ro = roll(params, tokens, start, ne, eval_key)
        scores = np.asarray(jax.device_get(scorer(ro)), np.float64)
        kl, entropy = jax.device_get(p_eval_scores(params, setup.ref_params, ro))
        host = jax.device_get(ro)
        result: dict[str, Any] = {
            "stage": stage,
            "iteration": iteration,
            "score": float(scores.mean()),
            "kl": float(np.mean(kl)),
            "entropy": float(np.mean(entropy)),
            "completion_length": float(np.mean(host.lengths)),
            "eos_rate": float(np.mean(host.ended_with_eos)),
        }
        if verifiable is not None:
            infos = [eval_prompts.infos[int(i)] for i in eval_index]
            texts = _completion_texts(setup.codec, host, setup.eos_ids)
            result["verifiable"] = float(
                np.mean([verifiable(t, infos[i // ne]) for i, t in enumerate(texts)])
            )
        writer.write(int(state.step), result, kind="eval")
        evaluations.append(result)
        log.info(
            "eval %s%s: held-out mean RM score %.4f%s, KL to SFT %.3f, length %.1f, EOS %.2f (%d prompts x %d)",
            stage, f" {iteration}" if stage == "online" else "", result["score"],
            f", {d.verifiable_reward} {result['verifiable']:.4f}" if "verifiable" in result else "",
            result["kl"], result["completion_length"], result["eos_rate"], n_eval, ne,
        )  # fmt: skip

    def log_step(m: Any, extra: dict[str, Any]) -> None:
        step = int(state.step)
        if step % int(config.train.log_every) == 0:
            writer.write(step, {**{k_: float(v) for k_, v in jax.device_get(m).items()}, **extra})

    def save(stage: str) -> None:
        data = {
            **setup.source_record(),
            "stage": stage,
            "offline_step": offline_done,
            "iteration": iterations_done,
            "data_position": offline_iter.position
            if offline_iter is not None
            else int(resumed.get("data_position", 0)),
            "seed": int(config.seed),
        }
        setup.checkpointer.save(int(state.step), state, data)

    # ---- train --------------------------------------------------------------------------------------------
    state = setup.state
    start_step = int(state.step)
    watcher = ckpt_lib.PreemptionWatcher()
    preempted = False
    progress = run_utils.progress_bar(config, start_step, total_steps_bound(config), "dpo")
    try:
        with mesh, nn.logical_axis_rules(rules):
            if start_step == 0 and setup.resumed_state is None:
                run_eval("sft", 0, state.params)

            # Stage 1: offline DPO on the data's pairs, reference = SFT.
            while offline_iter is not None and offline_done < int(d.offline_steps):
                batch = sharding.global_batch_from_host(pair_features(next(offline_iter)), mesh, rules)
                state, m = p_step(state, setup.ref_params, batch, put(np.ones((batch_size,), np.float32)))
                offline_done += 1
                log_step(m, {"iteration": 0})
                if progress is not None:
                    progress.update(1)
                if offline_done == int(d.offline_steps):
                    run_eval("offline", 0, state.params)
                    save("offline")
                elif offline_done % int(config.checkpoint.every) == 0:
                    save("offline")
                if watcher.should_stop(int(state.step)):
                    save("offline")
                    setup.checkpointer.wait()
                    log.warning("preempted: saved step %d; rerun the same command to resume", int(state.step))
                    preempted = True
                    break

            # Stage 2: online iterations: sample k, rank with the RM, DPO on (best, worst).
            while not preempted and iterations_done < int(d.iterations):
                t = iterations_done + 1
                key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), t)
                ref_params = p_copy(state.params) if d.reference == "iteration_start" else setup.ref_params
                n_prompts = int(d.prompts_per_iteration)
                index = train_prompts.order((t - 1) * n_prompts, n_prompts, int(config.seed))
                tokens, start = train_prompts.batch(index)
                t0 = time.perf_counter()
                ro = roll(state.params, tokens, start, k, jax.random.fold_in(key, 0))
                jax.block_until_ready(ro)
                t1 = time.perf_counter()
                host = jax.device_get(ro)
                scores = np.asarray(jax.device_get(scorer(ro)), np.float64)
                # A completion cut at max_new_tokens ranks as if it scored missing_eos_penalty less (TRL's
                # online DPO option): the reward model alone cannot tell a cut answer from a finished one.
                scores = scores - float(d.missing_eos_penalty) * ~np.asarray(host.ended_with_eos)
                pairs, stats = online_pairs(host, scores, k, seq_len, float(d.min_score_gap))
                t2 = time.perf_counter()
                steps = 0
                if stats["pairs"]:
                    rng = np.random.default_rng([int(config.seed), t])
                    for batch, weights in pair_batches(pairs, batch_size, int(d.epochs_per_iteration), rng):
                        state, m = p_step(
                            state, ref_params, {k_: put(v) for k_, v in batch.items()}, put(weights)
                        )
                        steps += 1
                        log_step(m, {"iteration": t})
                        if progress is not None:
                            progress.update(1)
                        if watcher.should_stop(int(state.step)):
                            preempted = True
                            break
                else:
                    log.warning(
                        "iteration %d: every prompt's k samples tied in score; no pairs to train on", t
                    )
                if preempted:
                    log.warning(
                        "preempted in online iteration %d: it restarts from its beginning (step %d) on rerun",
                        t, setup.checkpointer.latest_step(),
                    )  # fmt: skip
                    break
                jax.block_until_ready(state)
                t3 = time.perf_counter()
                stats.update(
                    iteration=t, eos_rate=float(np.mean(host.ended_with_eos)), completion_length=float(np.mean(host.lengths)),
                    update_steps=steps, time_generation=t1 - t0, time_scoring=t2 - t1, time_update=t3 - t2,
                )  # fmt: skip
                writer.write(int(state.step), stats, kind="online")
                log.info(
                    "iteration %d: %d pairs (%d prompts tied), RM score best %.3f / worst %.3f / mean %.3f, %d steps "
                    "| generation %.1fs, scoring %.1fs, update %.1fs",
                    t, stats["pairs"], stats["prompts_tied"], stats["score_best"], stats["score_worst"],
                    stats["score_mean"], steps, t1 - t0, t2 - t1, t3 - t2,
                )  # fmt: skip
                del ref_params
                iterations_done = t
                run_eval("online", t, state.params)
                save("online")
    finally:
        if progress is not None:
            progress.close()
        setup.checkpointer.close()
        watcher.restore_handler()
    writer.close()

    plot = None
    if bool(config.train.plot) and writer.jsonl_path.exists() and jax.process_index() == 0:
        plot = str(plot_progress(writer.jsonl_path, workdir_path.absolute() / PLOT, str(d.verifiable_reward)))
    summary = DpoSummary(
        workdir=str(workdir_path.absolute()),
        start_step=start_step,
        end_step=int(state.step),
        evaluations=evaluations,
        checkpoint_dir=str(setup.checkpointer.directory),
        metrics_jsonl=str(writer.jsonl_path.absolute()),
        tensorboard_dir=str(writer.tb_dir.absolute()),
        plot=plot,
        preempted=preempted,
    )
    _log_summary(summary, str(d.verifiable_reward))
    return summary


def _completion_texts(codec: Any, ro: Any, eos_ids: tuple[int, ...]) -> list[str]:
    """Decoded completions (EOS and padding removed) of host-side rollouts."""
    comp, lengths, eos = np.asarray(ro.completion_tokens), np.asarray(ro.lengths), set(eos_ids)
    return [
        codec.decode([int(t) for t in comp[i, : lengths[i]] if int(t) not in eos]) for i in range(len(comp))
    ]


def _eval_label(row: dict[str, Any]) -> str:
    return {"sft": "SFT", "offline": "offline"}.get(row["stage"], f"iter {row['iteration']}")


def plot_progress(jsonl_path: pathlib.Path, png_path: pathlib.Path, verifiable_name: str) -> pathlib.Path:
    """Four panels: the held-out mean RM score (and verifiable reward) per evaluation point; DPO loss and
    implicit-reward accuracy per step; chosen / rejected log-probs and the margin per step; KL to the SFT policy
    and completion length per evaluation point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metrics.read_jsonl(jsonl_path)
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=110)

    ax = axes[0, 0]
    x = range(len(evals))
    ax.plot(x, [r["score"] for r in evals], "o-", color="tab:blue", label="mean RM score")
    ax.set_xticks(list(x), [_eval_label(r) for r in evals], fontsize=8)
    ax.set_ylabel("reward-model score", color="tab:blue")
    ax.set_title("held-out prompts: policy samples", fontsize=9)
    if evals and "verifiable" in evals[0]:
        twin = ax.twinx()
        twin.plot(x, [r.get("verifiable", float("nan")) for r in evals], "s--", color="tab:green")
        twin.set_ylabel(f"verifiable reward ({verifiable_name})", color="tab:green")

    ax = axes[0, 1]
    ax.plot(steps, [r["loss"] for r in train], lw=1.0, label="DPO loss")
    ax.plot(steps, [r["rewards/accuracy"] for r in train], lw=1.0, label="implicit reward accuracy")
    ax.set_xlabel("step")
    ax.set_title("training pairs", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    ax.plot(steps, [r["logps/chosen"] for r in train], lw=1.0, label="log π(chosen)")
    ax.plot(steps, [r["logps/rejected"] for r in train], lw=1.0, label="log π(rejected)")
    twin = ax.twinx()
    twin.plot(steps, [r["rewards/margin"] for r in train], lw=1.0, color="tab:red", label="margin")
    twin.set_ylabel("implicit reward margin", color="tab:red")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    ax.plot(x, [r["kl"] for r in evals], "o-", label="KL(π || π_SFT) per completion")
    ax.plot(x, [r["completion_length"] for r in evals], "s--", label="completion length")
    ax.set_xticks(list(x), [_eval_label(r) for r in evals], fontsize=8)
    ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def _log_summary(s: DpoSummary, verifiable_name: str) -> None:
    body = []
    if s.evaluations:
        body.append(f"  held-out      {'RM score':>9}  {verifiable_name or '':>10}  {'KL':>7}  length")
        for r in s.evaluations:
            v = f"{r['verifiable']:10.4f}" if "verifiable" in r else " " * 10
            body.append(
                f"  {_eval_label(r):<12}  {r['score']:9.4f}  {v}  {r['kl']:7.3f}  {r['completion_length']:6.1f}"
            )
    run_utils.log_summary(
        log, "DPO", s.start_step, s.end_step, s.preempted, body,
        [
            ("checkpoints", s.checkpoint_dir),
            ("metrics", s.metrics_jsonl),
            ("tensorboard", f"tensorboard --logdir {s.tensorboard_dir}"),
            ("progress", s.plot),
        ],
    )  # fmt: skip
