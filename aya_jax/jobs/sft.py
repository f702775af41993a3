"""The `sft` job: supervised fine-tuning of a Cohere decoder or an mT5 encoder-decoder on packed rows.

    python -m aya_jax.main --config configs/quickstart.py            # the embedded default
    python -m aya_jax.main --config configs/sft.py:hf --config.model.hf_init_dir=/ckpt/aya-expanse-8b

Config -> data spec and vocabulary -> the model of config.model (a preset, or the config.json of
config.model.hf_init_dir) -> optimiser and state shardings -> resume, or start from HF weights /
config.checkpoint.init_from / a random init -> the SFT objective (aya_jax/training/sft.py) in the one loop
(aya_jax/training/loop.py). Rerunning the same command resumes (model, optimiser, step, rng, data position).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax

from aya_jax import hf, optimizers, pretrained
from aya_jax.data import feature_converters, languages, pipeline, vocab
from aya_jax.evaluation import periodic
from aya_jax.models import families
from aya_jax.training import loop, prompt_sets
from aya_jax.training import sft as objective
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

SECTIONS = ("model", "mesh", "data", "train", "optimizer", "checkpoint", "metrics", "evals")


def train(config: Any, workdir: str) -> loop.RunSummary:
    with loop.Run.start(config, workdir, SECTIONS) as run:
        hf_init_dir = str(config.model.hf_init_dir)
        hf_config = (
            _read_hf_config(hf_init_dir) if hf_init_dir else None
        )  # before the data: its vocabulary is there
        spec = pipeline.prepare(config.data)
        model, model_cfg = pretrained.build_model(config.model, spec.vocab_size, hf_config)
        family = families.family_of(model_cfg)
        seq_len = int(config.data.seq_len)
        max_positions = family.max_positions(model_cfg)
        if max_positions is not None and seq_len > max_positions:
            raise loop.ConfigError(
                f"config.data.seq_len: {seq_len} exceeds the model's max_position_embeddings {max_positions}"
            )
        lengths = family.feature_lengths(seq_len, int(config.data.inputs_len))

        tx, schedule = optimizers.make_optimizer(config.optimizer, int(config.train.steps))
        with run.context():
            abstract_state, state_sh = ts.state_shardings(model, tx, seq_len, run.mesh, run.rules)
        n_params = family.param_count(model_cfg)
        log.info(
            "model %s: %s parameters (%.1f M); state per device %.1f MiB on mesh %s", config.model.preset,
            f"{n_params:,}", n_params / 1e6, ts.per_device_bytes(abstract_state, state_sh) / 2**20, dict(run.mesh.shape),
        )  # fmt: skip

        shards = run.data_shards()
        identity = {
            "seed": int(config.seed),
            "num_shards": shards.num_shards,
            "global_batch_size": int(config.train.global_batch_size),
            "seq_len": seq_len,
            **({"inputs_len": lengths["inputs"]} if family.encoder_decoder else {}),
            "task": str(config.data.task),
        }
        restored = run.restore(abstract_state, state_sh)
        if restored is not None:
            state, start = restored.state, restored.step
            position = loop.check_data_state(restored.saved, identity)
            log.info("data position %d", position)
        else:
            state, start, position = _initial_state(run, model, tx, abstract_state, state_sh), 0, 0

        def make_converter():
            return feature_converters.make_converter(
                family.converter, pack=bool(config.data.pack), eos_id=spec.eos_id,
                decoder_start_id=family.decoder_start_id(model_cfg),
            )  # fmt: skip

        shard_args = dict(
            shard_batch_size=shards.shard_batch, shards=shards.host_shards, num_shards=shards.num_shards
        )
        train_iter = pipeline.HostTrainIterator(
            spec, config.data, **shard_args, seed=int(config.seed), start_position=position,
            make_converter=make_converter, feature_lengths=lengths,
        )  # fmt: skip
        eval_cache: list[Any] = []

        def eval_batches() -> list[Any]:
            if not eval_cache:
                eval_cache.extend(pipeline.host_eval_batches(
                    spec, config.data, **shard_args, num_batches=int(config.train.eval_batches),
                    make_converter=make_converter, feature_lengths=lengths,
                ))  # fmt: skip
            return eval_cache

        if int(config.train.eval_batches):
            eval_batches()  # now, not at the first evaluation: a split too small fails before any training
        batch_sh = run.row_sharding(2)
        step_fn = objective.make_train_step(
            model, tx, schedule, float(config.train.z_loss), int(config.train.grad_accum_steps)
        )
        with run.context():
            train_step = jax.jit(
                step_fn,
                in_shardings=(state_sh, batch_sh),
                out_shardings=(state_sh, None),
                donate_argnums=(0,),
            )
        eval_step = jax.jit(
            objective.make_eval_step(model, languages.num_language_ids()),
            in_shardings=(state_sh.params, batch_sh),
        )
        tokens_per_row = family.tokens_per_row(lengths)
        throughput = loop.Throughput(
            tokens_per_iteration=int(config.train.global_batch_size) * tokens_per_row,
            flops_per_token=family.train_flops_per_row(model_cfg, lengths) / tokens_per_row,
            dtype=str(config.model.dtype),
        )
        sft = objective.Sft(
            run, train_step=train_step, eval_step=eval_step, train_iter=train_iter, eval_batches=eval_batches,
            identity=identity, throughput=throughput, plot_title=f"{config.model.preset} SFT on {config.data.task}",
            replies=_replies(config, run, model, model_cfg, spec, max_tokens=min(lengths["inputs"], 128)),
        )  # fmt: skip
        benchmarks = periodic.for_run(
            config, model, vocab.SeqioCodec(spec.vocab), run.mesh, run.rules
        )  # config.evals
        return loop.train(run, sft, state, start, benchmarks=benchmarks)


def _read_hf_config(hf_init_dir: str) -> dict[str, Any]:
    try:
        return hf.read_config(hf_init_dir)
    except hf.HfCheckpointError as e:
        raise hf.HfCheckpointError(f"config.model.hf_init_dir: {e}") from None


def _replies(config: Any, run: loop.Run, model: Any, model_cfg: Any, spec: Any, max_tokens: int):
    """params -> the summary's greedy replies to `config.train.sample_prompts` held-out prompts of the embedded
    default data, in the run's row format (None: none asked for)."""
    if not int(config.train.sample_prompts):
        return None
    codec = vocab.SeqioCodec(spec.vocab)
    prompts = prompt_sets.load_prompt_set(
        config.data, "", "validation", codec, max_tokens=max_tokens, chat=config.data.format == "chat",
        field="config.train.sample_prompts",
    )  # fmt: skip
    return functools.partial(
        objective.greedy_replies, run, model, codec=codec, prompts=prompts, count=int(config.train.sample_prompts),
        eos_ids=pretrained.stop_ids(codec, model_cfg), encoder_eos=spec.eos_id if families.family_of(model_cfg).encoder_decoder else None,
    )  # fmt: skip


def _initial_state(run: loop.Run, model, tx, abstract_state, state_sh) -> ts.TrainState:
    """A new run's state: the weights of config.model.hf_init_dir or config.checkpoint.init_from (a fresh
    optimiser, step 0), else a random init."""
    config = run.config
    rng = jax.random.PRNGKey(int(config.seed))
    source = str(config.model.hf_init_dir) or str(config.checkpoint.init_from)
    with run.context():
        if not source:
            state = jax.jit(ts.make_init_fn(model, tx, int(config.data.seq_len)), out_shardings=state_sh)(rng)
            log.info("initialised a new model (seed %d)", int(config.seed))
            return state
        target = pretrained.targets(abstract_state.params, state_sh.params)
        field = "config.model.hf_init_dir" if config.model.hf_init_dir else "config.checkpoint.init_from"
        step, params = pretrained.load_params(
            source, target, scan_layers=bool(model.scan_layers), field=field
        )
        state = ts.state_from_params(params, tx, state_sh, rng)
    if config.model.hf_init_dir:
        pretrained.record_hf_source(run.workdir, source)
    log.info("initialised the params of %s%s (seed %d)", source, "" if step is None else f" step {step}",
             int(config.seed))  # fmt: skip
    return state
