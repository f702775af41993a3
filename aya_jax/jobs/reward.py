"""Reward-model training: a Cohere backbone with a scalar head, Bradley–Terry loss on preference pairs.

    r(x, y)   = RewardModel(prompt ++ completion)     the head on the last real token (aya_jax/models/reward.py)
    loss      = mean over pairs of -log σ(r(x, chosen) - r(x, rejected))          (SPEC §3)
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
drawn as a bar chart (`reward_accuracy_by_language.png`). The loop is SFT's (aya_jax/jobs/sft.py): config
checked before compiling, memory per device logged before the run, donated jitted step with explicit shardings,
JSONL/TensorBoard metrics, checkpoints every `config.checkpoint.every` steps with the data position, SIGTERM
saves and exits, and rerunning the same command resumes. The workdir also gets `reward_model.json` (the
architecture and vocabulary), which `load_reward_model` reads to rebuild the model for scoring (RLOO, online
DPO: aya_jax/rewards.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from aya_jax import checkpoint as ckpt_lib
from aya_jax import losses, metrics, optimizers, pretrained, sharding
from aya_jax.jobs import sft
from aya_jax.models import cohere, families, reward
from aya_jax.training import accumulate
from aya_jax.training import loop as run_utils
from aya_jax.training import policy as policy_state
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

RECORD = "reward_model.json"  # <workdir>/reward_model.json: what load_reward_model rebuilds
ACCURACY_PLOT = "reward_accuracy_by_language.png"


class RewardConfigError(ValueError):
    """A config value that cannot work for reward training; raised before any compilation, naming the field."""


# ============================================================================================================
# Config validation
# ============================================================================================================


def validate_config(
    config: Any, num_devices: int, process_count: int
) -> tuple[tuple[int, ...], sharding.Rules]:
    """SFT's checks (mesh, rules, batch divisibility, lengths) plus the reward-specific ones."""
    try:
        shape, rules = sft.validate_config(config, num_devices, process_count)
    except sft.ConfigError as e:
        raise RewardConfigError(str(e)) from None
    if families.family_of_preset(config.model.preset).encoder_decoder:
        raise RewardConfigError(
            f"config.model.preset: {config.model.preset!r} is not a Cohere decoder; reward models here are a "
            "Cohere backbone with a scalar head"
        )
    r = config.reward
    seq_len = int(config.data.seq_len)
    if not 0 < int(r.prompt_len) < seq_len:
        raise RewardConfigError(
            f"config.reward.prompt_len: must be in [1, config.data.seq_len={seq_len}), got {r.prompt_len}"
        )
    if int(r.max_eval_pairs) < 0:
        raise RewardConfigError(
            f"config.reward.max_eval_pairs: must be >= 0 (0 = all), got {r.max_eval_pairs}"
        )
    if int(config.train.eval_every) < 1:
        raise RewardConfigError(f"config.train.eval_every: must be >= 1, got {config.train.eval_every}")
    if not str(config.checkpoint.init_from):
        raise RewardConfigError(
            "config.checkpoint.init_from: empty; the reward model's backbone starts from an SFT run (e.g. "
            "`python -m aya_jax.main --config configs/quickstart.py --workdir W`, then init_from=W)"
        )
    return shape, rules


# ============================================================================================================
# Steps
# ============================================================================================================


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


# ============================================================================================================
# Loading a trained reward model (for scoring)
# ============================================================================================================


@dataclasses.dataclass
class LoadedRewardModel:
    model: reward.RewardModel
    params: Any  # on `params_shardings`
    params_shardings: Any
    step: int  # the checkpoint step loaded
    vocab_path: str  # the vocabulary its inputs were tokenised with (that of the policy it was trained from)


def write_record(workdir: pathlib.Path, cfg: cohere.CohereConfig, vocab_path: str, init_from: str) -> None:
    """`<workdir>/reward_model.json`: the architecture and vocabulary (process 0 only)."""
    if jax.process_index() != 0:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    record = {"cohere_config": dataclasses.asdict(cfg), "vocab_path": vocab_path, "init_from": init_from}
    (workdir / RECORD).write_text(json.dumps(record, indent=1) + "\n")


def reward_param_shardings(model: reward.RewardModel, mesh: Mesh, rules: sharding.Rules) -> tuple[Any, Any]:
    """(abstract params, NamedShardings) of a reward model from its logical axes and `rules`."""
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    shardings = sharding.tree_shardings(nn.get_partition_spec(boxed), mesh, rules)
    abstract = nn.unbox(boxed)
    sharding.check_divisible(abstract, shardings)
    return abstract, shardings


def load_reward_model(
    path: str | pathlib.Path,
    mesh: Mesh,
    rules: sharding.Rules,
    *,
    dtype: Any = jnp.float32,
    step: int | None = None,
) -> LoadedRewardModel:
    """A trained reward model from its run's workdir (or its checkpoints/ directory): the architecture from
    `reward_model.json`, the params of the newest (or `step`) checkpoint straight onto `rules`' shardings on
    `mesh`, computing in `dtype`."""
    workdir, checkpoints = pretrained.split_checkpoint_path(str(path))
    record_path = workdir / RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{path}: no {RECORD} (not a reward-model run's workdir)")
    record = json.loads(record_path.read_text())
    cfg = cohere.CohereConfig(**record["cohere_config"])
    model = reward.RewardModel(cfg, dtype=jnp.dtype(dtype))
    abstract, shardings = reward_param_shardings(model, mesh, rules)
    loaded_step, params = pretrained.load_orbax_params(
        checkpoints, ckpt_lib.abstract_like(abstract, shardings), step
    )
    log.info("reward model: %s step %d", checkpoints, loaded_step)
    return LoadedRewardModel(model, params, shardings, int(loaded_step), str(record["vocab_path"]))


# ============================================================================================================
# The run
# ============================================================================================================


@dataclasses.dataclass
class RewardSummary:
    workdir: str
    start_step: int
    end_step: int
    first_loss: float | None
    last_loss: float | None
    eval_accuracy: float | None  # held-out pairwise accuracy at the end
    eval_accuracy_by_language: dict[str, float]
    eval_pairs: int
    checkpoint_dir: str
    metrics_jsonl: str
    tensorboard_dir: str
    plot: str | None
    accuracy_plot: str | None
    preempted: bool


def _held_out_rows(task_name: str, split: str, num_shards: int, shards: range, max_pairs: int) -> list[int]:
    """How many pairs of `split` each of this host's shards holds (capped so the total is at most
    `max_pairs`, 0 = no cap): an eval batch row past its shard's count is a repeat and gets weight 0."""
    from aya_jax.data import tasks

    info = tasks.task_info(task_name)
    counts = [sum(1 for _ in info.reader(split, shard_index=s, num_shards=num_shards)) for s in shards]
    if max_pairs:
        cap = max(1, max_pairs // num_shards)
        counts = [min(c, cap) for c in counts]
    return counts


def train(config: Any, workdir: str) -> RewardSummary:
    from aya_jax.data import languages, pipeline, preference_default, prompt_converters

    workdir_path = pathlib.Path(workdir)
    run_utils.initialize_distributed(config.mesh)
    process_index, process_count = jax.process_index(), jax.process_count()
    mesh_shape, rules = validate_config(config, jax.device_count(), process_count)
    init_from = str(config.checkpoint.init_from)
    try:
        source_workdir, source_checkpoints = pretrained.split_checkpoint_path(init_from)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config.checkpoint.init_from: no checkpoint at {init_from}; run the quickstart first "
            f"(python -m aya_jax.main --config configs/quickstart.py --workdir {init_from})"
        ) from None

    # ---- data: the SFT run's vocabulary, the preference pairs tokenised with it --------------------------
    policy_spec = pipeline.prepare(config.data)
    pairs_config = preference_default.pairs_data_config(
        config.data, str(config.reward.task), bool(config.reward.default_pairs), policy_spec.vocab,
        "config.reward.default_pairs",
    )  # fmt: skip
    spec = pipeline.prepare(pairs_config)
    seq_len = int(config.data.seq_len)
    lengths = {"prompt": int(config.reward.prompt_len), "chosen": seq_len, "rejected": seq_len}

    # ---- mesh, model, optimiser, shardings ----------------------------------------------------------------
    recorded = pretrained.recorded_hf_source(source_workdir)
    _, model_cfg = pretrained.build_model(config.model, spec.vocab_size, recorded[0] if recorded else None)
    model = reward.RewardModel(
        model_cfg,
        dtype=pretrained.dtype_from_name(config.model.dtype, "config.model.dtype"),
        param_dtype=pretrained.dtype_from_name(config.model.param_dtype, "config.model.param_dtype"),
        remat=str(config.model.remat),
        scan_layers=bool(config.model.scan_layers),
    )
    mesh = sharding.make_mesh(tuple(config.mesh.axes), mesh_shape)
    total_steps = int(config.train.steps)
    tx, schedule = optimizers.make_optimizer(config.optimizer, total_steps)
    with mesh, nn.logical_axis_rules(rules):
        abstract_state, state_sh = ts.state_shardings(model, tx, seq_len, mesh, rules)
    log.info(
        "reward model on %s: %s backbone parameters + a %d-wide head, mesh %s",
        config.model.preset, f"{cohere.param_count(model_cfg):,}", model_cfg.hidden_size,
        dict(zip(mesh.axis_names, mesh.devices.shape, strict=True)),
    )  # fmt: skip
    policy_state.log_memory({"reward model state": (abstract_state, state_sh)})

    # ---- restore or initialise --------------------------------------------------------------------------
    ckpt_dir = str(config.checkpoint.directory) or workdir_path / "checkpoints"
    checkpointer = ckpt_lib.Checkpointer(
        ckpt_dir, keep=int(config.checkpoint.keep), async_save=bool(config.checkpoint.async_save)
    )
    restored = checkpointer.restore_latest(ckpt_lib.abstract_like(abstract_state, state_sh))
    num_shards, shard_batch, host_shards = run_utils.data_shards(config, mesh, rules, process_count)
    data_identity = {
        "seed": int(config.seed),
        "num_shards": num_shards,
        "global_batch_size": int(config.train.global_batch_size),
        "seq_len": seq_len,
        "task": spec.task_name,
    }
    if restored is not None:
        start_step, state, data_state = restored
        start_position = run_utils.check_data_state(data_state, data_identity)
        log.info(
            "resumed from %s step %d (data position %d)", checkpointer.directory, start_step, start_position
        )
    else:
        with mesh, nn.logical_axis_rules(rules):
            state, init_step = _init_state(
                model, tx, abstract_state, state_sh, source_checkpoints, int(config.seed)
            )
        start_step, start_position = 0, 0
        log.info(
            "initialised the backbone from %s step %d, a new head (seed %d)",
            source_checkpoints,
            init_step,
            int(config.seed),
        )
    write_record(workdir_path, model_cfg, preference_default.vocabulary_path(spec.vocab), init_from)

    def make_converter():
        return prompt_converters.PreferencePairFeatureConverter()

    train_iter = pipeline.HostTrainIterator(
        spec, pairs_config, shard_batch_size=shard_batch, shards=host_shards, num_shards=num_shards,
        seed=int(config.seed), start_position=start_position, make_converter=make_converter, feature_lengths=lengths,
    )  # fmt: skip

    # ---- compile ----------------------------------------------------------------------------------------
    row_sh = jax.sharding.NamedSharding(mesh, sharding.batch_spec(rules, 1))
    step_fn = make_train_step(model, tx, schedule, int(config.train.grad_accum_steps))
    with mesh, nn.logical_axis_rules(rules):
        # Batches arrive sharded by global_batch_from_host (rank-1 and rank-2 features alike).
        p_train_step = jax.jit(
            step_fn, in_shardings=(state_sh, None), out_shardings=(state_sh, None), donate_argnums=(0,)
        )
        p_eval_step = jax.jit(
            make_eval_step(model, languages.num_language_ids()), in_shardings=(state_sh.params, None, row_sh)
        )

    writer = metrics.MetricWriter(
        workdir_path, jsonl=bool(config.metrics.jsonl), tensorboard=bool(config.metrics.tensorboard)
    )
    watcher = ckpt_lib.PreemptionWatcher()
    eval_data: list[tuple[dict[str, np.ndarray], np.ndarray]] | None = None
    last_eval: dict[str, float] = {}

    def run_eval(step: int) -> dict[str, float]:
        nonlocal eval_data, last_eval
        if eval_data is None:
            counts = _held_out_rows(
                spec.task_name,
                str(config.data.eval_split),
                num_shards,
                host_shards,
                int(config.reward.max_eval_pairs),
            )
            num_batches = max(1, max(math.ceil(c / shard_batch) for c in counts))
            batches = pipeline.host_eval_batches(
                spec, pairs_config, shard_batch_size=shard_batch, shards=host_shards, num_shards=num_shards,
                num_batches=num_batches, make_converter=make_converter, feature_lengths=lengths,
            )  # fmt: skip
            # Shard s's rows of batch b are its rows b*shard_batch ..; those past its count are repeats.
            index = np.arange(shard_batch)
            eval_data = [
                (b, np.concatenate([(i * shard_batch + index < c).astype(np.float32) for c in counts]))
                for i, b in enumerate(batches)
            ]
        sums = None
        with mesh, nn.logical_axis_rules(rules):
            for host_b, host_w in eval_data:
                batch = sharding.global_batch_from_host(host_b, mesh, rules)
                weights = sharding.global_batch_from_host({"w": host_w}, mesh, rules)["w"]
                out = p_eval_step(state.params, batch, weights)
                sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        sums = jax.device_get(sums)
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
        writer.write(step, result, kind="eval")
        log.info(
            "eval step %d: held-out pairwise accuracy %.3f, loss %.4f (%d pairs, %d languages)",
            step, result["accuracy"], result["loss"], int(result["pairs"]), len([k for k in result if k.startswith("pairs/")]),
        )  # fmt: skip
        last_eval = result
        return result

    def data_state(position: int) -> dict[str, Any]:
        return {**data_identity, "process_count": process_count, "position": position, "init_from": init_from}

    # ---- train ------------------------------------------------------------------------------------------
    step = start_step
    first_loss = last_loss = None
    preempted = False
    progress = run_utils.progress_bar(config, start_step, total_steps, "reward")
    try:
        with mesh, nn.logical_axis_rules(rules):
            if start_step == 0:
                run_eval(0)  # the untrained head: chance, whatever the backbone knows
            while step < total_steps:
                batch = sharding.global_batch_from_host(next(train_iter), mesh, rules)
                state, step_metrics = p_train_step(state, batch)
                step += 1
                if step % int(config.train.log_every) == 0 or step == total_steps:
                    m = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                    m["data_position"] = train_iter.position
                    writer.write(step, m)
                    first_loss = m["loss"] if first_loss is None else first_loss
                    last_loss = m["loss"]
                    if progress is not None:
                        progress.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.2f}")
                if progress is not None:
                    progress.update(1)
                if step % int(config.train.eval_every) == 0:
                    run_eval(step)
                if step % int(config.checkpoint.every) == 0 or step == total_steps:
                    checkpointer.save(step, state, data_state(train_iter.position))
                if watcher.should_stop(step):
                    checkpointer.save(step, state, data_state(train_iter.position))
                    checkpointer.wait()
                    log.warning(
                        "preempted: saved step %d to %s; rerun the same command to resume",
                        step,
                        checkpointer.directory,
                    )
                    preempted = True
                    break
            if not preempted and (not last_eval or step % int(config.train.eval_every)):
                run_eval(step)
    finally:
        if progress is not None:
            progress.close()
        checkpointer.close()
        watcher.restore_handler()
    writer.close()

    plot_path = accuracy_plot = None
    if bool(config.train.plot) and process_index == 0 and writer.jsonl_path.exists():
        plot_path = str(
            plot_training(
                writer.jsonl_path, workdir_path.absolute() / "reward_curves.png", config.model.preset
            )
        )
        if last_eval:
            accuracy_plot = str(
                plot_language_accuracy(last_eval, step, workdir_path.absolute() / ACCURACY_PLOT)
            )
    summary = RewardSummary(
        workdir=str(workdir_path.absolute()),
        start_step=start_step,
        end_step=step,
        first_loss=first_loss,
        last_loss=last_loss,
        eval_accuracy=last_eval.get("accuracy"),
        eval_accuracy_by_language={
            k[len("accuracy/") :]: v for k, v in last_eval.items() if k.startswith("accuracy/")
        },
        eval_pairs=int(last_eval.get("pairs", 0)),
        checkpoint_dir=str(checkpointer.directory),
        metrics_jsonl=str(writer.jsonl_path.absolute()),
        tensorboard_dir=str(writer.tb_dir.absolute()),
        plot=plot_path,
        accuracy_plot=accuracy_plot,
        preempted=preempted,
    )
    _log_summary(summary)
    return summary


def _init_state(model, tx, abstract_state, state_sh, source_checkpoints: pathlib.Path, seed: int):
    """A fresh TrainState: the backbone restored from the SFT checkpoint straight onto its shardings, the head
    new (reward_params_from_policy), the optimiser initialised, the rng split as `make_init_fn` does. Returns
    (state, the source step)."""
    target = ckpt_lib.abstract_like(abstract_state.params["backbone"], state_sh.params["backbone"])
    init_step, policy_params = pretrained.load_orbax_params(source_checkpoints, target)
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


def plot_training(jsonl_path: pathlib.Path, png_path: pathlib.Path, preset: str) -> pathlib.Path:
    """Two panels from metrics.jsonl: the Bradley–Terry loss and the pairwise accuracy, train (per logged step)
    and held-out (per evaluation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metrics.read_jsonl(jsonl_path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for ax, key, label in (
        (axes[0], "loss", "Bradley–Terry loss -log σ(r_c - r_r)"),
        (axes[1], "accuracy", "pairwise accuracy"),
    ):
        for kind, style, name in (("train", "-", "train"), ("eval", "o-", "held-out")):
            points = sorted({r["step"]: r[key] for r in rows if r.get("kind") == kind and key in r}.items())
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, lw=1.2, label=name)
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].axhline(0.5, color="gray", lw=1, ls="--")
    fig.suptitle(f"reward model ({preset})", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def plot_language_accuracy(result: dict[str, float], step: int, png_path: pathlib.Path) -> pathlib.Path:
    """Bar chart of held-out pairwise accuracy per language (an eval row's `accuracy/<code>`, `pairs/<code>`),
    most pairs first, with chance (0.5) and the overall accuracy marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(
        ((result[f"pairs/{k[9:]}"], k[9:], v) for k, v in result.items() if k.startswith("accuracy/")),
        key=lambda r: (-r[0], r[1]),
    )
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.16 * len(rows)), dpi=110)
    ax.barh(range(len(rows)), [r[2] for r in rows], color="tab:green")
    ax.axvline(0.5, color="gray", lw=1, ls="--", label="chance 0.5")
    ax.axvline(
        result["accuracy"], color="tab:orange", lw=1.2, label=f"all languages {result['accuracy']:.3f}"
    )
    ax.set_yticks(range(len(rows)), [f"{code} ({int(n)})" for n, code, _ in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # most pairs at the top
    ax.set_xlim(0, 1)
    ax.set_xlabel("held-out pairwise accuracy (pairs in brackets)")
    ax.set_title(f"reward model accuracy per language at step {step}")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def _log_summary(s: RewardSummary) -> None:
    body = []
    if s.first_loss is not None:
        body.append(f"  train loss    {s.first_loss:.4f} -> {s.last_loss:.4f}")
    if s.eval_accuracy is not None:
        body.append(
            f"  held-out accuracy {s.eval_accuracy:.3f} on {s.eval_pairs} pairs, "
            f"{len(s.eval_accuracy_by_language)} languages"
        )
    run_utils.log_summary(
        log, "reward model", s.start_step, s.end_step, s.preempted, body,
        [
            ("checkpoints", s.checkpoint_dir),
            ("metrics", s.metrics_jsonl),
            ("tensorboard", f"tensorboard --logdir {s.tensorboard_dir}"),
            ("curves", s.plot),
            ("per language", s.accuracy_plot),
        ],
    )  # fmt: skip
