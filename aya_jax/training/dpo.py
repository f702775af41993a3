"""DPO: offline on preference pairs, then online iterative DPO with a reward model — Aya Expanse's preference
stage (arXiv 2412.04261; DPO: Rafailov et al. 2023, arXiv 2305.18290).

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
        workdir; aya_jax/training/scoring.py), minus `missing_eos_penalty` for one that hit
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
temperature 1), entropy, length and EOS rate. Logged to metrics.jsonl / TensorBoard with the DPO loss,
implicit-reward accuracy and margin and the chosen / rejected log-probs of every step; `dpo_progress.png` plots
them.

Where this departs from the papers: the policy is trained in one optimiser run across stages (no optimiser
reset per iteration); online pairs are the policy's own samples re-laid out as right-padded rows (the same
tokens and positions the sampler used), so both stages share one jitted step; the reference's log-probs are
recomputed in every step instead of cached per pair.

In the one loop (aya_jax/training/loop.py) an iteration is an offline step or a whole online iteration:
`offline_steps + iterations` in all. Checkpoints: every `config.checkpoint.every` offline steps, at the end of
the offline stage and after every online iteration, with the stage, the offline data position and the
optimiser step. Rerunning the command resumes; an online iteration interrupted midway (SIGTERM) restarts from
its beginning — its prompts and sampling keys are functions of the iteration, so it redoes exactly the same work.
Policy, reference(s) and reward model share one mesh and the config's sharding rules; memory per device is
logged before the run.

Several hosts: the online prompts and sampling keys do not depend on the host count (every host holds the whole
prompt batch; draws are keyed by row); the rollouts are sharded over every host's devices, the reward model
scores them there, and the scores and completions are gathered to every host, which all choose the same pairs
and feed the same global batches. Offline pairs are read per host from its data shards, as in SFT.
"""

from __future__ import annotations

import logging
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aya_jax import losses, metrics, plots
from aya_jax.models import cohere
from aya_jax.training import loop, rollouts, scoring
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

PLOT = "dpo_progress.png"


def total_steps_bound(config: Any) -> int:
    """Optimiser steps at most (the schedule's length): offline steps plus, per online iteration, every prompt
    giving a pair."""
    d = config.dpo
    per_iteration = int(d.epochs_per_iteration) * math.ceil(
        int(d.prompts_per_iteration) / int(config.train.global_batch_size)
    )
    return int(d.offline_steps) + int(d.iterations) * per_iteration


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
        new_state, grad_norm = state.apply_gradients(grads, tx)
        return new_state, {"loss": loss, **m, "grad_norm": grad_norm, "learning_rate": schedule(state.step)}

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


def _eval_label(row: dict[str, Any]) -> str:
    return {"sft": "SFT", "offline": "offline"}.get(row["stage"], f"iter {row['iteration']}")


def _cell(row: dict[str, Any], key: str, spec: str) -> str:
    """`row[key]` formatted with `spec` ("9.4f"); metrics.jsonl holds a non-finite value as null (listed under
    "nonfinite"), shown as nan, as the run's own evaluation would be."""
    value = row.get(key)
    if value is None:
        return f"{'nan' if key in row.get('nonfinite', ()) else '-':>{int(spec.split('.')[0])}}"
    return format(value, spec)


def summary_lines(summary: loop.RunSummary, jsonl: pathlib.Path, verifiable_name: str) -> list[str]:
    """The summary box's held-out table, one row per evaluation. A run that evaluated nothing (a rerun of a
    finished run trains nothing) shows the whole run's evaluations from `jsonl` (a step evaluated twice, by
    a redone step, once: the later row); with none there either, it says what happened."""
    evals = summary.evaluations
    lines = []
    if summary.end_step == summary.start_step and not summary.preempted:
        lines.append(
            f"  nothing trained in this run (resumed at step {summary.start_step}, already finished)"
        )
    if not evals and jsonl.exists():
        by_step = {r["step"]: r for r in metrics.read_jsonl(jsonl) if r.get("kind") == "eval"}
        evals = [by_step[step] for step in sorted(by_step)]
        if lines and evals:
            lines[-1] += "; the run's evaluations from its metrics.jsonl:"
    if evals:
        lines.append(f"  held-out      {'RM score':>9}  {verifiable_name:>10}  {'KL':>7}  length")
        for r in evals:
            v = _cell(r, "verifiable", "10.4f") if "verifiable" in r else " " * 10
            lines.append(
                f"  {_eval_label(r):<12}  {_cell(r, 'score', '9.4f')}  {v}  {_cell(r, 'kl', '7.3f')}  "
                f"{_cell(r, 'completion_length', '6.1f')}"
            )
    return lines


# ============================================================================================================
# The objective in the loop
# ============================================================================================================


class Dpo(loop.Objective):
    """Offline steps, then online iterations, as iterations of the one loop (module docstring)."""

    title = "DPO"
    eval_at_start = True

    def __init__(self, run: loop.Run, policy: Any, *, train_step, eval_scores, copy_params, reward_model,
                 verifiable: scoring.Scorer | None, offline_iter, train_prompts, eval_prompts, eval_index: np.ndarray,
                 sample_params, resumed: dict[str, Any], identity: dict[str, Any]):  # fmt: skip
        self.run, self.config, self.d = run, run.config, run.config.dpo
        self.policy, self.model = policy, policy.model
        self.offline_steps, self.iterations = int(self.d.offline_steps), int(self.d.iterations)
        self.total = self.offline_steps + self.iterations
        self.train_step, self.eval_scores, self.copy_params = train_step, eval_scores, copy_params
        self.reward_model, self.verifiable = reward_model, verifiable
        self.offline_iter, self.train_prompts, self.eval_prompts = offline_iter, train_prompts, eval_prompts
        self.eval_index, self.sample_params, self.identity = eval_index, sample_params, identity
        self.data_position = int(resumed.get("data_position", 0))
        self.opt_step = int(run.to_host(policy.state.step))
        self.batch_size = int(self.config.train.global_batch_size)
        self.eval_key = jax.random.PRNGKey(int(self.config.seed) + 1)  # the same draws at every evaluation

    # -- what an iteration is ----------------------------------------------------------------------------------
    def stage(self, iteration: int) -> tuple[str, int]:
        """(stage, online iteration) of the policy after `iteration` loop iterations."""
        if iteration > self.offline_steps:
            return "online", iteration - self.offline_steps
        if iteration == self.offline_steps and self.offline_steps:
            return "offline", 0
        return ("sft", 0) if iteration == 0 else ("offline", 0)

    def roll(self, params, prompts, index, k, key) -> rollouts.Rollouts:
        return rollouts.roll(self.run, self.model, params, prompts, index, k, key, self.sample_params,
                             pad_id=int(self.policy.codec.pad_id))  # fmt: skip

    def step(self, state, iteration):
        if iteration < self.offline_steps:
            batch = self.run.global_batch(pair_features(next(self.offline_iter)))
            weights = self.run.global_rows(np.ones((self.batch_size,), np.float32))
            state, m = self.train_step(state, self.policy.ref_params, batch, weights)
            self.opt_step += 1
            self.data_position = self.offline_iter.position
            return state, loop.Step({**m, "iteration": 0}, step=self.opt_step)
        return self.online_iteration(state, iteration - self.offline_steps + 1)

    def online_iteration(self, state, t: int):
        """Sample k per prompt, rank with the reward model, DPO on (best, worst); None if SIGTERM came."""
        d, k, seed = self.d, int(self.d.samples_per_prompt), int(self.config.seed)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), t)
        ref_params = (
            self.copy_params(state.params) if d.reference == "iteration_start" else self.policy.ref_params
        )
        n_prompts = int(d.prompts_per_iteration)
        index = self.train_prompts.order((t - 1) * n_prompts, n_prompts, seed)
        t0 = time.perf_counter()
        ro = self.roll(state.params, self.train_prompts, index, k, jax.random.fold_in(key, 0))
        jax.block_until_ready(ro)
        t1 = time.perf_counter()
        host = self.run.to_host(ro)  # every host chooses the same pairs from the same rows
        scores = np.asarray(self.run.to_host(self.reward_model(ro)), np.float64)
        # A completion cut at max_new_tokens ranks as if it scored missing_eos_penalty less (TRL's online DPO
        # option): the reward model alone cannot tell a cut answer from a finished one.
        scores = scores - float(d.missing_eos_penalty) * ~np.asarray(host.ended_with_eos)
        pairs, stats = online_pairs(host, scores, k, int(self.config.data.seq_len), float(d.min_score_gap))
        t2 = time.perf_counter()
        steps = 0
        if stats["pairs"]:
            rng = np.random.default_rng([seed, t])
            for batch, weights in pair_batches(pairs, self.batch_size, int(d.epochs_per_iteration), rng):
                batch = {name: self.run.global_rows(v) for name, v in batch.items()}
                state, m = self.train_step(state, ref_params, batch, self.run.global_rows(weights))
                steps += 1
                self.opt_step += 1
                if self.opt_step % int(self.config.train.log_every) == 0:
                    row = {name: float(v) for name, v in self.run.to_host(m).items()}
                    self.run.writer.write(self.opt_step, {**row, "iteration": t})
                if self.run.watcher.requested_anywhere():
                    log.warning(
                        "preempted in online iteration %d: it restarts from its beginning on rerun", t
                    )
                    return None
        else:
            log.warning("iteration %d: every prompt's k samples tied in score; no pairs to train on", t)
        jax.block_until_ready(state)
        t3 = time.perf_counter()
        stats.update(
            iteration=t, eos_rate=float(np.mean(host.ended_with_eos)), completion_length=float(np.mean(host.lengths)),
            update_steps=steps, time_generation=t1 - t0, time_scoring=t2 - t1, time_update=t3 - t2,
        )  # fmt: skip
        log.info(
            "iteration %d: %d pairs (%d prompts tied), RM score best %.3f / worst %.3f / mean %.3f, %d steps "
            "| generation %.1fs, scoring %.1fs, update %.1fs",
            t, stats["pairs"], stats["prompts_tied"], stats["score_best"], stats["score_worst"],
            stats["score_mean"], steps, t1 - t0, t2 - t1, t3 - t2,
        )  # fmt: skip
        return state, loop.Step(stats, kind="online", step=self.opt_step)

    # -- evaluation, checkpoints -------------------------------------------------------------------------------
    def should_evaluate(self, iteration, config):
        return iteration >= self.offline_steps and (iteration > 0)

    def should_save(self, iteration):
        return iteration >= self.offline_steps

    def evaluate(self, state, iteration):
        if not len(self.eval_index):
            return None
        stage, online = self.stage(iteration)
        ne = int(self.d.eval_samples)
        ro = self.roll(state.params, self.eval_prompts, self.eval_index, ne, self.eval_key)
        scores = np.asarray(self.run.to_host(self.reward_model(ro)), np.float64)
        kl, entropy = self.run.to_host(self.eval_scores(state.params, self.policy.ref_params, ro))
        lengths, eos = self.run.to_host((ro.lengths, ro.ended_with_eos))
        result: dict[str, Any] = {
            "stage": stage, "iteration": online, "score": float(scores.mean()), "kl": float(np.mean(kl)),
            "entropy": float(np.mean(entropy)), "completion_length": float(np.mean(lengths)),
            "eos_rate": float(np.mean(eos)),
        }  # fmt: skip
        if self.verifiable is not None:
            infos = [self.eval_prompts.infos[int(i)] for i in self.eval_index]
            result["verifiable"] = float(np.mean(self.run.to_host(self.verifiable(ro, infos, ne))))
        log.info(
            "eval %s%s: held-out mean RM score %.4f%s, KL to SFT %.3f, length %.1f, EOS %.2f (%d prompts x %d)",
            stage, f" {online}" if stage == "online" else "", result["score"],
            f", {self.d.verifiable_reward} {result['verifiable']:.4f}" if "verifiable" in result else "",
            result["kl"], result["completion_length"], result["eos_rate"], len(self.eval_index), ne,
        )  # fmt: skip
        return result

    def checkpoint_state(self, iteration):
        stage, online = self.stage(iteration)
        return {
            **self.policy.source_record(), **self.identity, "stage": stage, "iteration": online,
            "offline_step": min(iteration, self.offline_steps), "data_position": self.data_position,
            "optimizer_step": self.opt_step,
        }  # fmt: skip

    def postfix(self, m):
        return {"loss": f"{m['loss']:.3f}", "margin": f"{m.get('rewards/margin', 0):.2f}"}

    def finish(self, run, state, summary):
        name = str(self.d.verifiable_reward)
        summary.lines += summary_lines(summary, run.writer.jsonl_path, name)
        summary.results["evaluations"] = summary.evaluations
        jsonl = run.writer.jsonl_path
        if run.is_writer and bool(self.config.train.plot) and jsonl.exists():
            evals = [r for r in metrics.read_jsonl(jsonl) if r.get("kind") == "eval"]
            png = run.workdir.absolute() / PLOT
            summary.outputs["progress"] = str(
                plots.dpo_progress(jsonl, png, name, [_eval_label(r) for r in evals])
            )
