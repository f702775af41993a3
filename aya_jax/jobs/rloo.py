"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, arXiv 2402.14740; SPEC §3), with the
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
* KL is the sequence sum of log π - log π_ref over sampled tokens (the k1 estimator), as SPEC §3 and TRL's
  default (`token_level_kl=False`); no adaptive KL controller.
* Generation runs with the KV-cache sampler of aya_jax/sampling.py inside jit on the training mesh, not in a
  separate inference engine; the policy's fp32 master weights are sampled directly.
* Prompts come from a JSONL file or the embedded default data (aya_jax/training/prompt_sets.py), with the
  reference answer passed to reward functions that check it.

Time per iteration is split into generation / scoring (reward, reference and sampling-policy log-probs,
advantages) / update, printed and logged. Rerunning the same command resumes from the latest checkpoint
(policy, optimiser, iteration; the prompt stream and sampling keys are functions of the iteration).
"""

from __future__ import annotations

import dataclasses
import logging
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


class RlooConfigError(ValueError):
    """A config value that cannot work for RLOO; raised before anything is loaded or compiled."""


# ============================================================================================================
# Config validation
# ============================================================================================================


def validate_config(config: Any) -> None:
    r = config.rloo
    for field in ("k", "prompts_per_step", "max_new_tokens", "max_prompt_tokens", "num_ppo_epochs"):
        if int(r[field]) < (2 if field == "k" else 1):
            raise RlooConfigError(
                f"config.rloo.{field}: must be >= {2 if field == 'k' else 1}, got {r[field]}"
            )
    if int(r.num_minibatches) < 1 or (int(r.prompts_per_step) * int(r.k)) % int(r.num_minibatches):
        raise RlooConfigError(
            f"config.rloo.num_minibatches: must be >= 1 and divide prompts_per_step x k = "
            f"{int(r.prompts_per_step) * int(r.k)}, got {r.num_minibatches}"
        )
    if not float(r.temperature) > 0:
        raise RlooConfigError(
            f"config.rloo.temperature: must be > 0 (k greedy samples would all be equal), got {r.temperature}"
        )
    for field in ("beta", "clip_eps", "reward_clip"):
        if float(r[field]) < 0:
            raise RlooConfigError(f"config.rloo.{field}: must be >= 0, got {r[field]}")
    if int(r.eval_prompts) < 0 or int(r.eval_samples) < 0:
        raise RlooConfigError("config.rloo.eval_prompts / eval_samples: must be >= 0")
    if bool(r.reward) == bool(r.reward_model):
        raise RlooConfigError(
            "config.rloo: set exactly one of reward (a registered reward function: "
            f"{', '.join(rewards.registered_rewards())}) and reward_model (a reward-model run's workdir); got "
            f"reward={r.reward!r}, reward_model={r.reward_model!r}"
        )
    if r.reward:
        try:
            rewards.get_reward(str(r.reward))
        except ValueError as e:
            raise RlooConfigError(f"config.rloo.reward: {e}") from None
    try:
        _sampling_params(config, (1,), greedy=False)
    except sampling.SamplingError as e:
        raise RlooConfigError(f"config.rloo.{e}") from None
    t = config.train
    for field in ("steps", "log_every", "eval_every"):
        if int(t[field]) < 1:
            raise RlooConfigError(f"config.train.{field}: must be >= 1, got {t[field]}")
    if int(config.checkpoint.every) < 1:
        raise RlooConfigError(f"config.checkpoint.every: must be >= 1, got {config.checkpoint.every}")


def _sampling_params(config: Any, eos_ids: tuple[int, ...], *, greedy: bool) -> sampling.SamplingParams:
    r = config.rloo
    return sampling.SamplingParams(
        max_new_tokens=int(r.max_new_tokens),
        temperature=0.0 if greedy else float(r.temperature),
        top_k=0 if greedy else int(r.top_k),
        top_p=1.0 if greedy else float(r.top_p),
        eos_ids=eos_ids,
    )


def _check_mesh_fit(config: Any, setup: policy_state.PolicySetup) -> int:
    """Row counts must split over the data-parallel devices; positions must fit the model. Returns dp."""
    r = config.rloo
    dp = sharding.data_parallel_size(setup.mesh, setup.rules)
    rows = int(r.prompts_per_step) * int(r.k)
    if int(r.prompts_per_step) % dp or (rows // int(r.num_minibatches)) % dp:
        raise RlooConfigError(
            f"config.rloo.prompts_per_step: {r.prompts_per_step} prompts (and minibatches of "
            f"{rows // int(r.num_minibatches)} rows) must divide by the data-parallel size {dp}"
        )
    need = int(r.max_prompt_tokens) + int(r.max_new_tokens)
    if need > setup.model_cfg.max_position_embeddings:
        raise RlooConfigError(
            f"config.rloo.max_new_tokens: max_prompt_tokens + max_new_tokens = {need} exceeds the model's "
            f"max_position_embeddings {setup.model_cfg.max_position_embeddings}"
        )
    return dp


# ============================================================================================================
# Steps (pure; jitted in `train`)
# ============================================================================================================


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
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **m}

    return step


# ============================================================================================================
# Rewards on the host
# ============================================================================================================


def completion_texts(codec: Any, ro: rollouts.Rollouts, eos_ids: tuple[int, ...]) -> list[str]:
    """Decoded completions (EOS and padding removed) of host-side rollouts."""
    comp = np.asarray(ro.completion_tokens)
    lengths = np.asarray(ro.lengths)
    eos = set(eos_ids)
    return [
        codec.decode([int(t) for t in comp[i, : lengths[i]] if int(t) not in eos]) for i in range(len(comp))
    ]


def reward_scores(
    fn: rewards.RewardFn, texts: list[str], infos: list[rewards.PromptInfo], k: int
) -> np.ndarray:
    """Scores [n] of row i = prompt i // k."""
    return np.asarray([fn(t, infos[i // k]) for i, t in enumerate(texts)], np.float32)


# ============================================================================================================
# The run
# ============================================================================================================


@dataclasses.dataclass
class RlooSummary:
    workdir: str
    start_step: int
    end_step: int
    eval_reward_first: float | None  # held-out mean reward (sampled) at the first evaluation of this run
    eval_reward_last: float | None
    eval_greedy_first: float | None
    eval_greedy_last: float | None
    kl_last: float | None
    seconds_per_step: dict[str, float]  # median generation / scoring / update / total
    checkpoint_dir: str
    metrics_jsonl: str
    tensorboard_dir: str
    plot: str | None
    preempted: bool


def train(config: Any, workdir: str) -> RlooSummary:
    workdir_path = pathlib.Path(workdir)
    validate_config(config)
    if jax.process_count() > 1:
        raise RlooConfigError(
            "config.mesh: RLOO runs on one host (its rewards are computed on that host's rows)"
        )
    r = config.rloo
    k, temperature = int(r.k), float(r.temperature)
    total_steps = int(config.train.steps)
    updates_per_step = int(r.num_ppo_epochs) * int(r.num_minibatches)
    tx, schedule = optimizers.make_optimizer(config.optimizer, total_steps * updates_per_step)

    # ---- policy, reference, reward -----------------------------------------------------------------------
    setup = policy_state.setup_policy(
        config, workdir_path, tx, seq_len=int(r.max_prompt_tokens), missing_hint=QUICKSTART_HINT
    )
    dp = _check_mesh_fit(config, setup)
    mesh, rules, model = setup.mesh, setup.rules, setup.model
    trees = {
        "policy state": (setup.state, setup.state_shardings),
        "reference params": (setup.ref_params, setup.params_shardings),
    }
    scorer = None
    if r.reward_model:
        scorer = rewards.reward_model_scorer(
            str(r.reward_model),
            mesh,
            rules,
            vocab_size=setup.model_cfg.vocab_size,
            dtype=pretrained.dtype_from_name(config.model.dtype, "config.model.dtype"),
        )
        trees["reward model params"] = (scorer.params, scorer.params_shardings)
        reward_name = f"reward model {r.reward_model} (step {scorer.step})"
    else:
        reward_fn = rewards.get_reward(str(r.reward))
        reward_name = f"reward function {r.reward!r}"
    policy_state.log_memory(trees)
    log.info(
        "RLOO: %d prompts x k=%d per step, beta %g, temperature %g, %d new tokens, %d update(s) per batch, %s",
        int(r.prompts_per_step), k, float(r.beta), temperature, int(r.max_new_tokens), updates_per_step,
        reward_name,
    )  # fmt: skip

    # ---- prompts ------------------------------------------------------------------------------------------
    chat = bool(config.data.chat_template)
    train_prompts = prompt_sets.load_prompt_set(
        config.data, str(r.prompts_file), "train", setup.codec, max_tokens=int(r.max_prompt_tokens), chat=chat
    )
    eval_prompts = prompt_sets.load_prompt_set(
        config.data,
        str(r.eval_prompts_file),
        "validation",
        setup.codec,
        max_tokens=int(r.max_prompt_tokens),
        chat=chat,
        field="config.rloo.eval_prompts_file",
    )
    n_eval = min(int(r.eval_prompts), len(eval_prompts)) // dp * dp
    eval_index = np.random.default_rng([int(config.seed), 1]).permutation(len(eval_prompts))[:n_eval]
    log.info(
        "prompts: %d for training (%s), %d held out (%s)",
        len(train_prompts), train_prompts.source, n_eval, eval_prompts.source,
    )  # fmt: skip

    # ---- compile ------------------------------------------------------------------------------------------
    row_sh = NamedSharding(mesh, sharding.batch_spec(rules, 1))
    mat_sh = NamedSharding(mesh, sharding.batch_spec(rules, 2))
    eos_ids = setup.eos_ids
    sample_params = _sampling_params(config, eos_ids, greedy=False)
    greedy_params = _sampling_params(config, eos_ids, greedy=True)
    pad_id = int(setup.codec.pad_id)
    with mesh, nn.logical_axis_rules(rules):
        p_score = jax.jit(make_score_fn(model, temperature))
        p_advantages = jax.jit(make_advantage_fn(config))
        p_update = jax.jit(
            make_update_step(model, tx, temperature, float(r.clip_eps)),
            in_shardings=(setup.state_shardings, None, row_sh, row_sh, None),
            out_shardings=(setup.state_shardings, None),
            donate_argnums=(0,),
        )

    def put_rows(x: np.ndarray) -> jax.Array:
        return jax.device_put(x, mat_sh if x.ndim == 2 else row_sh)

    def roll(params: Any, tokens: np.ndarray, start: np.ndarray, kk: int, rng: jax.Array, sp) -> Any:
        return rollouts.sample(model, params, put_rows(tokens), put_rows(start), kk, rng, sp, pad_id=pad_id)

    def score_rows(ro: rollouts.Rollouts, infos: list[rewards.PromptInfo], kk: int) -> np.ndarray:
        if scorer is not None:
            return np.asarray(jax.device_get(scorer(ro)), np.float32)
        return reward_scores(reward_fn, completion_texts(setup.codec, jax.device_get(ro), eos_ids), infos, kk)

    writer = metrics.MetricWriter(
        workdir_path, jsonl=bool(config.metrics.jsonl), tensorboard=bool(config.metrics.tensorboard)
    )
    eval_key = jax.random.PRNGKey(int(config.seed) + 1)  # the same draws at every evaluation
    eval_history: list[dict[str, float]] = []

    def run_eval(step: int, params: Any) -> None:
        """Held-out mean reward; called inside the mesh and rules context (one context: a nested one is a
        different tracing context and would recompile the sampler)."""
        if not n_eval:
            return
        tokens, start = eval_prompts.batch(eval_index)
        infos = [eval_prompts.infos[int(i)] for i in eval_index]
        result: dict[str, float] = {}
        if int(r.eval_samples):
            ro = roll(params, tokens, start, int(r.eval_samples), eval_key, sample_params)
            result["reward"] = float(np.mean(score_rows(ro, infos, int(r.eval_samples))))
            result["eos_rate"] = float(np.mean(jax.device_get(ro.ended_with_eos)))
            result["completion_length"] = float(np.mean(jax.device_get(ro.lengths)))
        if bool(r.eval_greedy):
            ro = roll(params, tokens, start, 1, eval_key, greedy_params)
            result["reward_greedy"] = float(np.mean(score_rows(ro, infos, 1)))
        writer.write(step, result, kind="eval")
        eval_history.append(result)
        log.info(
            "eval step %d: held-out mean reward %s (sampled, %d prompts x %d), %s (greedy)",
            step, _fmt(result.get("reward")), n_eval, int(r.eval_samples), _fmt(result.get("reward_greedy")),
        )  # fmt: skip

    # ---- train --------------------------------------------------------------------------------------------
    state = setup.state
    step = start_step = setup.start_step
    checkpointer = setup.checkpointer
    watcher = ckpt_lib.PreemptionWatcher()
    progress = run_utils.progress_bar(config, start_step, total_steps, "rloo")
    B, n_rows = int(r.prompts_per_step), int(r.prompts_per_step) * k
    mb_rows = n_rows // int(r.num_minibatches)
    times: dict[str, list[float]] = {"generation": [], "scoring": [], "update": [], "total": []}
    last_kl = None
    preempted = False

    def save(at: int) -> None:
        checkpointer.save(at, state, {**setup.source_record(), "iteration": at, "seed": int(config.seed)})

    try:
        with mesh, nn.logical_axis_rules(rules):
            if start_step == 0:
                run_eval(0, state.params)
            while step < total_steps:
                index = train_prompts.order(step * B, B, int(config.seed))
                tokens, start = train_prompts.batch(index)
                infos = [train_prompts.infos[int(i)] for i in index]
                step_key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), step)
                t0 = time.perf_counter()

                # 1. generation
                ro = roll(state.params, tokens, start, k, jax.random.fold_in(step_key, 0), sample_params)
                jax.block_until_ready(ro)
                t1 = time.perf_counter()

                # 2. scoring
                scores = score_rows(ro, infos, k)
                old, ref, entropy = p_score(state.params, setup.ref_params, ro)
                adv, adv_metrics = p_advantages(put_rows(scores), ro.ended_with_eos, old, ref)
                jax.block_until_ready(adv)
                t2 = time.perf_counter()

                # 3. update
                upd = []
                perm_key = jax.random.fold_in(step_key, 1)
                for epoch in range(int(r.num_ppo_epochs)):
                    order = np.asarray(jax.random.permutation(jax.random.fold_in(perm_key, epoch), n_rows))
                    if int(r.num_minibatches) == 1:
                        order = np.arange(n_rows)
                    for m in range(int(r.num_minibatches)):
                        idx = order[m * mb_rows : (m + 1) * mb_rows].astype(np.int32)
                        state, um = p_update(state, ro, old, adv, jnp.asarray(idx))
                        upd.append(um)
                jax.block_until_ready(state)
                t3 = time.perf_counter()
                step += 1

                for name, dt in zip(
                    ("generation", "scoring", "update", "total"),
                    (t1 - t0, t2 - t1, t3 - t2, t3 - t0),
                    strict=True,
                ):
                    times[name].append(dt)
                host = jax.device_get((ro.lengths, ro.ended_with_eos, entropy, adv_metrics, upd))
                lengths, eos, ent, am, upd = host
                last_kl = float(am["kl"])
                m = {
                    "reward": float(np.mean(scores)),
                    "reward_shaped": float(am["reward_shaped"]),
                    "reward_minus_kl": float(am["reward_minus_kl"]),
                    "kl": last_kl,
                    "entropy": float(np.mean(ent)),
                    "completion_length": float(np.mean(lengths)),
                    "eos_rate": float(np.mean(eos)),
                    "advantage_std": float(am["advantage_std"]),
                    "loss": float(np.mean([u["loss"] for u in upd])),
                    "grad_norm": float(np.mean([u["grad_norm"] for u in upd])),
                    "clip_fraction": float(np.mean([u["clip_fraction"] for u in upd])),
                    "learning_rate": float(schedule(int(state.step) - 1)),
                    "time_generation": t1 - t0,
                    "time_scoring": t2 - t1,
                    "time_update": t3 - t2,
                    "new_tokens_per_second": float(np.sum(lengths)) / max(t1 - t0, 1e-9),
                }
                if step % int(config.train.log_every) == 0 or step == total_steps:
                    writer.write(step, m)
                    log.info(
                        "step %d: reward %.3f (minus KL %.3f) KL %.3f entropy %.2f length %.1f EOS %.2f | "
                        "time %.2fs = generation %.2f + scoring %.2f + update %.2f",
                        step, m["reward"], m["reward_minus_kl"], m["kl"], m["entropy"], m["completion_length"],
                        m["eos_rate"], t3 - t0, t1 - t0, t2 - t1, t3 - t2,
                    )  # fmt: skip
                if progress is not None:
                    progress.set_postfix(reward=f"{m['reward']:.3f}", kl=f"{m['kl']:.3f}")
                    progress.update(1)
                if step % int(config.train.eval_every) == 0:
                    run_eval(step, state.params)
                if step % int(config.checkpoint.every) == 0 or step == total_steps:
                    save(step)
                if watcher.should_stop(step):
                    save(step)
                    checkpointer.wait()
                    log.warning("preempted: saved step %d; rerun the same command to resume", step)
                    preempted = True
                    break
            if not preempted and step % int(config.train.eval_every) and step > start_step:
                run_eval(step, state.params)
    finally:
        if progress is not None:
            progress.close()
        checkpointer.close()
        watcher.restore_handler()
    writer.close()
    plot = None
    if bool(config.train.plot) and writer.jsonl_path.exists() and jax.process_index() == 0:
        plot = str(plot_curves(writer.jsonl_path, workdir_path.absolute() / "rloo_curves.png", reward_name))
    summary = RlooSummary(
        workdir=str(workdir_path.absolute()),
        start_step=start_step,
        end_step=step,
        eval_reward_first=eval_history[0].get("reward") if eval_history else None,
        eval_reward_last=eval_history[-1].get("reward") if eval_history else None,
        eval_greedy_first=eval_history[0].get("reward_greedy") if eval_history else None,
        eval_greedy_last=eval_history[-1].get("reward_greedy") if eval_history else None,
        kl_last=last_kl,
        seconds_per_step={k_: float(np.median(v)) for k_, v in times.items() if v},
        checkpoint_dir=str(checkpointer.directory),
        metrics_jsonl=str(writer.jsonl_path.absolute()),
        tensorboard_dir=str(writer.tb_dir.absolute()),
        plot=plot,
        preempted=preempted,
    )
    _log_summary(summary)
    return summary


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def plot_curves(jsonl_path: pathlib.Path, png_path: pathlib.Path, reward_name: str) -> pathlib.Path:
    """Reward (train, held-out sampled and greedy), KL, entropy and completion length per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metrics.read_jsonl(jsonl_path)

    def series(kind: str, key: str) -> tuple[list[int], list[float]]:
        pts = sorted({r_["step"]: r_[key] for r_ in rows if r_.get("kind") == kind and key in r_}.items())
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=110)
    ax = axes[0, 0]
    ax.plot(*series("train", "reward"), label="train (sampled)", lw=1.0, alpha=0.7)
    ax.plot(*series("train", "reward_minus_kl"), label="train minus β·KL", lw=1.0, alpha=0.7)
    ax.plot(*series("eval", "reward"), "o-", label="held-out (sampled)", lw=1.5)
    ax.plot(*series("eval", "reward_greedy"), "s--", label="held-out (greedy)", lw=1.2)
    ax.set_title(f"reward: {reward_name}", fontsize=9)
    ax.legend(fontsize=7)
    for ax, key, title in (
        (axes[0, 1], "kl", "KL(π || π_ref) per completion (nats)"),
        (axes[1, 0], "entropy", "policy entropy (nats / token)"),
        (axes[1, 1], "completion_length", "completion length (tokens)"),
    ):
        ax.plot(*series("train", key), lw=1.2)
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xlabel("RLOO step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def _log_summary(s: RlooSummary) -> None:
    body = [
        f"  held-out reward (sampled)  {_fmt(s.eval_reward_first)} -> {_fmt(s.eval_reward_last)}",
        f"  held-out reward (greedy)   {_fmt(s.eval_greedy_first)} -> {_fmt(s.eval_greedy_last)}",
        f"  KL to the reference        {_fmt(s.kl_last)} (last step)",
    ]
    if s.seconds_per_step:
        t = s.seconds_per_step
        body.append(
            f"  time per step (median)     {t['total']:.2f}s = generation {t['generation']:.2f} + scoring "
            f"{t['scoring']:.2f} + update {t['update']:.2f}"
        )
    run_utils.log_summary(
        log, "RLOO", s.start_step, s.end_step, s.preempted, body,
        [
            ("checkpoints", s.checkpoint_dir),
            ("metrics", s.metrics_jsonl),
            ("tensorboard", f"tensorboard --logdir {s.tensorboard_dir}"),
            ("curves", s.plot),
        ],
    )  # fmt: skip
