"""config.rloo: REINFORCE leave-one-out (jobs/rloo.py, aya_jax/training/rloo.py). config.train.steps counts
iterations (sample, score, update)."""

import ml_collections

from aya_jax import rewards
from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    r = ml_collections.ConfigDict()
    r.prompts_per_step = 32  # B prompts per iteration
    r.k = 4  # completions per prompt (TRL's default 2; more samples lower the baseline's variance)
    r.beta = 0.05  # KL coefficient
    r.temperature = 1.0
    r.top_k = 0
    r.top_p = 1.0
    r.max_new_tokens = 32
    r.max_prompt_tokens = 32  # longer prompts keep their last tokens
    r.missing_eos_penalty = 1.0  # subtracted from the score of a completion that did not end with EOS
    r.reward_clip = 0.0  # > 0: clip the (normalised) scores to [-reward_clip, reward_clip]
    r.normalize_rewards = False  # standardise scores over the batch
    r.normalize_advantages = False  # standardise advantages over the batch
    r.num_ppo_epochs = 1  # passes over each batch of samples
    r.num_minibatches = 1  # optimiser steps per pass
    r.clip_eps = 0.2  # PPO clip of the sequence ratio (only matters past the first minibatch); 0 = no clip
    r.reward = "script"  # a registered reward function (aya_jax/rewards.py) ...
    r.reward_model = ""  # ... or a reward-model run's workdir (job "reward"); set exactly one
    r.prompts_file = ""  # JSONL {prompt, language_code, reference?}; "" = the embedded default data (train)
    r.eval_prompts_file = ""  # "" = the embedded default data (validation)
    r.eval_prompts = 128  # held-out prompts per evaluation; 0 = no evaluation
    r.eval_samples = 2  # sampled completions per held-out prompt (at the training temperature)
    r.eval_greedy = True  # also one greedy completion per held-out prompt
    return r


def validate(r: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(r, "rloo")
    s.at_least("k", 2)
    for field in ("prompts_per_step", "max_prompt_tokens", "num_ppo_epochs"):
        s.at_least(field, 1)
    rows = r.prompts_per_step * r.k
    if r.num_minibatches < 1 or rows % r.num_minibatches:
        s.fail(
            "num_minibatches",
            f"must be >= 1 and divide prompts_per_step x k = {rows}, got {r.num_minibatches}",
        )
    s.sampling(sampled="k greedy samples would all be equal")
    for field in ("beta", "clip_eps", "reward_clip"):
        s.at_least(field, 0.0)
    # A negative penalty would reward completions cut at max_new_tokens (config.dpo checks the same).
    s.at_least("missing_eos_penalty", 0.0)
    s.at_least("eval_prompts", 0, " (0 = no evaluation)")
    s.at_least("eval_samples", 0, " (0 = greedy completions only)")
    if bool(r.reward) == bool(r.reward_model):
        s.fail(
            "reward",
            "set exactly one of reward (a registered reward function) and reward_model (a reward-model run's "
            f"workdir); got reward={r.reward!r}, reward_model={r.reward_model!r}",
        )
    if r.reward:
        try:
            rewards.get_reward(r.reward)
        except ValueError as e:
            s.fail("reward", str(e))
