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

    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.weight_decay = 0.0  # no pull towards zero: the KL term keeps the policy near the SFT one
    config.optimizer.grad_clip_norm = 1.0

    # config.rloo (aya_jax/defaults/rloo.py): 32 prompts x k=4 per step, the `script` reward, beta 0.05.
    return config
