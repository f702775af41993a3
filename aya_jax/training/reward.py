"""Reward-model training: a Cohere backbone with a scalar head, Bradley–Terry loss on preference pairs.

    r(x, y)   = RewardModel(prompt ++ completion)     the head on the last real token (aya_jax/models/reward.py)
    loss      = mean over pairs of -log σ(r(x, chosen) - r(x, rejected))   (Bradley–Terry; InstructGPT, arXiv 2203.02155)
    accuracy  = fraction of pairs with r(x, chosen) > r(x, rejected) (ties count 1/2)

The backbone starts from an SFT run's params (`config.checkpoint.init_from`, e.g. the quickstart's workdir), the
head fresh and small (`reward.reward_params_from_policy`); both train. Pairs come from the catalog's
`preference_pairs` task (`config.reward.task`): with `config.reward.default_pairs` the multilingual pairs built
from the embedded default data (aya_jax/data/preference_default.py), else the folder config.data.preference_dir
names. They are tokenised with the SFT run's own vocabulary (`config.data`, as the SFT run had it) and laid out
by `PreferencePairFeatureConverter`: each pair is two right-padded rows sharing the prompt; chosen and rejected
rows go through the model as one [2 x pairs, seq_len] batch.

Held-out evaluation scores every pair of the eval split once (at most `config.reward.max_eval_pairs`) and logs
the pairwise accuracy and loss overall and per language (`accuracy/<code>`, `pairs/<code>`); the last one is
drawn as a bar chart (`reward_accuracy_by_language.png`). Everything else is the one loop's
(aya_jax/training/loop.py). The workdir also gets `reward_model.json` (the architecture and vocabulary), which
`pretrained.load_reward_model` reads to rebuild the model for scoring (RLOO, online DPO:
aya_jax/training/scoring.py).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aya_jax import losses, metrics, plots, pretrained
from aya_jax.data import languages, tasks
from aya_jax.models import reward
from aya_jax.training import accumulate, loop
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

ACCURACY_PLOT = "reward_accuracy_by_language.png"


def pair_scores(
    model: reward.RewardModel, params: Any, batch: dict[str, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """(r_chosen, r_rejected) [pairs]: both sides of every pair in one forward pass of [2 x pairs, len]."""

    def both(name: str) -> jax.Array:
        return jnp.concatenate([batch[f"chosen_{name}"], batch[f"rejected_{name}"]], axis=0)

    scores = model.apply({"params": params}, both("target_tokens"), both("positions"), both("segment_ids"))
    n = batch["chosen_target_tokens"].shape[0]
    return scores[:n], scores[n:]


def make_train_step(model: reward.RewardModel, tx: optax.GradientTransformation, schedule, accum: int):
    """(state, batch) -> (state, metrics): the Bradley–Terry loss of the global batch of pairs. With `accum`
    equal microbatches the mean of their gradients is the gradient of the whole batch's mean loss."""

    def loss_fn(params, batch):
        r_c, r_r = pair_scores(model, params, batch)
        loss, acc = losses.bradley_terry_loss(r_c, r_r)
        return loss, {"accuracy": acc, "margin": jnp.mean(r_c - r_r), "score": jnp.mean((r_c + r_r) / 2)}

    grad_fn = accumulate.accumulate(jax.value_and_grad(loss_fn, has_aux=True), accum)

    def step(state: ts.TrainState, batch: dict[str, jax.Array]):
        # The sum over microbatches of their mean loss / statistics / gradients: / accum is the batch mean.
        (loss, aux), grads = jax.tree.map(lambda x: x / accum, grad_fn(state.params, batch))
        new_state, grad_norm = state.apply_gradients(grads, tx)
        return new_state, {"loss": loss, **aux, "grad_norm": grad_norm, "learning_rate": schedule(state.step)}

    return step


def make_eval_step(model: reward.RewardModel, num_languages: int):
    """(params, batch, weights [pairs]) -> sums over the weighted pairs, overall and per language id: loss,
    correct (ties 1/2) and pairs — sums, so that batches and hosts add up exactly."""

    def step(params: Any, batch: dict[str, jax.Array], weights: jax.Array):
        r_c, r_r = pair_scores(model, params, batch)
        w = weights.astype(jnp.float32)
        nll = jax.nn.softplus(-(r_c - r_r))
        correct = jnp.where(r_c > r_r, 1.0, jnp.where(r_c == r_r, 0.5, 0.0))
        lang = batch["language_id"]

        def per_language(x):
            return jax.ops.segment_sum(x * w, lang, num_segments=num_languages)

        return {
            "loss_sum": jnp.sum(nll * w),
            "correct_sum": jnp.sum(correct * w),
            "pairs": jnp.sum(w),
            "lang_correct": per_language(correct),
            "lang_pairs": per_language(jnp.ones_like(w)),
        }

    return step


def held_out_rows(task_name: str, split: str, num_shards: int, shards: range, max_pairs: int) -> list[int]:
    """How many pairs of `split` each of this host's shards holds (capped so the total is at most
    `max_pairs`, 0 = no cap): an eval batch row past its shard's count is a repeat and gets weight 0."""
    info = tasks.task_info(task_name)
    counts = [sum(1 for _ in info.reader(split, shard_index=s, num_shards=num_shards)) for s in shards]
    if max_pairs:
        cap = max(1, max_pairs // num_shards)
        counts = [min(c, cap) for c in counts]
    return counts


def init_state(model, tx, abstract_state, state_sh, source_checkpoints: pathlib.Path, seed: int):
    """A fresh TrainState: the backbone restored from the SFT checkpoint straight onto its shardings, the head
    new (reward_params_from_policy), the optimiser initialised, the rng split as `make_init_fn` does. Returns
    (state, the source step)."""
    target = pretrained.targets(abstract_state.params["backbone"], state_sh.params["backbone"])
    init_step, policy_params = pretrained.load_params(
        source_checkpoints, target, field="config.checkpoint.init_from"
    )
    param_dtype = abstract_state.params["head"]["kernel"].dtype

    def init(policy_params, rng):
        head_rng, state_rng = jax.random.split(rng)
        params = reward.reward_params_from_policy(policy_params, head_rng, param_dtype)
        return ts.TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_rng
        )

    state = jax.jit(init, out_shardings=state_sh, donate_argnums=(0,))(
        policy_params, jax.random.PRNGKey(seed)
    )
    return state, init_step


def summary_figures(summary: loop.RunSummary, jsonl: pathlib.Path) -> tuple[list[str], dict[str, Any]]:
    """(the summary box's lines on training, the last evaluation). A run that trained or evaluated nothing (a
    rerun of a finished run) takes the whole run's first and last train rows and last evaluation from `jsonl`
    instead, and says that it trained nothing."""
    first, last, evals = summary.first, summary.last, summary.evaluations
    lines = []
    if summary.end_step == summary.start_step and not summary.preempted:
        lines.append(
            f"  nothing trained in this run (resumed at step {summary.start_step}, already finished)"
        )
    if not (first and evals) and jsonl.exists():
        rows = metrics.read_jsonl(jsonl)
        train = [r for r in rows if r.get("kind") == "train"]
        if not first and train:
            first, last = train[0], train[-1]
        evals = evals or [r for r in rows if r.get("kind") == "eval"]
        if lines and (first or evals):
            lines[-1] += "; the run's figures from its metrics.jsonl:"
    if first and first.get("loss") is not None and last.get("loss") is not None:
        lines.append(f"  train loss    {first['loss']:.4f} -> {last['loss']:.4f}")
    return lines, (evals[-1] if evals else {})


# ============================================================================================================
# The objective in the loop
# ============================================================================================================


class Reward(loop.Objective):
    """Reward-model training in the one loop: a batch of pairs per step; every held-out pair scored at step 0
    (the untrained head: chance), every eval_every steps and at the end."""

    title = "reward model"
    eval_at_start = True

    def __init__(
        self, run: loop.Run, *, train_step, eval_step, train_iter, eval_data, identity: dict[str, Any]
    ):
        self.run, self.config = run, run.config
        self.total = int(self.config.train.steps)
        self.train_step, self.eval_step = train_step, eval_step
        self.train_iter, self.eval_data = train_iter, eval_data  # eval_data(): [(host batch, host weights)]
        self.identity = identity

    def step(self, state, iteration):
        state, m = self.train_step(state, self.run.global_batch(next(self.train_iter)))
        return state, loop.Step({**m, "data_position": self.train_iter.position})

    def evaluate(self, state, iteration):
        sums = None
        for host_batch, host_weights in self.eval_data():
            batch = self.run.global_batch(host_batch)
            weights = self.run.global_batch({"w": host_weights})["w"]
            out = self.eval_step(state.params, batch, weights)
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        sums = self.run.to_host(sums)
        n = max(float(sums["pairs"]), 1.0)
        result = {
            "loss": float(sums["loss_sum"]) / n,
            "accuracy": float(sums["correct_sum"]) / n,
            "pairs": float(sums["pairs"]),
        }
        for lid in np.nonzero(sums["lang_pairs"])[0]:
            code = languages.language_code(int(lid))
            result[f"accuracy/{code}"] = float(sums["lang_correct"][lid] / sums["lang_pairs"][lid])
            result[f"pairs/{code}"] = float(sums["lang_pairs"][lid])
        log.info(
            "eval step %d: held-out pairwise accuracy %.3f, loss %.4f (%d pairs, %d languages)", iteration,
            result["accuracy"], result["loss"], int(result["pairs"]), len([k for k in result if k.startswith("pairs/")]),
        )  # fmt: skip
        return result

    def checkpoint_state(self, iteration):
        return {**self.identity, "process_count": jax.process_count(), "position": self.train_iter.position}

    def postfix(self, m):
        return {"loss": f"{m['loss']:.3f}", "acc": f"{m['accuracy']:.2f}"}

    def finish(self, run, state, summary):
        lines, last = summary_figures(summary, run.writer.jsonl_path)
        summary.lines += lines
        per_language = {k[len("accuracy/") :]: v for k, v in last.items() if k.startswith("accuracy/")}
        if last:
            summary.lines.append(
                f"  held-out accuracy {last['accuracy']:.3f} on {int(last['pairs'])} pairs, {len(per_language)} languages"
            )
            summary.results.update(eval_accuracy=last["accuracy"], eval_accuracy_by_language=per_language)
        jsonl = run.writer.jsonl_path
        if run.is_writer and bool(self.config.train.plot) and jsonl.exists():
            out = run.workdir.absolute()
            summary.outputs["curves"] = str(
                plots.reward_curves(jsonl, out / "reward_curves.png", self.config.model.preset)
            )
            if per_language:
                counts = {c: last[f"pairs/{c}"] for c in per_language}
                summary.outputs["per language"] = str(plots.language_bars(
                    per_language, out / ACCURACY_PLOT, overall=last["accuracy"], counts=counts, chance=0.5, xlim=(0, 1),
                    xlabel="held-out pairwise accuracy (pairs in brackets)",
                    title=f"reward model accuracy per language at step {summary.end_step}",
                ))  # fmt: skip
