"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, arXiv 2402.14740), with the
options of TRL's `RLOOTrainer`.

One iteration, for a batch of B prompts x from the training prompts:

    1. generation   sample k completions y_1..y_k per prompt from the current policy π (temperature T,
                    at most `max_new_tokens`; one jitted prefill + decode loop over all B·k rows)
    2. scoring      s_i = reward(x, y_i)                      a registered Python function of the decoded
                                                              text (aya_jax/rewards.py) or a reward model
                    s_i -= missing_eos_penalty                if y_i did not end with EOS
                    s_i = (s_i - mean s) / std s              if normalize_rewards (over the batch)
                    s_i = clip(s_i, -reward_clip, reward_clip) if reward_clip > 0
                    KL_i = Σ_t log π(y_i,t) - log π_ref(y_i,t) sequence-level, under the sampling policy
                    R_i = s_i - β KL_i                          (no gradient through either term)
                    A_i = R_i - 1/(k-1) Σ_{j≠i} R_j             leave-one-out, within each prompt's k samples
                    A = (A - mean A) / std A                    if normalize_advantages (over the batch)
    3. update       num_ppo_epochs passes over the B·k completions in num_minibatches minibatches, one
                    optax step each, on
                        L = mean_i max(-A_i ρ_i, -A_i clip(ρ_i, 1 - ε, 1 + ε)),  ρ_i = π(y_i) / π_old(y_i)
                    with π(y_i) the probability of the whole completion (one action per completion). On the
                    first minibatch ρ = 1 and ∇L = -mean_i A_i ∇ Σ_t log π(y_i,t): plain REINFORCE-LOO.

Log-probs are those of the sampling distribution: logits divided by T (as TRL computes them), over the
completion tokens, EOS included. The reference π_ref is the frozen `config.checkpoint.init_from` policy on the
same mesh and shardings (aya_jax/training/policy.py). Every `config.train.eval_every` iterations, and at
iteration 0 (the SFT policy), the held-out prompts are sampled (`eval_samples` per prompt at temperature T,
and greedily) with a fixed seed and their mean reward logged.

Where this departs from the paper and from TRL:
* The paper optimises REINFORCE-LOO on fresh samples only. Like TRL (`num_ppo_epochs`, `num_mini_batches`,
  `cliprange`), several updates per batch are allowed, with PPO's clip on the *sequence* ratio, since the
  completion is the action. Defaults: one epoch, one minibatch — the paper's algorithm.
* TRL clips scores only when it normalises them; here `reward_clip` applies either way (0 turns it off).
* KL is the sequence sum of log π - log π_ref over sampled tokens (the k1 estimator), as the paper and TRL's
  default (`token_level_kl=False`); no adaptive KL controller.
* Generation runs with the KV-cache sampler of aya_jax/sampling.py inside jit on the training mesh, not in a
  separate inference engine; the policy's fp32 master weights are sampled directly.
* Prompts come from a JSONL file or the embedded default data (aya_jax/training/prompt_sets.py), with the
  reference answer passed to reward functions that check it.

Time per iteration is split into generation / scoring (reward, reference and sampling-policy log-probs,
advantages) / update, printed and logged. An iteration is one step of the one loop (aya_jax/training/loop.py):
rerunning the same command resumes from the latest checkpoint (policy, optimiser, iteration; the prompt stream
and sampling keys are functions of the iteration).

Several hosts: every host holds the whole prompt batch (the same prompts and keys whatever the host count),
the B·k rollout rows are sharded over every host's devices, each host decodes and scores its own rows with a
reward function (aya_jax/training/scoring.py) — or the reward model scores them on the mesh — and the scores
form one global array, so the leave-one-out baseline and the update see all of them.
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aya_jax import losses, plots
from aya_jax.metrics import read_jsonl
from aya_jax.models import cohere
from aya_jax.training import loop, rollouts, scoring
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

PLOT = "rloo_curves.png"


def make_score_fn(model: cohere.CohereLM, temperature: float):
    """(policy params, reference params, rollouts) -> (log π_old [n], log π_ref [n], entropy [n])."""

    def score(params: Any, ref_params: Any, ro: rollouts.Rollouts):
        old, _, entropy = rollouts.sequence_log_probs(model, params, ro, temperature)
        ref, _, _ = rollouts.sequence_log_probs(model, ref_params, ro, temperature)
        return old, ref, entropy

    return score


def make_advantage_fn(config: Any):
    """(scores [n], ended_with_eos [n], log π_old [n], log π_ref [n]) -> (advantages [n], metrics)."""
    r = config.rloo
    k, beta = int(r.k), float(r.beta)

    def advantages(scores, ended_with_eos, old, ref):
        shaped = losses.shape_scores(
            scores,
            ended_with_eos,
            missing_eos_penalty=float(r.missing_eos_penalty),
            normalize=bool(r.normalize_rewards),
            clip=float(r.reward_clip),
        )
        kl = old - ref  # [n]
        total = shaped - beta * kl
        adv = losses.rloo_advantages(total.reshape(-1, k)).reshape(-1)
        if bool(r.normalize_advantages):
            adv = losses.normalize_advantages(adv)
        return adv, {
            "reward_shaped": jnp.mean(shaped),
            "reward_minus_kl": jnp.mean(total),
            "kl": jnp.mean(kl),
            "advantage_std": jnp.std(adv),
        }

    return advantages


def make_update_step(
    model: cohere.CohereLM, tx: optax.GradientTransformation, temperature: float, clip_eps: float
):
    """(state, rollouts, log π_old, advantages, row indices) -> (state, metrics): one optax step on the
    clipped REINFORCE loss over the selected rows (a minibatch)."""

    def loss_fn(params, ro, old, adv):
        logps = rollouts.sequence_log_prob_sums(model, params, ro, temperature)
        return losses.rloo_policy_loss(logps, old, adv, clip_eps)

    def step(state: ts.TrainState, ro: rollouts.Rollouts, old: jax.Array, adv: jax.Array, idx: jax.Array):
        mb = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), ro)
        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, mb, jnp.take(old, idx), jnp.take(adv, idx)
        )
        new_state, grad_norm = state.apply_gradients(grads, tx)
        return new_state, {"loss": loss, "grad_norm": grad_norm, **m}

    return step


# ============================================================================================================
# The objective in the loop
# ============================================================================================================


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _of(row: dict[str, Any], key: str) -> str:
    """`row[key]` for the summary; metrics.jsonl holds a non-finite value as null, listed in "nonfinite"."""
    return "nan" if key in row.get("nonfinite", ()) else _fmt(row.get(key))


def summary_lines(summary: loop.RunSummary, jsonl: pathlib.Path) -> list[str]:
    """The summary box's held-out reward (first -> last evaluation) and KL (last train row) lines. A run that
    logged neither (a rerun of a finished run trains nothing) takes them from the whole run's rows in
    `jsonl`; with none there either, it says what happened instead of printing placeholders."""
    evals, last = summary.evaluations, summary.last
    lines = []
    if summary.end_step == summary.start_step and not summary.preempted:
        lines.append(
            f"  nothing trained in this run (resumed at step {summary.start_step}, already finished)"
        )
    if not (evals and last) and jsonl.exists():
        rows = read_jsonl(jsonl)
        if not evals:
            evals = [r for r in rows if r.get("kind") == "eval"]
        if not last:
            last = next((r for r in reversed(rows) if r.get("kind") == "train"), {})
        if lines and (evals or last):
            lines[-1] += "; the run's figures from its metrics.jsonl:"
    first_eval, last_eval = (evals[0], evals[-1]) if evals else ({}, {})
    for key, label in (("reward", "sampled"), ("reward_greedy", "greedy")):
        if key in first_eval or key in last_eval:
            name = f"  held-out reward ({label})"
            lines.append(f"{name:<29}{_of(first_eval, key)} -> {_of(last_eval, key)}")
    if "kl" in last:
        lines.append(f"  KL to the reference        {_of(last, 'kl')} (last step)")
    return lines


class Rloo(loop.Objective):
    """One RLOO iteration per loop step: generation, scoring, update (module docstring)."""

    title = "RLOO"
    eval_at_start = True

    def __init__(self, run: loop.Run, policy: Any, *, score_fn, advantage_fn, update_step, scorer: scoring.Scorer,
                 reward_name: str, train_prompts, eval_prompts, eval_index: np.ndarray, sample_params,
                 greedy_params, schedule):  # fmt: skip
        self.run, self.config, self.r = run, run.config, run.config.rloo
        self.policy, self.model = policy, policy.model
        self.total = int(self.config.train.steps)
        self.score_fn, self.advantage_fn, self.update_step = score_fn, advantage_fn, update_step
        self.scorer, self.reward_name = scorer, reward_name
        self.train_prompts, self.eval_prompts, self.eval_index = train_prompts, eval_prompts, eval_index
        self.sample_params, self.greedy_params, self.schedule = sample_params, greedy_params, schedule
        self.times: dict[str, list[float]] = {"generation": [], "scoring": [], "update": [], "total": []}
        self.eval_key = jax.random.PRNGKey(int(self.config.seed) + 1)  # the same draws at every evaluation

    def roll(self, params, prompts, index, k, key, sp) -> rollouts.Rollouts:
        return rollouts.roll(self.run, self.model, params, prompts, index, k, key, sp,
                             pad_id=int(self.policy.codec.pad_id))  # fmt: skip

    def step(self, state, iteration):
        r, k, seed = self.r, int(self.r.k), int(self.config.seed)
        prompts_per_step, minibatches = int(r.prompts_per_step), int(r.num_minibatches)
        index = self.train_prompts.order(iteration * prompts_per_step, prompts_per_step, seed)
        infos = [self.train_prompts.infos[int(i)] for i in index]
        step_key = jax.random.fold_in(jax.random.PRNGKey(seed), iteration)
        t0 = time.perf_counter()

        # 1. generation
        ro = self.roll(
            state.params, self.train_prompts, index, k, jax.random.fold_in(step_key, 0), self.sample_params
        )
        jax.block_until_ready(ro)
        t1 = time.perf_counter()

        # 2. scoring
        scores = self.scorer(ro, infos, k)
        old, ref, entropy = self.score_fn(state.params, self.policy.ref_params, ro)
        adv, adv_metrics = self.advantage_fn(scores, ro.ended_with_eos, old, ref)
        jax.block_until_ready(adv)
        t2 = time.perf_counter()

        # 3. update: num_ppo_epochs passes in num_minibatches minibatches (the same permutation on every host)
        n_rows, updates = prompts_per_step * k, []
        mb_rows = n_rows // minibatches
        perm_key = jax.random.fold_in(step_key, 1)
        for epoch in range(int(r.num_ppo_epochs)):
            order = np.arange(n_rows)
            if minibatches > 1:
                order = np.asarray(jax.random.permutation(jax.random.fold_in(perm_key, epoch), n_rows))
            for m in range(minibatches):
                idx = jnp.asarray(order[m * mb_rows : (m + 1) * mb_rows].astype(np.int32))
                state, um = self.update_step(state, ro, old, adv, idx)
                updates.append(um)
        jax.block_until_ready(state)
        t3 = time.perf_counter()

        for name, dt in zip(self.times, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            self.times[name].append(dt)
        lengths, eos, ent, am, upd, sc = self.run.to_host(
            (ro.lengths, ro.ended_with_eos, entropy, adv_metrics, updates, scores)
        )
        metrics = {
            "reward": float(np.mean(sc)),
            "reward_shaped": float(am["reward_shaped"]),
            "reward_minus_kl": float(am["reward_minus_kl"]),
            "kl": float(am["kl"]),
            "entropy": float(np.mean(ent)),
            "completion_length": float(np.mean(lengths)),
            "eos_rate": float(np.mean(eos)),
            "advantage_std": float(am["advantage_std"]),
            "loss": float(np.mean([u["loss"] for u in upd])),
            "grad_norm": float(np.mean([u["grad_norm"] for u in upd])),
            "clip_fraction": float(np.mean([u["clip_fraction"] for u in upd])),
            "learning_rate": float(self.schedule((iteration + 1) * len(upd) - 1)),
            "time_generation": t1 - t0,
            "time_scoring": t2 - t1,
            "time_update": t3 - t2,
            "new_tokens_per_second": float(np.sum(lengths)) / max(t1 - t0, 1e-9),
        }
        return state, loop.Step(metrics)

    def log_line(self, iteration, m):
        return (
            f"step {iteration}: reward {m['reward']:.3f} (minus KL {m['reward_minus_kl']:.3f}) KL {m['kl']:.3f} "
            f"entropy {m['entropy']:.2f} length {m['completion_length']:.1f} EOS {m['eos_rate']:.2f} | time "
            f"{m['time_generation'] + m['time_scoring'] + m['time_update']:.2f}s = generation "
            f"{m['time_generation']:.2f} + scoring {m['time_scoring']:.2f} + update {m['time_update']:.2f}"
        )

    def postfix(self, m):
        return {"reward": f"{m['reward']:.3f}", "kl": f"{m['kl']:.3f}"}

    def evaluate(self, state, iteration):
        """Held-out mean reward: `eval_samples` samples per prompt at the training temperature, and greedy."""
        if not len(self.eval_index):
            return None
        infos = [self.eval_prompts.infos[int(i)] for i in self.eval_index]
        result: dict[str, float] = {}
        samples = int(self.r.eval_samples)
        if samples:
            ro = self.roll(
                state.params, self.eval_prompts, self.eval_index, samples, self.eval_key, self.sample_params
            )
            scores, lengths, eos = self.run.to_host(
                (self.scorer(ro, infos, samples), ro.lengths, ro.ended_with_eos)
            )
            result.update(reward=float(np.mean(scores)), eos_rate=float(np.mean(eos)),
                          completion_length=float(np.mean(lengths)))  # fmt: skip
        if bool(self.r.eval_greedy):
            ro = self.roll(
                state.params, self.eval_prompts, self.eval_index, 1, self.eval_key, self.greedy_params
            )
            result["reward_greedy"] = float(np.mean(self.run.to_host(self.scorer(ro, infos, 1))))
        log.info(
            "eval step %d: held-out mean reward %s (sampled, %d prompts x %d), %s (greedy)", iteration,
            _fmt(result.get("reward")), len(self.eval_index), samples, _fmt(result.get("reward_greedy")),
        )  # fmt: skip
        return result

    def checkpoint_state(self, iteration):
        return {**self.policy.source_record(), "iteration": iteration, "seed": int(self.config.seed)}

    def finish(self, run, state, summary):
        summary.lines += summary_lines(summary, run.writer.jsonl_path)
        if self.times["total"]:
            t = {name: float(np.median(v)) for name, v in self.times.items()}
            summary.lines.append(
                f"  time per step (median)     {t['total']:.2f}s = generation {t['generation']:.2f} + scoring "
                f"{t['scoring']:.2f} + update {t['update']:.2f}"
            )
            summary.results["seconds_per_step"] = t
        jsonl = run.writer.jsonl_path
        if run.is_writer and bool(self.config.train.plot) and jsonl.exists():
            png = run.workdir.absolute() / PLOT
            summary.outputs["curves"] = str(plots.rloo_curves(jsonl, png, self.reward_name))
