"""The train state, the model built from config, and the state's shardings — shared by all trainers."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aya_jax import sharding
from aya_jax.models import cohere, families


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimiser steps taken
    params: Any  # fp32 master weights (config.model.param_dtype)
    opt_state: Any
    rng: jax.Array  # raw uint32 key; split per step by trainers that need randomness


def dtype_from_name(name: str, field: str) -> jnp.dtype:
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{field}: {name!r} is not one of float32, bfloat16, float16")
    return jnp.dtype(name)


def build_model(model_config: Any, vocab_size: int | None) -> tuple[nn.Module, Any]:
    """The model of config.model (its preset picks the family: Cohere decoder or mT5 encoder-decoder, see
    models/families.py); `vocab_size` fills presets whose vocabulary comes from the data."""
    overrides = {k: v for k, v in model_config.overrides.to_dict().items() if v is not None}
    if families.family_of_preset(model_config.preset) == families.MT5:
        cfg = families.resolve_mt5(model_config.preset, vocab_size, overrides)
    else:
        # An explicit vocab_size override wins over the tokenizer's (it may be larger, e.g. padded for sharding).
        vocab_override = overrides.pop("vocab_size", None)
        cfg = cohere.resolve(model_config.preset, vocab_size=vocab_override or vocab_size, **overrides)
        if vocab_override:
            cfg = cfg.replace(vocab_size=vocab_override)
        if vocab_size and cfg.vocab_size < vocab_size:
            raise ValueError(
                f"config.model: preset {model_config.preset!r} has vocab_size {cfg.vocab_size} < the tokenizer's "
                f"{vocab_size}"
            )
    model = families.build_module(
        cfg,
        dtype=dtype_from_name(model_config.dtype, "config.model.dtype"),
        param_dtype=dtype_from_name(model_config.param_dtype, "config.model.param_dtype"),
        remat=model_config.remat,
        scan_layers=bool(model_config.scan_layers),
    )
    return model, cfg


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation, seq_len: int):
    """rng (raw uint32 key) -> TrainState with unboxed params."""

    def init(rng: jax.Array) -> TrainState:
        init_rng, state_rng = jax.random.split(rng)
        params = nn.unbox(model.init(init_rng, *families.dummy_inputs(model, seq_len))["params"])
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_rng
        )

    return init


def state_shardings(
    model: nn.Module, tx: optax.GradientTransformation, seq_len: int, mesh: Mesh, rules: sharding.Rules
) -> tuple[TrainState, TrainState]:
    """(abstract state of ShapeDtypeStructs, matching NamedShardings), computed without allocating.

    Parameter shardings come from the model's logical names through `rules`; optimiser moments inherit the
    sharding of the parameter they track; scalars are replicated.
    """

    def boxed_init(rng):
        boxed = model.init(rng, *families.dummy_inputs(model, seq_len))["params"]
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
