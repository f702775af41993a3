"""The `dpo` job: offline DPO on preference pairs, then online iterative DPO ranked by a trained reward model,
from an SFT run (the objective: aya_jax/training/dpo.py).

    python -m aya_jax.main --config configs/dpo.py        # after configs/quickstart.py and configs/reward.py

Config -> the policy and its frozen reference on one mesh (aya_jax/training/policy.py) -> the reward model on
the same mesh -> the offline pairs (this host's data shards) and the online / held-out prompt sets -> the
objective in the one loop (aya_jax/training/loop.py). Rerunning the same command resumes.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp

from aya_jax import optimizers, pretrained, rewards
from aya_jax.data import pipeline, preference_default, prompt_converters
from aya_jax.evaluation import periodic
from aya_jax.training import dpo as objective
from aya_jax.training import loop, policy, prompt_sets, rollouts, scoring
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

SECTIONS = ("model", "mesh", "data", "train", "optimizer", "checkpoint", "metrics", "dpo", "evals")
QUICKSTART_HINT = "run the quickstart first: python -m aya_jax.main --config configs/quickstart.py"


def train(config: Any, workdir: str) -> loop.RunSummary:
    d = config.dpo
    with loop.Run.start(config, workdir, SECTIONS) as run:
        seq_len, batch_size = int(config.data.seq_len), int(config.train.global_batch_size)
        tx, schedule = optimizers.make_optimizer(config.optimizer, objective.total_steps_bound(config))

        # Policy, references and the reward model on one mesh.
        setup = policy.setup_policy(run, tx, seq_len=seq_len, missing_hint=QUICKSTART_HINT)
        _check_fit(run, config, setup.model_cfg.max_position_embeddings)
        dtype = pretrained.dtype_from_name(config.model.dtype, "config.model.dtype")
        reward_model = scoring.reward_model_scorer(
            str(d.reward_model),
            run.mesh,
            run.rules,
            vocab_size=setup.vocab_size,
            dtype=dtype,
            field="config.dpo.reward_model",
        )
        trees = {
            "policy state": (setup.state, setup.state_shardings),
            "SFT params (reference, KL)": (setup.ref_params, setup.params_shardings),
        }
        if d.reference == "iteration_start" and int(d.iterations):
            trees["iteration reference"] = (
                setup.ref_params,
                setup.params_shardings,
            )  # a copy of the policy's
        trees["reward model"] = (reward_model.loaded.params, reward_model.loaded.params_shardings)
        ts.log_memory(trees)
        verifiable = None
        if d.verifiable_reward:
            verifiable = scoring.Scorer(
                run, setup.codec, setup.eos_ids, reward_fn=rewards.get_reward(str(d.verifiable_reward))
            )
        log.info(
            "DPO: beta %g (%s%s), %d offline steps, then %d online iteration(s) of %d prompts x k=%d, reference "
            "%s; reward model %s (step %d)", float(d.beta), d.loss_type,
            f", label smoothing {d.label_smoothing}" if float(d.label_smoothing) else "", int(d.offline_steps),
            int(d.iterations), int(d.prompts_per_iteration), int(d.samples_per_prompt), d.reference,
            d.reward_model, reward_model.step,
        )  # fmt: skip

        # Offline pairs (this host's shards, as in SFT), online and held-out prompts (every host all of them).
        resumed = setup.resumed_state or {}
        shards = run.data_shards()
        identity = {
            "seed": int(config.seed),
            "num_shards": shards.num_shards,
            "global_batch_size": batch_size,
        }
        offline_iter = None
        if setup.start_step < int(d.offline_steps):
            policy_spec = pipeline.prepare(config.data)
            pairs_config = preference_default.pairs_data_config(
                config.data, str(d.task), bool(d.default_pairs), policy_spec.vocab, "config.dpo.default_pairs"
            )
            position = loop.check_data_state(resumed, identity) if resumed else 0
            offline_iter = pipeline.HostTrainIterator(
                pipeline.prepare(pairs_config), pairs_config, shard_batch_size=shards.shard_batch,
                shards=shards.host_shards, num_shards=shards.num_shards, seed=int(config.seed),
                start_position=position, make_converter=prompt_converters.PreferencePairFeatureConverter,
                feature_lengths={"prompt": int(d.prompt_len), "chosen": seq_len, "rejected": seq_len},
            )  # fmt: skip
        prompt_args = dict(max_tokens=int(d.prompt_len), chat=config.data.format == "chat")
        train_prompts = prompt_sets.load_prompt_set(
            config.data,
            str(d.prompts_file),
            "train",
            setup.codec,
            **prompt_args,
            field="config.dpo.prompts_file",
        )
        eval_prompts = prompt_sets.load_prompt_set(
            config.data, str(d.eval_prompts_file), "validation", setup.codec, **prompt_args,
            field="config.dpo.eval_prompts_file",
        )  # fmt: skip
        count = int(d.eval_prompts) or len(eval_prompts)  # 0: all
        eval_index = eval_prompts.held_out(count, int(config.seed), run.data_parallel_size)

        with run.context():
            train_step = jax.jit(
                objective.make_train_step(setup.model, tx, schedule, config),
                in_shardings=(setup.state_shardings, setup.params_shardings, None, run.row_sharding(1)),
                out_shardings=(setup.state_shardings, None),
                donate_argnums=(0,),
            )
            copy_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=setup.params_shardings)
        dpo = objective.Dpo(
            run, setup, train_step=train_step, eval_scores=jax.jit(objective.make_eval_scores(setup.model)),
            copy_params=copy_params, reward_model=reward_model, verifiable=verifiable, offline_iter=offline_iter,
            train_prompts=train_prompts, eval_prompts=eval_prompts, eval_index=eval_index,
            sample_params=rollouts.sampling_params(d, setup.eos_ids), resumed=resumed, identity=identity,
        )  # fmt: skip
        benchmarks = periodic.for_run(config, setup.model, setup.codec, run.mesh, run.rules)  # config.evals
        return loop.train(run, dpo, setup.state, setup.start_step, benchmarks=benchmarks)


def _check_fit(run: loop.Run, config: Any, max_positions: int) -> None:
    """Row counts must split over the data-parallel devices; a pair row must fit the model's positions."""
    dp = run.data_parallel_size
    for field, value in (
        ("config.train.global_batch_size", int(config.train.global_batch_size)),
        ("config.dpo.prompts_per_iteration", int(config.dpo.prompts_per_iteration)),
    ):
        if value % dp:
            raise loop.ConfigError(f"{field}: {value} is not divisible by the data-parallel size {dp}")
    if int(config.data.seq_len) > max_positions:
        raise loop.ConfigError(
            f"config.data.seq_len: {config.data.seq_len} exceeds the model's max_position_embeddings {max_positions}"
        )
