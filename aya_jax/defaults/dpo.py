"""config.dpo: offline then online iterative DPO (jobs/dpo.py, aya_jax/training/dpo.py)."""

import ml_collections

from aya_jax import rewards
from aya_jax.defaults.checks import Section

LOSS_TYPES = ("sigmoid", "ipo")
REFERENCES = ("iteration_start", "sft")


def defaults() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.beta = 0.1
    d.label_smoothing = 0.0  # > 0: conservative DPO (cDPO)
    d.loss_type = "sigmoid"  # sigmoid (DPO) | ipo
    d.reference = "iteration_start"  # iteration_start | sft (see aya_jax/training/dpo.py)
    # Stage 1: offline pairs.
    d.offline_steps = 40
    d.task = "preference_pairs"  # or preference_pairs_<lang>
    d.default_pairs = (
        True  # the pairs built from the embedded default data (False: config.data.preference_dir)
    )
    d.prompt_len = 48  # prompts keep their last prompt_len tokens (offline pairs and online prompts alike)
    # Stage 2: online iterations.
    d.iterations = 3  # Aya Expanse: 3
    d.reward_model = "workdirs/reward"  # the reward job's workdir (same SFT run, same vocabulary)
    d.prompts_per_iteration = 64
    d.samples_per_prompt = 4  # k: best and worst of k become a pair
    d.missing_eos_penalty = (
        1.0  # subtracted from the RM score of a completion cut at max_new_tokens (ranking)
    )
    d.min_score_gap = 0.0  # a prompt whose best and worst scores differ by no more than this gives no pair
    d.epochs_per_iteration = 2  # passes over each iteration's pairs
    d.temperature = 1.0
    d.top_k = 0
    d.top_p = 1.0
    d.max_new_tokens = 32
    d.prompts_file = ""  # JSONL {prompt, language_code, reference?}; "" = the embedded default data (train)
    # Evaluation (before training, after the offline stage, after every iteration).
    d.eval_prompts_file = ""  # "" = the embedded default data (validation)
    d.eval_prompts = 64  # held-out prompts; 0 = all
    d.eval_samples = 2  # sampled completions per held-out prompt (fixed seed, temperature above)
    d.verifiable_reward = "script"  # a registered reward (aya_jax/rewards.py) also reported; "" = none
    return d


def validate(d: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(d, "dpo")
    s.greater("beta", 0.0)
    s.in_range("label_smoothing", 0.0, 0.5, high_open=True)
    s.one_of("loss_type", LOSS_TYPES)
    s.one_of("reference", REFERENCES)
    s.at_least("offline_steps", 0)
    s.at_least("iterations", 0)
    if d.offline_steps + d.iterations == 0:
        s.fail("offline_steps", "offline_steps and iterations are both 0: nothing to train")
    for field in ("prompts_per_iteration", "epochs_per_iteration", "eval_samples"):
        s.at_least(field, 1)
    s.at_least("samples_per_prompt", 2, " (a best and a worst)")
    s.at_least("eval_prompts", 0, " (0 = all)")
    s.at_least("missing_eos_penalty", 0.0)
    s.at_least("min_score_gap", 0.0)
    s.sampling(sampled="greedy samples of one prompt are all equal")
    if not d.reward_model:
        s.fail(
            "reward_model",
            "empty; online iterations and the evaluation score with a trained reward model (the `reward` job's "
            "workdir: python -m aya_jax.main --config configs/reward.py)",
        )
    seq_len = config.data.seq_len
    if not 0 < d.prompt_len < seq_len:
        s.fail("prompt_len", f"must be in [1, config.data.seq_len={seq_len}), got {d.prompt_len}")
    if d.prompt_len + d.max_new_tokens > seq_len:
        s.fail(
            "max_new_tokens",
            f"prompt_len {d.prompt_len} + max_new_tokens {d.max_new_tokens} must fit a pair row of "
            f"config.data.seq_len={seq_len} tokens",
        )
    if d.verifiable_reward:
        try:
            rewards.get_reward(d.verifiable_reward)
        except ValueError as e:
            s.fail("verifiable_reward", str(e))
