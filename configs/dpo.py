"""DPO from the quickstart's SFT policy: offline on preference pairs, then online iterative DPO ranked by a
trained reward model (aya_jax/jobs/dpo.py), on CPU.

Launch (from the repository root; the SFT and reward-model runs first):

    python -m aya_jax.main --config configs/quickstart.py                      # SFT policy -> workdirs/quickstart
    python -m aya_jax.main --config configs/reward.py                          # reward model -> workdirs/reward
    python -m aya_jax.main --config configs/dpo.py                             # DPO -> workdirs/dpo

Variants:

    --config.dpo.reference=sft                 # every iteration anchored to the SFT policy (default: the
                                               # policy at the start of each iteration)
    --config.dpo.offline_steps=0               # online iterations only
    --config.dpo.iterations=0                  # offline DPO only
    --config.dpo.label_smoothing=0.1           # conservative DPO;  --config.dpo.loss_type=ipo  for IPO
    --config.dpo.default_pairs=False --config.data.preference_dir=/data/pairs    # your own offline pairs

`config.model` / `config.data` describe the SFT run (architecture, vocabulary); `config.data.seq_len` is the
length of a pair row (prompt + completion). Held-out prompts are the default data's validation split; besides the
reward model's score, the verifiable reward `script` (the fraction of the completion's letters in the script of
the language asked for, aya_jax/rewards.py) is reported for every evaluation. Rerunning the same command resumes.
"""

import ml_collections

from configs import quickstart


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = quickstart.get_config()  # the SFT run's model and data config: same architecture and vocabulary
    config.job = "dpo"
    config.workdir = "workdirs/dpo"
    config.checkpoint.init_from = "workdirs/quickstart"
    config.checkpoint.every = 50
    config.checkpoint.keep = 2

    config.data.seq_len = 96  # a pair row: prompt_len + completion (96 holds 98% of the default pairs whole)
    config.train.global_batch_size = 16  # pairs per optimiser step
    config.train.log_every = 1

    config.optimizer.learning_rate = 3e-4  # the tiny CPU model; ~5e-7 to 5e-6 for billions of parameters
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 5
    config.optimizer.weight_decay = 0.0  # the reference and β keep the policy near where it started
    config.optimizer.grad_clip_norm = 1.0

    # config.dpo (aya_jax/defaults/dpo.py): 40 offline steps, then 3 online iterations of 64 prompts x k=4.
    return config
