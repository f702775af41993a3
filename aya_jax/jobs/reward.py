"""The `reward` job: a reward model from an SFT run, trained with the Bradley–Terry loss on preference pairs
(the objective: aya_jax/training/reward.py).

    python -m aya_jax.main --config configs/reward.py --config.checkpoint.init_from=workdirs/quickstart

Config -> the SFT run's vocabulary and the pairs tokenised with it -> a Cohere backbone of the SFT run's
architecture plus a scalar head -> resume, or the SFT run's params with a new head -> the objective in the one
loop (aya_jax/training/loop.py). The workdir gets `reward_model.json` (architecture and vocabulary) for the
jobs that score with it. Rerunning the same command resumes.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import jax
import numpy as np

from aya_jax import optimizers, pretrained
from aya_jax.data import languages, pipeline, preference_default, prompt_converters
from aya_jax.models import families, reward
from aya_jax.training import loop, policy
from aya_jax.training import reward as objective
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

SECTIONS = ("model", "mesh", "data", "train", "optimizer", "checkpoint", "metrics", "reward")


def train(config: Any, workdir: str) -> loop.RunSummary:
    with loop.Run.start(config, workdir, SECTIONS) as run:
        hint = (
            "run the quickstart first (python -m aya_jax.main --config configs/quickstart.py --workdir "
            f"{config.checkpoint.init_from})"
        )
        source = policy.source_run(str(config.checkpoint.init_from), hint)

        # The SFT run's vocabulary; the preference pairs tokenised with it.
        policy_spec = pipeline.prepare(config.data)
        pairs_config = preference_default.pairs_data_config(
            config.data, str(config.reward.task), bool(config.reward.default_pairs), policy_spec.vocab,
            "config.reward.default_pairs",
        )  # fmt: skip
        spec = pipeline.prepare(pairs_config)
        seq_len = int(config.data.seq_len)
        lengths = {"prompt": int(config.reward.prompt_len), "chosen": seq_len, "rejected": seq_len}

        # The SFT run's architecture (its recorded HF config.json, if any) with a scalar head.
        recorded = pretrained.recorded_hf_source(source.workdir)
        _, model_cfg = pretrained.build_model(
            config.model, spec.vocab_size, recorded[0] if recorded else None
        )
        model = reward.RewardModel(
            model_cfg,
            dtype=pretrained.dtype_from_name(config.model.dtype, "config.model.dtype"),
            param_dtype=pretrained.dtype_from_name(config.model.param_dtype, "config.model.param_dtype"),
            remat=str(config.model.remat),
            scan_layers=bool(config.model.scan_layers),
            scan_unroll=int(config.model.scan_unroll),
        )
        tx, schedule = optimizers.make_optimizer(config.optimizer, int(config.train.steps))
        with run.context():
            abstract_state, state_sh = ts.state_shardings(model, tx, seq_len, run.mesh, run.rules)
        log.info(
            "reward model on %s: %s backbone parameters + a %d-wide head, mesh %s", config.model.preset,
            f"{families.family_of(model_cfg).param_count(model_cfg):,}", model_cfg.hidden_size, dict(run.mesh.shape),
        )  # fmt: skip
        ts.log_memory({"reward model state": (abstract_state, state_sh)})

        shards = run.data_shards()
        identity = {
            "seed": int(config.seed), "num_shards": shards.num_shards,
            "global_batch_size": int(config.train.global_batch_size), "seq_len": seq_len, "task": spec.task_name,
        }  # fmt: skip
        restored = run.restore(abstract_state, state_sh)
        if restored is not None:
            state, start = restored.state, restored.step
            position = loop.check_data_state(restored.saved, identity)
        else:
            with run.context():
                state, init_step = objective.init_state(
                    model, tx, abstract_state, state_sh, source.checkpoints, int(config.seed)
                )
            start, position = 0, 0
            log.info("initialised the backbone from %s step %d, a new head (seed %d)", source.checkpoints,
                     init_step, int(config.seed))  # fmt: skip
        pretrained.write_reward_record(
            run.workdir,
            model_cfg,
            preference_default.vocabulary_path(spec.vocab),
            str(config.checkpoint.init_from),
        )

        shard_args = dict(
            shard_batch_size=shards.shard_batch, shards=shards.host_shards, num_shards=shards.num_shards
        )
        converter = prompt_converters.PreferencePairFeatureConverter
        train_iter = pipeline.HostTrainIterator(
            spec, pairs_config, **shard_args, seed=int(config.seed), start_position=position,
            make_converter=converter, feature_lengths=lengths,
        )  # fmt: skip
        eval_cache: list[Any] = []

        def eval_data() -> list[Any]:
            """Every held-out pair once: each shard's rows past its pair count are repeats, with weight 0."""
            if not eval_cache:
                counts = objective.held_out_rows(
                    spec.task_name, str(config.data.eval_split), shards.num_shards, shards.host_shards,
                    int(config.reward.max_eval_pairs),
                )  # fmt: skip
                num_batches = max(1, max(math.ceil(c / shards.shard_batch) for c in counts))
                batches = pipeline.host_eval_batches(
                    spec, pairs_config, **shard_args, num_batches=num_batches, make_converter=converter,
                    feature_lengths=lengths,
                )  # fmt: skip
                index = np.arange(shards.shard_batch)
                eval_cache.extend(
                    (
                        b,
                        np.concatenate(
                            [(i * shards.shard_batch + index < c).astype(np.float32) for c in counts]
                        ),
                    )
                    for i, b in enumerate(batches)
                )
            return eval_cache

        step_fn = objective.make_train_step(model, tx, schedule, int(config.train.grad_accum_steps))
        with run.context():
            # Batches arrive sharded by Run.global_batch (rank-1 and rank-2 features alike).
            train_step = jax.jit(step_fn, in_shardings=(state_sh, None), out_shardings=(state_sh, None),
                                 donate_argnums=(0,))  # fmt: skip
            eval_step = jax.jit(
                objective.make_eval_step(model, languages.num_language_ids()),
                in_shardings=(state_sh.params, None, run.row_sharding(1)),
            )
        rm = objective.Reward(run, train_step=train_step, eval_step=eval_step, train_iter=train_iter,
                              eval_data=eval_data, identity=identity)  # fmt: skip
        return loop.train(run, rm, state, start)
