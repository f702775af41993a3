"""Gradient accumulation: one optimiser step over a global batch computed in `accum` microbatches.

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)            # (params, batch) -> ((loss, aux), grads)
    (loss, aux), grads = accumulate(grad_fn, accum)(params, batch)  # the SUM over the microbatches

Row r of the batch goes to microbatch r % accum: [B, ...] -> [accum, B/accum, ...] keeps the batch sharding (each
device's rows stay on it). The microbatches run in a `lax.scan`, so only one microbatch's activations are live.
What comes back is the sum of every microbatch's (loss, aux, grads); the objective normalises it the way its loss
is defined — SFT divides token-summed losses by the batch's token count (so accumulation equals one big batch
exactly), the reward model divides per-microbatch means by `accum`. With accum = 1 it is `grad_fn` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def microbatches(batch: Any, accum: int) -> Any:
    """[B, ...] leaves -> [accum, B / accum, ...]; row r lands in microbatch r % accum."""
    return jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1), batch
    )


def accumulate(grad_fn: Callable[[Any, Any], Any], accum: int) -> Callable[[Any, Any], Any]:
    """`grad_fn(params, batch)` summed over `accum` microbatches of `batch` (see the module docstring)."""
    if accum == 1:
        return grad_fn

    def summed(params: Any, batch: Any) -> Any:
        micro = microbatches(batch, accum)
        first = jax.tree.map(lambda x: x[0], micro)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(grad_fn, params, first))

        def body(total, mb):
            return jax.tree.map(jnp.add, total, grad_fn(params, mb)), None

        return jax.lax.scan(body, zeros, micro)[0]

    return summed
