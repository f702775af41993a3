"""optax optimisers and learning-rate schedules from `config.optimizer`."""

from __future__ import annotations

from typing import Any

import jax
import optax

from aya_jax.defaults.checks import ConfigError


class OptimizerConfigError(ConfigError):
    pass


def learning_rate_schedule(opt: Any, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then cosine / linear decay to `end_lr_fraction * lr`, or constant."""
    lr, warmup = float(opt.learning_rate), int(opt.warmup_steps)
    if lr <= 0:
        raise OptimizerConfigError(f"config.optimizer.learning_rate: must be > 0, got {lr}")
    if warmup < 0:
        raise OptimizerConfigError(f"config.optimizer.warmup_steps: must be >= 0, got {warmup}")
    end = lr * float(opt.end_lr_fraction)
    decay_steps = max(total_steps - warmup, 1)
    if opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=float(opt.end_lr_fraction))
    elif opt.schedule == "linear":
        decay = optax.linear_schedule(lr, end, decay_steps)
    elif opt.schedule == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise OptimizerConfigError(
            f"config.optimizer.schedule: {opt.schedule!r} is not one of cosine, linear, constant"
        )
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices only: norm scales (1-D per layer) are not decayed."""

    def keep(path, leaf) -> bool:
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", ""))
        return name != "scale"

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(opt: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with global-norm clipping (config.optimizer). Returns (transformation, schedule)."""
    schedule = learning_rate_schedule(opt, total_steps)
    if float(opt.grad_clip_norm) < 0:
        raise OptimizerConfigError(f"config.optimizer.grad_clip_norm: must be >= 0, got {opt.grad_clip_norm}")
    chain = []
    if float(opt.grad_clip_norm) > 0:
        chain.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
    chain.append(
        optax.adamw(
            schedule,
            b1=float(opt.b1),
            b2=float(opt.b2),
            eps=float(opt.eps),
            weight_decay=float(opt.weight_decay),
            mask=_decay_mask,
        )
    )
    return optax.chain(*chain), schedule
