"""The reward model: its score is the head on the last real token's final state, whatever the padding, and the
same on an 8-device mesh as on one device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding

from aya_jax import sharding
from aya_jax.models import cohere, reward
from configs import common

CFG = cohere.CohereConfig(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
    max_position_embeddings=128, logit_scale=0.125, bos_id=-1, eos_id=1,
)  # fmt: skip


def _model(**kw) -> reward.RewardModel:
    return reward.RewardModel(CFG, **kw)


_INIT = jax.jit(lambda rng: nn.unbox(_model().init(rng, jnp.zeros((1, 8), jnp.int32))["params"]))


def _params(seed: int = 0):
    params = _INIT(jax.random.PRNGKey(seed))
    # A non-zero bias, so that a score missing it is caught.
    params["head"]["bias"] = jnp.asarray(0.37, jnp.float32)
    return params


def _right_padded(seqs: list[list[int]], length: int, filler: int = 0):
    """Rows of one sequence each, right-padded to `length` with `filler` tokens in segment 0."""
    tokens = np.full((len(seqs), length), filler, np.int32)
    seg = np.zeros((len(seqs), length), np.int32)
    pos = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
        seg[i, : len(s)] = 1
        pos[i, : len(s)] = np.arange(len(s))
    return jnp.asarray(tokens), jnp.asarray(pos), jnp.asarray(seg)


SEQS = [[5, 17, 33, 2, 8, 1], [9, 4, 1], [12, 70, 44, 61, 3, 21, 88, 1]]


def test_params_are_a_backbone_and_a_scalar_head():
    dummy = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(_model().init, jax.random.PRNGKey(0), dummy)["params"]
    params = nn.unbox(boxed)
    lm_params = nn.unbox(jax.eval_shape(cohere.CohereLM(CFG).init, jax.random.PRNGKey(0), dummy)["params"])
    assert set(params) == {"backbone", "head"}
    assert jax.tree.map(lambda x: x.shape, params["backbone"]) == jax.tree.map(lambda x: x.shape, lm_params)
    assert params["head"]["kernel"].shape == (CFG.hidden_size,) and params["head"]["bias"].shape == ()
    specs = nn.get_partition_spec(boxed)
    assert specs["head"]["kernel"] == jax.sharding.PartitionSpec("embed")
    assert specs["backbone"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")


def test_score_is_the_head_on_the_last_real_tokens_final_state():
    params = _params()
    tokens, pos, seg = _right_padded(SEQS, 12)
    scores = np.asarray(_model().apply({"params": params}, tokens, pos, seg))
    assert scores.shape == (3,) and scores.dtype == np.float32
    # Independent of the reward module: each sequence alone through CohereLM, its last state dotted with the
    # head in float64.
    lm_hidden = jax.jit(lambda p, t: cohere.CohereLM(CFG).apply({"params": p}, t, return_hidden=True))
    kernel = np.asarray(params["head"]["kernel"], np.float64)
    for i, s in enumerate(SEQS):
        hidden = lm_hidden(params["backbone"], jnp.asarray([s], jnp.int32))
        expected = np.asarray(hidden[0, -1], np.float64) @ kernel + 0.37
        np.testing.assert_allclose(scores[i], expected, rtol=1e-5, atol=1e-5)


def test_padding_and_tokens_after_the_last_real_one_do_not_change_the_score():
    model, params = _model(), _params()
    base = np.asarray(model.apply({"params": params}, *_right_padded(SEQS, 12)))
    longer = np.asarray(model.apply({"params": params}, *_right_padded(SEQS, 31)))
    np.testing.assert_allclose(longer, base, rtol=1e-5, atol=1e-5)
    # Garbage after the sequence (segment 0): other tokens, other positions.
    tokens, pos, seg = _right_padded(SEQS, 12, filler=50)
    pos = jnp.where(seg > 0, pos, 7)
    garbage = np.asarray(model.apply({"params": params}, tokens, pos, seg))
    np.testing.assert_allclose(garbage, base, rtol=1e-5, atol=1e-5)
    # A changed token before the last one does change it (the check above can fail).
    changed = [list(s) for s in SEQS]
    changed[0][1] = 60
    moved = np.asarray(model.apply({"params": params}, *_right_padded(changed, 12)))
    assert abs(moved[0] - base[0]) > 1e-4 and np.allclose(moved[1:], base[1:], atol=1e-5)
    # Without segment ids the whole row is real: the score is the last column's.
    full = np.asarray(model.apply({"params": params}, jnp.asarray([SEQS[1]], jnp.int32)))
    np.testing.assert_allclose(full, base[1:2], rtol=1e-5, atol=1e-5)


def test_last_token_index():
    seg = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert reward.last_token_index(seg).tolist() == [2, 4, 0]


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 8, 1)])
def test_sharded_scores_and_grads_equal_one_device(mesh_shape):
    model, params = _model(), _params(1)
    rng = np.random.default_rng(0)
    lengths = [5, 16, 9, 12, 3, 16, 7, 11]
    seqs = [rng.integers(1, CFG.vocab_size, n).tolist() for n in lengths]
    tokens, pos, seg = _right_padded(seqs, 16)

    def loss(p, t, q, s):
        scores = model.apply({"params": p}, t, q, s)
        return jnp.sum(scores * jnp.arange(1.0, 9.0)), scores

    (_, one_scores), one_grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, tokens, pos, seg)

    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), mesh_shape)
    rules = sharding.normalize_rules(common.default_rules(), mesh)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    param_sh = sharding.tree_shardings(nn.get_partition_spec(boxed), mesh, rules)
    batch_sh = NamedSharding(mesh, sharding.batch_spec(rules, 2))
    with mesh, nn.logical_axis_rules(rules):
        sharded = jax.device_put(params, param_sh)
        assert sharded["head"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("fsdp")
        batch = [jax.device_put(x, batch_sh) for x in (tokens, pos, seg)]
        (_, scores), grads = jax.jit(
            jax.value_and_grad(loss, has_aux=True), in_shardings=(param_sh, *[batch_sh] * 3)
        )(sharded, *batch)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(one_scores), rtol=1e-5, atol=1e-5)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(one_grads), jax.tree.leaves(grads), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path)
        )


def test_reward_params_from_policy_copy_the_backbone_and_start_a_small_head():
    lm = cohere.CohereLM(CFG)
    policy = nn.unbox(lm.init(jax.random.PRNGKey(3), jnp.zeros((1, 8), jnp.int32))["params"])
    params = jax.jit(reward.reward_params_from_policy)(policy, jax.random.PRNGKey(4))
    assert jax.tree.structure(params) == jax.tree.structure(_params())
    for a, b in zip(jax.tree.leaves(params["backbone"]), jax.tree.leaves(policy), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    kernel = np.asarray(params["head"]["kernel"])
    assert float(params["head"]["bias"]) == 0.0
    assert 0.5 < kernel.std() * np.sqrt(CFG.hidden_size + 1) < 1.5  # N(0, 1 / (embed + 1))
    # The reward model built from it scores with the policy's own final state.
    tokens, pos, seg = _right_padded(SEQS, 12)
    scores = np.asarray(reward.RewardModel(CFG).apply({"params": params}, tokens, pos, seg))
    hidden = lm.apply({"params": policy}, tokens, pos, seg, return_hidden=True)
    last = np.asarray([len(s) - 1 for s in SEQS])
    expected = np.asarray(hidden)[np.arange(3), last] @ kernel
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
