"""Parameter count and per-device memory of a preset on a mesh, without allocating anything.

python -m aya_jax.main --config configs/model_info.py:aya-expanse-8b --config.mesh.shape='(1,8,1)'
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from aya_jax import defaults, sharding
from aya_jax.models import families


def shard_elements(shape: tuple[int, ...], spec: Any, axis_sizes: dict[str, int], name: str) -> int:
    n = 1
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        split = 1
        for a in axes if isinstance(axes, tuple) else (axes,):
            split *= axis_sizes[a] if a is not None else 1
        if dim % split:
            raise sharding.ShardingError(
                f"{name}: dimension {dim} does not divide by mesh axes {axes} ({split})"
            )
        n *= dim // split
    return n


def memory_report(
    preset: str,
    axes: tuple[str, ...],
    shape: tuple[int, ...],
    rules: Any,
    num_devices: int,
    vocab_size: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    overrides = dict(overrides or {})
    family = families.family_of_preset(preset)
    # A preset whose vocabulary comes from the data is sized as Aya's 256k here unless told otherwise.
    placeholder = not family.presets[preset].vocab_size
    cfg = family.resolve(preset, vocab_size or (256000 if placeholder else None), overrides)
    shape = sharding.resolve_mesh_shape(axes, shape, num_devices)
    axis_sizes = dict(zip(axes, shape, strict=True))
    rules = sharding.normalize_rules(rules)
    model = family.build(cfg, dtype=jnp.float32, param_dtype=jnp.float32, remat="none", scan_layers=True)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), *family.init_inputs(8))["params"]
    specs = nn.get_partition_spec(boxed)
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(boxed))[0]
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    total, per_device = 0, 0
    for (path, leaf), spec in zip(flat, flat_specs, strict=True):
        mesh_spec = sharding.logical_to_spec(tuple(spec), rules)
        total += math.prod(leaf.shape)
        per_device += shard_elements(leaf.shape, mesh_spec, axis_sizes, jax.tree_util.keystr(path))
    gib = 2**30
    return {
        "preset": preset,
        "parameters": total,
        "parameters_formula": family.param_count(cfg),
        "mesh": axis_sizes,
        "per_device_params_gib_fp32": per_device * 4 / gib,
        "per_device_params_gib_bf16": per_device * 2 / gib,
        # AdamW training: fp32 master weights + two fp32 moments (+ fp32 gradients transiently).
        "per_device_train_state_gib": per_device * 12 / gib,
        "per_device_train_state_plus_grads_gib": per_device * 16 / gib,
    }


def run(config: Any, workdir: str) -> dict[str, Any]:
    defaults.validate(config, ("model", "mesh", "model_info"))
    del workdir
    report = memory_report(
        config.model.preset,
        tuple(config.mesh.axes),
        tuple(config.mesh.shape),
        config.mesh.rules,
        int(config.model_info.num_devices) or jax.device_count(),
        overrides={k: v for k, v in config.model.overrides.to_dict().items() if v is not None},
    )
    print(f"preset              {report['preset']}")
    print(f"parameters          {report['parameters']:,} ({report['parameters'] / 1e9:.2f} B)")
    print(f"mesh                {report['mesh']}")
    print(
        f"params / device     {report['per_device_params_gib_fp32']:.2f} GiB fp32, "
        f"{report['per_device_params_gib_bf16']:.2f} GiB bf16"
    )
    print(
        f"AdamW state/device  {report['per_device_train_state_gib']:.2f} GiB "
        f"(+ grads: {report['per_device_train_state_plus_grads_gib']:.2f} GiB; activations not included)"
    )
    return report
