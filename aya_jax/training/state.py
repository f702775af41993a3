"""The train state and its shardings — shared by every objective (aya_jax/training/) and the jobs."""

from __future__ import annotations

import functools
import logging
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aya_jax import sharding
from aya_jax.models import families

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimiser steps taken
    params: Any  # fp32 master weights (config.model.param_dtype)
    opt_state: Any
    rng: jax.Array  # raw uint32 key; split per step by trainers that need randomness

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> tuple[TrainState, jax.Array]:
        """One optimiser step: (the new state, the global norm of `grads` before clipping). Gradients with a
        non-finite norm change nothing but the step count: parameters and optimiser moments keep their values
        (one NaN would poison both for good), and the loop's guard (config.train.nonfinite) decides whether the
        run stops or goes on (training/loop.py)."""
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        finite = jnp.isfinite(grad_norm)
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
        return self.replace(
            step=self.step + 1, params=keep(params, self.params), opt_state=keep(opt_state, self.opt_state)
        ), grad_norm


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation, seq_len: int):
    """rng (raw uint32 key) -> TrainState with unboxed params."""

    def init(rng: jax.Array) -> TrainState:
        init_rng, state_rng = jax.random.split(rng)
        params = nn.unbox(model.init(init_rng, *families.family_of(model).init_inputs(seq_len))["params"])
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_rng
        )

    return init


def state_from_params(
    params: Any, tx: optax.GradientTransformation, state_shardings: TrainState, rng: jax.Array
) -> TrainState:
    """A new run's state around loaded params (an HF import, another run's checkpoint): step 0, the optimiser
    initialised from them, the rng split exactly as `make_init_fn` does. `params` are donated."""

    def init(params: Any, rng: jax.Array) -> TrainState:
        _, state_rng = jax.random.split(rng)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_rng
        )

    return jax.jit(init, out_shardings=state_shardings, donate_argnums=(0,))(params, rng)


def state_shardings(
    model: nn.Module, tx: optax.GradientTransformation, seq_len: int, mesh: Mesh, rules: sharding.Rules
) -> tuple[TrainState, TrainState]:
    """(abstract state of ShapeDtypeStructs, matching NamedShardings), computed without allocating.

    Parameter shardings come from the model's logical names through `rules`; optimiser moments inherit the
    sharding of the parameter they track; scalars are replicated.
    """

    def boxed_init(rng):
        boxed = model.init(rng, *families.family_of(model).init_inputs(seq_len))["params"]
        return boxed, tx.init(nn.unbox(boxed))

    boxed_params, abstract_opt = jax.eval_shape(boxed_init, jax.random.PRNGKey(0))
    param_specs = nn.get_partition_spec(boxed_params)
    param_shardings = sharding.tree_shardings(param_specs, mesh, rules)
    abstract_params = nn.unbox(boxed_params)
    sharding.check_divisible(abstract_params, param_shardings)

    # Optimiser state: any subtree shaped like the params (Adam's mu and nu) gets the params' shardings.
    params_treedef = jax.tree.structure(abstract_params)
    replicated = NamedSharding(mesh, PartitionSpec())

    def opt_sharding(node):
        if jax.tree.structure(node) == params_treedef:
            return param_shardings
        return jax.tree.map(lambda _: replicated, node)

    opt_shardings = jax.tree.map(
        opt_sharding, abstract_opt, is_leaf=lambda n: jax.tree.structure(n) == params_treedef
    )
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=abstract_params,
        opt_state=abstract_opt,
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings, rng=replicated)
    return abstract, shardings


def per_device_bytes(abstract_tree: Any, shardings: Any) -> int:
    """Bytes one device holds for a sharded pytree (largest shard per leaf)."""
    total = 0
    for leaf, sh in zip(
        jax.tree.leaves(abstract_tree),
        jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding)),
        strict=True,
    ):
        shard_shape = sh.shard_shape(leaf.shape)
        n = 1
        for d in shard_shape:
            n *= d
        total += n * jnp.dtype(leaf.dtype).itemsize
    return total


def log_memory(named_trees: dict[str, tuple[Any, Any]], logger: Any = None) -> dict[str, int]:
    """Log the per-device MiB of each named (tree of arrays or ShapeDtypeStructs, shardings) and their total,
    before anything runs; returns the bytes by name (plus "total"). Shardings may be one NamedSharding for the
    whole tree."""
    logger = logger or log
    report: dict[str, int] = {}
    for name, (tree, shardings) in named_trees.items():
        if isinstance(shardings, NamedSharding):
            shardings = jax.tree.map(lambda _, s=shardings: s, tree)
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype), tree)
        report[name] = per_device_bytes(shapes, shardings)
    report["total"] = sum(report.values())
    width = max(len(n) for n in report)
    for name, nbytes in report.items():
        logger.info("memory per device: %-*s %10.1f MiB", width, name, nbytes / 2**20)
    return report
