"""RLOO (aya_jax/jobs/rloo.py) from the quickstart's SFT policy, with a verifiable reward, on CPU.

Launch (from the repository root; the quickstart's run must exist first):

    python -m aya_jax.main --config configs/quickstart.py            # the SFT policy -> workdirs/quickstart
    python -m aya_jax.main --config configs/rloo.py                  # RLOO -> workdirs/rloo

Variants:

    --config.checkpoint.init_from=/path/to/sft_workdir                  # another SFT run (same vocabulary)
    --config.rloo.reward=chrf                                           # another registered reward function
    --config.rloo.reward='' --config.rloo.reward_model=workdirs/reward  # a trained reward model instead
    --config.rloo.num_ppo_epochs=2 --config.rloo.num_minibatches=2      # four clipped updates per batch

The default reward, `script`, is the fraction of the completion's letters written in a script of the language
the prompt asks for (aya_jax/rewards.py): anyone can check it, and the quickstart's policy gets it only partly
right (about a third of the letters), so it has room to rise. Rerunning the same command resumes.
"""

import ml_collections

from configs import quickstart


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = quickstart.get_config()  # the SFT run's model and data config: same architecture and vocabulary
    config.job = "rloo"
    config.workdir = "workdirs/rloo"
    config.checkpoint.init_from = "workdirs/quickstart"  # the quickstart's default workdir
    config.checkpoint.every = 10
    config.checkpoint.keep = 2

    config.train.steps = 40  # RLOO iterations (sample -> score -> update)
    config.train.log_every = 1
    config.train.eval_every = 10
    config.train.eval_batches = 0  # SFT-only field (held-out evaluation here is config.rloo.eval_*)

    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.weight_decay = 0.0  # no pull towards zero: the KL term keeps the policy near the SFT one
    config.optimizer.grad_clip_norm = 1.0

    r = config.rloo = ml_collections.ConfigDict()
    r.prompts_per_step = 32  # B prompts per iteration
    r.k = 4  # completions per prompt (SPEC / TRL default 2; more samples lower the baseline's variance)
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
    r.eval_prompts = 128  # held-out prompts per evaluation
    r.eval_samples = 2  # sampled completions per held-out prompt (at the training temperature)
    r.eval_greedy = True  # also one greedy completion per held-out prompt
    return config
