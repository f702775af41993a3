"""Supervised fine-tuning (SFT) of the Cohere decoder on packed instruction data.

Loss: next-token cross-entropy on target tokens only (prompt tokens carry weight 0), averaged over the
weighted tokens of the whole global batch — with gradient accumulation the sums of all microbatches are
combined before dividing, so accumulating A microbatches equals one big batch. Optional z-loss.

The loop, in order: validate the config (no compile before that) -> data spec and vocabulary -> mesh, model,
optimiser, shardings -> restore the newest loadable checkpoint or initialise -> jit the step with explicit
shardings and donated state -> train with periodic metrics / eval / checkpoints -> final save, summary, plot.
SIGTERM saves and exits 0; rerunning the same command resumes (model, optimiser, step, rng, data position).
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
from flax import linen as nn

from aya_jax import checkpoint as ckpt_lib
from aya_jax import hf, metrics, optimizers, pretrained, sharding
from aya_jax.models import families
from aya_jax.training import loop as run_utils
from aya_jax.training import sft as sft_objective
from aya_jax.training import state as ts

log = logging.getLogger(__name__)


ConfigError = run_utils.ConfigError  # raised by validate_config


# ============================================================================================================
# Config validation
# ============================================================================================================


def validate_config(
    config: Any, num_devices: int, process_count: int
) -> tuple[tuple[int, ...], sharding.Rules]:
    """Check everything that can be checked without data or compilation. Returns (mesh shape, rules)."""
    try:
        shape = sharding.resolve_mesh_shape(config.mesh.axes, config.mesh.shape, num_devices)
    except sharding.ShardingError as e:
        raise ConfigError(str(e)) from None
    try:
        family = families.family_of_preset(config.model.preset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    t = config.train
    for field in ("steps", "global_batch_size", "grad_accum_steps", "log_every"):
        if int(t[field]) < 1:
            raise ConfigError(f"config.train.{field}: must be >= 1, got {t[field]}")
    if str(config.model.hf_init_dir) and str(config.checkpoint.init_from):
        raise ConfigError(
            "config.checkpoint.init_from: set either it or config.model.hf_init_dir, not both (both say where "
            "the initial params come from)"
        )
    if int(config.checkpoint.every) < 1:
        raise ConfigError(f"config.checkpoint.every: must be >= 1, got {config.checkpoint.every}")
    if int(config.data.seq_len) < 2:
        raise ConfigError(f"config.data.seq_len: must be >= 2, got {config.data.seq_len}")
    max_pos = family.max_positions(family.presets[config.model.preset])
    if max_pos is not None:
        max_pos = config.model.overrides.max_position_embeddings or max_pos
        if int(config.data.seq_len) > max_pos:
            raise ConfigError(
                f"config.data.seq_len: {config.data.seq_len} exceeds the model's max_position_embeddings {max_pos}"
            )
    if int(config.data.get("inputs_len", 0) or 0) < 0:
        raise ConfigError(f"config.data.inputs_len: must be >= 0 (0 = seq_len), got {config.data.inputs_len}")
    axes = dict(zip(tuple(config.mesh.axes), shape, strict=True))
    try:
        rules = sharding.normalize_rules(config.mesh.rules)
    except sharding.ShardingError as e:
        raise ConfigError(str(e)) from None
    for name, target in rules:
        for a in target if isinstance(target, tuple) else (target,):
            if a is not None and a not in axes:
                raise ConfigError(
                    f"config.mesh.rules: {name!r} -> unknown mesh axis {a!r} (mesh axes: {tuple(axes)})"
                )
    batch_axes = dict(rules).get("act_batch")
    batch_axes = batch_axes if isinstance(batch_axes, tuple) else (batch_axes,)
    dp = int(np.prod([axes[a] for a in batch_axes if a is not None])) if batch_axes else 1
    gb, accum = int(t.global_batch_size), int(t.grad_accum_steps)
    if gb % (dp * accum):
        raise ConfigError(
            f"config.train.global_batch_size: {gb} is not divisible by data-parallel size {dp} x "
            f"grad_accum_steps {accum} = {dp * accum}"
        )
    if gb % process_count:
        raise ConfigError(f"config.train.global_batch_size: {gb} is not divisible by {process_count} hosts")
    num_shards = int(config.data.num_shards) or process_count
    if int(config.data.num_shards) < 0 or gb % num_shards:
        raise ConfigError(
            f"config.data.num_shards: {config.data.num_shards} must be 0 (one per host) or a positive divisor "
            f"of config.train.global_batch_size {gb}"
        )
    return shape, rules


# ============================================================================================================
# The run
# ============================================================================================================


@dataclasses.dataclass
class RunSummary:
    workdir: str
    start_step: int
    end_step: int
    first_loss: float | None
    last_loss: float | None
    tokens_per_second: float | None
    mfu: float | None
    checkpoint_dir: str
    metrics_jsonl: str
    tensorboard_dir: str
    plot: str | None
    preempted: bool
    language_plot: str | None = None


def train(config: Any, workdir: str) -> RunSummary:
    from aya_jax.data import (  # data stays off the import path of the model code
        feature_converters,
        languages,
        pipeline,
    )

    workdir_path = pathlib.Path(workdir)
    run_utils.initialize_distributed(config.mesh)
    process_index, process_count = jax.process_index(), jax.process_count()
    mesh_shape, rules = validate_config(config, jax.device_count(), process_count)

    # ---- data -------------------------------------------------------------------------------------------
    spec = pipeline.prepare(config.data)
    # With config.model.hf_init_dir, the architecture is the checkpoint's config.json (aya_jax/hf/io.py).
    hf_init_dir = str(config.model.hf_init_dir)
    hf_config = hf.read_config(hf_init_dir) if hf_init_dir else None
    model, model_cfg = pretrained.build_model(config.model, spec.vocab_size, hf_config)
    seq_len = int(config.data.seq_len)
    family = families.family_of(model_cfg)
    feature_lengths = family.feature_lengths(seq_len, int(config.data.inputs_len))

    def make_converter():
        return feature_converters.make_converter(
            family.converter,
            pack=bool(config.data.pack),
            eos_id=spec.eos_id,
            decoder_start_id=family.decoder_start_id(model_cfg),
        )

    # ---- mesh, optimiser, shardings ---------------------------------------------------------------------
    mesh = sharding.make_mesh(tuple(config.mesh.axes), mesh_shape)
    total_steps = int(config.train.steps)
    tx, schedule = optimizers.make_optimizer(config.optimizer, total_steps)
    with mesh, nn.logical_axis_rules(rules):
        abstract_state, state_sh = ts.state_shardings(model, tx, seq_len, mesh, rules)
    per_device = ts.per_device_bytes(abstract_state, state_sh)
    n_params = family.param_count(model_cfg)
    log.info(
        "model %s: %s parameters (%.1f M); state per device %.1f MiB on mesh %s",
        config.model.preset,
        f"{n_params:,}",
        n_params / 1e6,
        per_device / 2**20,
        dict(zip(mesh.axis_names, mesh.devices.shape, strict=True)),
    )

    # ---- restore or initialise --------------------------------------------------------------------------
    # A separate checkpoint directory may be remote (gs://, for multi-host pods); pathlib would mangle "://".
    ckpt_dir = str(config.checkpoint.directory) or workdir_path / "checkpoints"
    checkpointer = ckpt_lib.Checkpointer(
        ckpt_dir, keep=int(config.checkpoint.keep), async_save=bool(config.checkpoint.async_save)
    )
    restored = checkpointer.restore_latest(ckpt_lib.abstract_like(abstract_state, state_sh))
    num_shards, shard_batch, host_shards = run_utils.data_shards(config, mesh, rules, process_count)
    log.info(
        "data: process %d of %d reads shards [%d, %d) of %d, %d rows of each global batch",
        process_index,
        process_count,
        host_shards.start,
        host_shards.stop,
        num_shards,
        len(host_shards) * shard_batch,
    )
    data_identity = {
        "seed": int(config.seed),
        "num_shards": num_shards,
        "global_batch_size": int(config.train.global_batch_size),
        "seq_len": seq_len,
        **({"inputs_len": feature_lengths["inputs"]} if family.encoder_decoder else {}),
        "task": str(config.data.task),
    }
    if restored is not None:
        start_step, state, data_state = restored
        start_position = run_utils.check_data_state(data_state, data_identity)
        log.info("resumed from %s step %d (data position %d)", ckpt_dir, start_step, start_position)
    else:
        init_fn = ts.make_init_fn(model, tx, seq_len)
        with mesh, nn.logical_axis_rules(rules):
            if hf_init_dir:  # the imported weights, streamed onto their shardings, instead of a random init
                state = pretrained.train_state_from_hf(
                    hf_init_dir, model, tx, abstract_state, state_sh, jax.random.PRNGKey(int(config.seed))
                )
                pretrained.record_hf_source(workdir_path, hf_init_dir)
                source = hf_init_dir
            elif str(config.checkpoint.init_from):  # another run's params; fresh optimiser, step 0
                source_step, state = pretrained.train_state_from_orbax(
                    str(config.checkpoint.init_from),
                    tx,
                    abstract_state,
                    state_sh,
                    jax.random.PRNGKey(int(config.seed)),
                )
                source = f"the params of {config.checkpoint.init_from} step {source_step}"
            else:
                state = jax.jit(init_fn, out_shardings=state_sh)(jax.random.PRNGKey(int(config.seed)))
                source = "a new model"
        start_step, start_position = 0, 0
        log.info("initialised %s (seed %d)", source, int(config.seed))

    train_iter = pipeline.HostTrainIterator(
        spec,
        config.data,
        shard_batch_size=shard_batch,
        shards=host_shards,
        num_shards=num_shards,
        seed=int(config.seed),
        start_position=start_position,
        make_converter=make_converter,
        feature_lengths=feature_lengths,
    )

    # ---- compile ----------------------------------------------------------------------------------------
    batch_sh = jax.sharding.NamedSharding(mesh, sharding.batch_spec(rules, 2))
    step_fn = sft_objective.make_train_step(
        model, tx, schedule, float(config.train.z_loss), int(config.train.grad_accum_steps)
    )
    with mesh, nn.logical_axis_rules(rules):
        p_train_step = jax.jit(
            step_fn, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None), donate_argnums=(0,)
        )
    num_langs = languages.num_language_ids()
    p_eval_step = jax.jit(
        sft_objective.make_eval_step(model, num_langs), in_shardings=(state_sh.params, batch_sh)
    )

    writer = metrics.MetricWriter(
        workdir_path, jsonl=bool(config.metrics.jsonl), tensorboard=bool(config.metrics.tensorboard)
    )
    peak, peak_source = metrics.peak_flops_per_device(
        config.model.dtype, float(config.metrics.peak_flops_per_device)
    )
    on_cpu = jax.devices()[0].platform == "cpu"
    # Simulated CPU devices share one host's cores: the measured host peak is the whole budget.
    total_peak = peak if on_cpu else peak * jax.device_count()
    tokens_per_row = family.tokens_per_row(feature_lengths)
    flops_per_token = family.train_flops_per_row(model_cfg, feature_lengths) / tokens_per_row
    tokens_per_step = int(config.train.global_batch_size) * tokens_per_row
    log.info(
        "peak %.1f GFLOP/s per device (%s); %.2f MFLOP per token",
        peak / 1e9,
        peak_source,
        flops_per_token / 1e6,
    )

    watcher = ckpt_lib.PreemptionWatcher()
    eval_data = None

    def run_eval(step: int) -> dict[str, float]:
        nonlocal eval_data
        if eval_data is None:
            eval_data = pipeline.host_eval_batches(
                spec,
                config.data,
                shard_batch_size=shard_batch,
                shards=host_shards,
                num_shards=num_shards,
                num_batches=int(config.train.eval_batches),
                make_converter=make_converter,
                feature_lengths=feature_lengths,
            )
        sums = None
        with mesh, nn.logical_axis_rules(rules):
            for host_b in eval_data:
                out = p_eval_step(state.params, sharding.global_batch_from_host(host_b, mesh, rules))
                sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        sums = jax.device_get(sums)
        denom = max(float(sums["weight_sum"]), 1.0)
        result = {"loss": float(sums["nll_sum"]) / denom, "accuracy": float(sums["correct_sum"]) / denom}
        for lid in np.nonzero(sums["lang_weight_sum"])[0]:
            code = languages.language_code(int(lid))
            result[f"loss/{code}"] = float(sums["lang_nll_sum"][lid] / sums["lang_weight_sum"][lid])
        writer.write(step, result, kind="eval")
        worst = sorted(((v, k[5:]) for k, v in result.items() if k.startswith("loss/")), reverse=True)[:3]
        log.info(
            "eval step %d: loss %.4f acc %.3f (%d languages; highest: %s)",
            step,
            result["loss"],
            result["accuracy"],
            len([k for k in result if k.startswith("loss/")]),
            ", ".join(f"{c} {v:.3f}" for v, c in worst),
        )
        return result

    def data_state(position: int) -> dict[str, Any]:
        return {**data_identity, "process_count": process_count, "position": position}

    # ---- train ------------------------------------------------------------------------------------------
    step = start_step
    first_loss = last_loss = None
    window_t0, window_steps, tps_history = time.perf_counter(), 0, []
    mfu_last = None
    preempted = False
    progress = run_utils.progress_bar(config, start_step, total_steps)
    compile_t0 = time.perf_counter()
    try:
        with mesh, nn.logical_axis_rules(rules):
            while step < total_steps:
                host_b = next(train_iter)
                batch = sharding.global_batch_from_host(host_b, mesh, rules)
                state, step_metrics = p_train_step(state, batch)
                step += 1
                window_steps += 1
                if step == start_step + 1:
                    jax.block_until_ready(step_metrics)
                    log.info("first step compiled and ran in %.1f s", time.perf_counter() - compile_t0)
                    window_t0, window_steps = time.perf_counter(), 0
                if step % int(config.train.log_every) == 0 or step == total_steps:
                    m = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                    now = time.perf_counter()
                    if window_steps:
                        tps = tokens_per_step * window_steps / (now - window_t0)
                        tps_history.append(tps)
                        mfu_last = tps * flops_per_token / total_peak
                        m.update(tokens_per_second=tps, mfu=mfu_last)
                    window_t0, window_steps = now, 0
                    m["data_position"] = train_iter.position
                    writer.write(step, m)
                    first_loss = m["loss"] if first_loss is None else first_loss
                    last_loss = m["loss"]
                    if progress is not None:
                        progress.set_postfix(
                            loss=f"{m['loss']:.3f}", tok_s=f"{m.get('tokens_per_second', 0):.0f}"
                        )
                if progress is not None:
                    progress.update(1)
                if step % int(config.train.eval_every) == 0 and int(config.train.eval_batches) > 0:
                    run_eval(step)
                if step % int(config.checkpoint.every) == 0 or step == total_steps:
                    checkpointer.save(step, state, data_state(train_iter.position))
                if watcher.should_stop(step):
                    checkpointer.save(step, state, data_state(train_iter.position))
                    checkpointer.wait()
                    log.warning(
                        "preempted: saved step %d to %s; rerun the same command to resume", step, ckpt_dir
                    )
                    preempted = True
                    break
    finally:
        if progress is not None:
            progress.close()
        checkpointer.close()
        watcher.restore_handler()

    if not preempted and int(config.train.eval_batches) > 0 and step % int(config.train.eval_every):
        run_eval(step)
    writer.close()
    plot_path = language_plot = None
    if bool(config.train.plot) and process_index == 0 and writer.jsonl_path.exists():
        plot_path = str(
            metrics.plot_loss_curve(
                writer.jsonl_path,
                workdir_path.absolute() / "loss_curve.png",
                title=f"{config.model.preset} SFT on {config.data.task}",
            )
        )
        lang_plot = metrics.plot_language_losses(
            writer.jsonl_path, workdir_path.absolute() / "eval_loss_by_language.png"
        )
        language_plot = str(lang_plot) if lang_plot else None
    tps_mean = float(np.median(tps_history)) if tps_history else None
    summary = RunSummary(
        workdir=str(workdir_path.absolute()),
        start_step=start_step,
        end_step=step,
        first_loss=first_loss,
        last_loss=last_loss,
        tokens_per_second=tps_mean,
        mfu=(tps_mean * flops_per_token / total_peak) if tps_mean else None,
        checkpoint_dir=str(checkpointer.directory),
        metrics_jsonl=str(writer.jsonl_path.absolute()),
        tensorboard_dir=str(writer.tb_dir.absolute()),
        plot=plot_path,
        preempted=preempted,
        language_plot=language_plot,
    )
    _log_summary(summary)
    return summary


def _log_summary(s: RunSummary) -> None:
    body = []
    if s.first_loss is not None:
        body.append(f"  loss          {s.first_loss:.4f} -> {s.last_loss:.4f}")
    if s.tokens_per_second:
        body.append(f"  throughput    {s.tokens_per_second:,.0f} tokens/s   MFU {100 * (s.mfu or 0):.1f}%")
    run_utils.log_summary(
        log, "SFT", s.start_step, s.end_step, s.preempted, body,
        [
            ("checkpoints", s.checkpoint_dir),
            ("metrics", s.metrics_jsonl),
            ("tensorboard", f"tensorboard --logdir {s.tensorboard_dir}"),
            ("loss curve", s.plot),
            ("per language", s.language_plot),
        ],
    )  # fmt: skip
