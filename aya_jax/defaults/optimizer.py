"""config.optimizer: AdamW with global-norm clipping and a warmup + decay schedule (aya_jax/optimizers.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.learning_rate = 3e-4
    o.schedule = "cosine"  # cosine | linear | constant (after linear warmup)
    o.warmup_steps = 100
    o.end_lr_fraction = 0.1  # cosine / linear decay end: this fraction of learning_rate
    o.b1 = 0.9
    o.b2 = 0.95
    o.eps = 1e-8
    o.weight_decay = 0.1  # matrices only; norm scales are not decayed
    o.grad_clip_norm = 1.0  # 0 disables clipping
    return o


def validate(o: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(o, "optimizer")
    s.greater("learning_rate", 0.0)
    s.one_of("schedule", ("cosine", "linear", "constant"))
    s.at_least("warmup_steps", 0)
    s.in_range("end_lr_fraction", 0.0, 1.0)
    s.in_range("b1", 0.0, 1.0, high_open=True)
    s.in_range("b2", 0.0, 1.0, high_open=True)
    s.greater("eps", 0.0)
    s.at_least("weight_decay", 0.0)
    s.at_least("grad_clip_norm", 0.0, " (0 = no clipping)")
