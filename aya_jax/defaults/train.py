"""config.train: the length, batch and cadence of a training run (aya_jax/training/loop.py). For RLOO a step is
an iteration (sample, score, update); for DPO the offline steps and online iterations are set in config.dpo."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.steps = 1000
    t.global_batch_size = 8  # sequences (pairs, for preference objectives) per optimiser step, all hosts
    t.grad_accum_steps = 1  # microbatches per optimiser step (global_batch_size must divide)
    t.z_loss = 0.0  # SFT: weight of PaLM's z-loss (log² of the softmax normaliser)
    t.log_every = 10
    t.eval_every = 200
    t.eval_batches = 4  # SFT: held-out batches per evaluation (0 = no evaluation)
    t.progress_bar = True
    t.plot = True  # the objective's PNG plots in the workdir at the end
    # SFT: the summary shows the trained model's greedy replies to this many held-out prompts of the embedded
    # default data, each in another language (0: none).
    t.sample_prompts = 3
    # A non-finite loss or gradient norm (training/loop.py): "stop" ends the run at once, saving nothing, with
    # one line naming the step and metric (exit status 3); "skip" drops that update (parameters and optimiser
    # state stay as they were; the step counts), and stops after max_skipped such steps in a row.
    t.nonfinite = "stop"
    t.max_skipped = 10
    return t


def validate(t: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(t, "train")
    for field in ("steps", "global_batch_size", "grad_accum_steps", "log_every", "eval_every", "max_skipped"):
        s.at_least(field, 1)
    s.one_of("nonfinite", ("stop", "skip"))
    s.at_least("eval_batches", 0)
    s.at_least("sample_prompts", 0)
    s.at_least("z_loss", 0.0)
    if t.global_batch_size % t.grad_accum_steps:
        s.fail(
            "global_batch_size",
            f"{t.global_batch_size} is not divisible by grad_accum_steps {t.grad_accum_steps}",
        )
