"""The `rloo` job: REINFORCE leave-one-out from an SFT run, with a verifiable reward or a trained reward model
(the objective: aya_jax/training/rloo.py).

    python -m aya_jax.main --config configs/rloo.py       # after configs/quickstart.py

Config -> the policy and its frozen reference on one mesh (aya_jax/training/policy.py) -> the reward (a
registered function, or a reward model on the same mesh) -> the training and held-out prompt sets -> the
objective in the one loop (aya_jax/training/loop.py). Rerunning the same command resumes.
"""

from __future__ import annotations

import logging
from typing import Any

import jax

from aya_jax import optimizers, pretrained, rewards
from aya_jax.evaluation import periodic
from aya_jax.training import loop, policy, prompt_sets, rollouts, scoring
from aya_jax.training import rloo as objective
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

SECTIONS = ("model", "mesh", "data", "train", "optimizer", "checkpoint", "metrics", "rloo", "evals")
QUICKSTART_HINT = "run the quickstart first: python -m aya_jax.main --config configs/quickstart.py"


def train(config: Any, workdir: str) -> loop.RunSummary:
    r = config.rloo
    k, temperature = int(r.k), float(r.temperature)
    with loop.Run.start(config, workdir, SECTIONS) as run:
        updates_per_step = int(r.num_ppo_epochs) * int(r.num_minibatches)
        tx, schedule = optimizers.make_optimizer(config.optimizer, int(config.train.steps) * updates_per_step)

        # Policy, reference and reward on one mesh.
        setup = policy.setup_policy(run, tx, seq_len=int(r.max_prompt_tokens), missing_hint=QUICKSTART_HINT)
        _check_fit(run, config, setup.model_cfg.max_position_embeddings)
        trees = {
            "policy state": (setup.state, setup.state_shardings),
            "reference params": (setup.ref_params, setup.params_shardings),
        }
        if r.reward_model:
            reward_model = scoring.reward_model_scorer(
                str(r.reward_model), run.mesh, run.rules, vocab_size=setup.vocab_size, field="config.rloo.reward_model",
                dtype=pretrained.dtype_from_name(config.model.dtype, "config.model.dtype"),
            )  # fmt: skip
            scorer = scoring.Scorer(run, setup.codec, setup.eos_ids, reward_model=reward_model)
            trees["reward model params"] = (reward_model.loaded.params, reward_model.loaded.params_shardings)
            reward_name = f"reward model {r.reward_model} (step {reward_model.step})"
        else:
            scorer = scoring.Scorer(
                run, setup.codec, setup.eos_ids, reward_fn=rewards.get_reward(str(r.reward))
            )
            reward_name = f"reward function {r.reward!r}"
        ts.log_memory(trees)
        log.info(
            "RLOO: %d prompts x k=%d per step, beta %g, temperature %g, %d new tokens, %d update(s) per batch, %s",
            int(r.prompts_per_step), k, float(r.beta), temperature, int(r.max_new_tokens), updates_per_step,
            reward_name,
        )  # fmt: skip

        # Prompts: every host holds all of them (the same prompts whatever the host count).
        prompt_args = dict(max_tokens=int(r.max_prompt_tokens), chat=config.data.format == "chat")
        train_prompts = prompt_sets.load_prompt_set(config.data, str(r.prompts_file), "train", setup.codec,
                                                    **prompt_args)  # fmt: skip
        eval_prompts = prompt_sets.load_prompt_set(
            config.data, str(r.eval_prompts_file), "validation", setup.codec, **prompt_args,
            field="config.rloo.eval_prompts_file",
        )  # fmt: skip
        eval_index = eval_prompts.held_out(int(r.eval_prompts), int(config.seed), run.data_parallel_size)
        log.info("prompts: %d for training (%s), %d held out (%s)", len(train_prompts), train_prompts.source,
                 len(eval_index), eval_prompts.source)  # fmt: skip

        with run.context():
            update_step = jax.jit(
                objective.make_update_step(setup.model, tx, temperature, float(r.clip_eps)),
                in_shardings=(setup.state_shardings, None, run.row_sharding(1), run.row_sharding(1), None),
                out_shardings=(setup.state_shardings, None),
                donate_argnums=(0,),
            )
        rloo = objective.Rloo(
            run, setup, score_fn=jax.jit(objective.make_score_fn(setup.model, temperature)),
            advantage_fn=jax.jit(objective.make_advantage_fn(config)), update_step=update_step, scorer=scorer,
            reward_name=reward_name, train_prompts=train_prompts, eval_prompts=eval_prompts, eval_index=eval_index,
            sample_params=rollouts.sampling_params(r, setup.eos_ids),
            greedy_params=rollouts.sampling_params(r, setup.eos_ids, greedy=True), schedule=schedule,
        )  # fmt: skip
        benchmarks = periodic.for_run(config, setup.model, setup.codec, run.mesh, run.rules)  # config.evals
        return loop.train(run, rloo, setup.state, setup.start_step, benchmarks=benchmarks)


def _check_fit(run: loop.Run, config: Any, max_positions: int) -> None:
    """Row counts must split over the data-parallel devices; prompt + completion must fit the positions."""
    r, dp = config.rloo, run.data_parallel_size
    rows = int(r.prompts_per_step) * int(r.k)
    if int(r.prompts_per_step) % dp or (rows // int(r.num_minibatches)) % dp:
        raise loop.ConfigError(
            f"config.rloo.prompts_per_step: {r.prompts_per_step} prompts (and minibatches of "
            f"{rows // int(r.num_minibatches)} rows) must divide by the data-parallel size {dp}"
        )
    need = int(r.max_prompt_tokens) + int(r.max_new_tokens)
    if need > max_positions:
        raise loop.ConfigError(
            f"config.rloo.max_new_tokens: max_prompt_tokens + max_new_tokens = {need} exceeds the model's "
            f"max_position_embeddings {max_positions}"
        )
