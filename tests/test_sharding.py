"""Meshes and rules on the real 8-device CPU mesh: sharded training equals one device, and params are sharded
as the rules say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from aya_jax import optimizers, pretrained, sharding
from aya_jax.jobs import sft
from aya_jax.training import loop
from aya_jax.training import sft as sft_objective
from aya_jax.training import state as ts
from configs import common


def test_eight_devices():
    assert jax.device_count() == 8


def test_resolve_mesh_shape():
    assert sharding.resolve_mesh_shape(("data", "fsdp", "tensor"), (1, -1, 2), 8) == (1, 4, 2)
    with pytest.raises(sharding.ShardingError, match=r"config.mesh.shape: product .* is 6, but there are 8"):
        sharding.resolve_mesh_shape(("data", "fsdp", "tensor"), (1, 3, 2), 8)
    with pytest.raises(sharding.ShardingError, match="only one entry may be -1"):
        sharding.resolve_mesh_shape(("data", "fsdp", "tensor"), (-1, -1, 2), 8)
    with pytest.raises(sharding.ShardingError, match="cannot fill 8 devices"):
        sharding.resolve_mesh_shape(("data", "fsdp", "tensor"), (3, -1, 1), 8)


def test_make_mesh_uses_auto_axes():
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    assert mesh.devices.shape == (2, 2, 2)
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def _setup(mesh_shape, rules=None, accum=1, vocab=512):
    config = common.base_config()
    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"
    model, cfg = pretrained.build_model(config.model, vocab)
    tx, schedule = optimizers.make_optimizer(config.optimizer, 10)
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), mesh_shape)
    rules = sharding.normalize_rules(rules or common.default_rules(), mesh)
    return model, cfg, tx, schedule, mesh, rules


def _batch(vocab, batch=8, length=32, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, (batch, length + 1)).astype(np.int32)
    seg = np.ones((batch, length), np.int32)
    seg[:, length // 2 :] = 2  # two packed segments per row
    seg[0, -4:] = 0  # some padding
    pos = np.concatenate([np.arange(length // 2), np.arange(length - length // 2)])[None].repeat(batch, 0)
    weights = (seg > 0).astype(np.float32)
    weights[:, :3] = 0  # prompt tokens carry no loss
    return {
        "decoder_input_tokens": tokens[:, :-1],
        "decoder_target_tokens": tokens[:, 1:],
        "decoder_segment_ids": seg,
        "decoder_positions": pos.astype(np.int32),
        "decoder_loss_weights": weights,
    }


def _loss_and_grads(mesh_shape, batch):
    model, cfg, tx, schedule, mesh, rules = _setup(mesh_shape)
    with mesh, nn.logical_axis_rules(rules):
        abstract, shardings = ts.state_shardings(model, tx, 32, mesh, rules)
        state = jax.jit(ts.make_init_fn(model, tx, 32), out_shardings=shardings)(jax.random.PRNGKey(0))
        batch_sh = NamedSharding(mesh, sharding.batch_spec(rules, 2))
        gbatch = {k: jax.device_put(v, batch_sh) for k, v in batch.items()}

        def loss_grads(params, b):
            return jax.value_and_grad(
                lambda p: sft_objective.forward_loss(model, p, b, 0.0)[0] / b["decoder_loss_weights"].sum()
            )(params)

        loss, grads = jax.jit(loss_grads, in_shardings=(shardings.params, batch_sh))(state.params, gbatch)
    return loss, grads, state, shardings


def test_sharded_loss_and_grads_equal_single_device():
    batch = _batch(512)
    loss1, grads1, _, _ = _single_device(batch)
    loss8, grads8, state8, shardings8 = _loss_and_grads((2, 2, 2), batch)
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-5, atol=1e-5)
    for (path, g1), g8 in zip(
        jax.tree_util.tree_leaves_with_path(grads1), jax.tree.leaves(grads8), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(g8), np.asarray(g1), rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path)
        )


def _single_device(batch):
    """The same computation on one device (a 1x1x1 mesh over device 0)."""
    config = common.base_config()
    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"
    model, cfg = pretrained.build_model(config.model, 512)
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (1, 1, 1), devices=jax.devices()[:1])
    rules = sharding.normalize_rules(common.default_rules(), mesh)
    tx, _ = optimizers.make_optimizer(config.optimizer, 10)
    with mesh, nn.logical_axis_rules(rules):
        _, shardings = ts.state_shardings(model, tx, 32, mesh, rules)
        state = jax.jit(ts.make_init_fn(model, tx, 32), out_shardings=shardings)(jax.random.PRNGKey(0))
        b = {k: jnp.asarray(v) for k, v in batch.items()}
        loss, grads = jax.jit(
            jax.value_and_grad(
                lambda p: sft_objective.forward_loss(model, p, b, 0.0)[0] / b["decoder_loss_weights"].sum()
            )
        )(state.params)
    return loss, grads, state, shardings


def test_params_are_sharded_as_the_rules_say():
    _, _, state, shardings = _loss_and_grads((2, 2, 2), _batch(512))
    params = state.params
    # embedding [vocab, embed] -> (tensor, fsdp)
    emb = params["embedding"]
    assert emb.sharding.spec == PartitionSpec("tensor", "fsdp")
    assert emb.addressable_shards[0].data.shape == (512 // 2, 256 // 2)
    # q_proj [layers, embed, heads, head_dim] -> (None, fsdp, tensor, None)
    q = params["layers"]["attn"]["q_proj"]
    assert q.sharding.spec == PartitionSpec(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (4, 128, 2, 64)
    # mlp down [layers, mlp, embed] -> (None, tensor, fsdp)
    down = params["layers"]["mlp"]["down_proj"]
    assert down.addressable_shards[0].data.shape == (4, 768 // 2, 256 // 2)
    # Adam moments follow their parameters.
    mu = [s for s in jax.tree.leaves(state.opt_state) if getattr(s, "shape", None) == q.shape]
    assert mu and all(m.sharding.spec == q.sharding.spec for m in mu)


def test_a_rules_change_is_a_layout_change():
    """Pure data parallel: same rules table with every parameter replicated."""
    rules = tuple(
        (name, None) if not name.startswith("act_") else (name, target)
        for name, target in common.default_rules()
    )
    rules = tuple((n, ("data", "fsdp", "tensor")) if n == "act_batch" else (n, t) for n, t in rules)
    model, cfg, tx, _, mesh, rules = _setup((2, 2, 2), rules=rules)
    with mesh, nn.logical_axis_rules(rules):
        _, shardings = ts.state_shardings(model, tx, 32, mesh, rules)
    assert all(
        s.spec == PartitionSpec() or all(a is None for a in s.spec)
        for s in jax.tree.leaves(shardings.params, is_leaf=lambda x: isinstance(x, NamedSharding))
    )


def test_indivisible_parameter_names_the_tensor():
    # kv_heads=2 cannot be split 4 ways on `tensor`.
    model, cfg, tx, _, mesh, rules = _setup((1, 2, 4))
    with pytest.raises(sharding.ShardingError, match=r"\['layers'\]\['attn'\]\['k_proj'\].*not divisible"):
        with mesh, nn.logical_axis_rules(rules):
            ts.state_shardings(model, tx, 32, mesh, rules)


def test_validate_config_errors_name_the_field():
    config = common.base_config()
    config.mesh.shape = (1, 3, 2)
    with pytest.raises(loop.ConfigError, match=r"^config.mesh.shape"):
        loop.validate_config(config, sft.SECTIONS, 8, 1)
    config = common.base_config()
    config.mesh.shape = (2, 2, 2)
    config.train.global_batch_size = 6
    with pytest.raises(loop.ConfigError, match=r"^config.train.global_batch_size: 6 is not divisible"):
        loop.validate_config(config, sft.SECTIONS, 8, 1)
    config = common.base_config()
    config.model.preset = "aya-expanse-9b"
    with pytest.raises(loop.ConfigError, match=r"^config.model.preset: unknown preset 'aya-expanse-9b'"):
        loop.validate_config(config, sft.SECTIONS, 8, 1)
    config = common.base_config()
    config.data.seq_len = 4096
    with pytest.raises(loop.ConfigError, match=r"^config.data.seq_len: 4096 exceeds"):
        loop.validate_config(config, sft.SECTIONS, 8, 1)
    config = common.base_config()
    config.mesh.rules = common.default_rules() + (("embed", "pipeline"),)
    with pytest.raises(
        loop.ConfigError, match=r"^config.mesh.rules: 'embed' -> unknown mesh axis 'pipeline'"
    ):
        loop.validate_config(config, sft.SECTIONS, 8, 1)


def test_per_device_bytes_matches_shards():
    model, cfg, tx, _, mesh, rules = _setup((2, 2, 2))
    with mesh, nn.logical_axis_rules(rules):
        abstract, shardings = ts.state_shardings(model, tx, 32, mesh, rules)
    full = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(abstract.params))
    per = ts.per_device_bytes(abstract.params, shardings.params)
    assert full / 8 <= per < full / 2
