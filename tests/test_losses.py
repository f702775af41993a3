"""Losses against NumPy re-derivations, and gradient accumulation equal to one big batch."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from aya_jax import losses, optimizers
from aya_jax.trainers import sft
from aya_jax.trainers import train_state as ts
from configs import common


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
    targets = rng.integers(0, 11, (3, 7))
    weights = (rng.random((3, 7)) > 0.3).astype(np.float32)
    z = 1e-2
    loss, aux = losses.cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), z_loss=z
    )
    logp = _np_log_softmax(logits.astype(np.float64))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    expected = ((nll + z * log_z**2) * weights).sum() / weights.sum()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(aux["nll_sum"]), (nll * weights).sum(), rtol=1e-5)
    acc = ((logits.argmax(-1) == targets) * weights).sum()
    assert float(aux["correct_sum"]) == acc


def test_token_log_probs_and_group_sums():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 9)).astype(np.float32)
    targets = rng.integers(0, 9, (2, 5))
    lp = np.asarray(losses.token_log_probs(jnp.asarray(logits), jnp.asarray(targets)))
    ref = np.take_along_axis(_np_log_softmax(logits.astype(np.float64)), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(lp, ref, rtol=1e-5, atol=1e-6)
    groups = np.array([[1, 1, 2, 2, 0], [3, 3, 3, 1, 0]])
    w = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], np.float32)
    ls, ws = losses.per_group_sums(jnp.asarray(-lp), jnp.asarray(w), jnp.asarray(groups), 4)
    for g in range(4):
        np.testing.assert_allclose(float(ls[g]), (-lp * w)[groups == g].sum(), rtol=1e-5, atol=1e-6)
        assert float(ws[g]) == w[groups == g].sum()


def test_gradient_accumulation_equals_one_batch():
    config = common.base_config()
    config.model.dtype = "float32"
    model, _ = ts.build_model(config.model, 300)
    tx, schedule = optimizers.make_optimizer(config.optimizer, 10)
    state = ts.make_init_fn(model, tx, 16)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 300, (4, 17)).astype(np.int32)
    # Uneven target counts per row: accumulation must average over tokens, not microbatches.
    weights = np.zeros((4, 16), np.float32)
    for r, n in enumerate([16, 3, 9, 12]):
        weights[r, -n:] = 1
    batch = {
        "decoder_input_tokens": tokens[:, :-1],
        "decoder_target_tokens": tokens[:, 1:],
        "decoder_segment_ids": np.ones((4, 16), np.int32),
        "decoder_positions": np.tile(np.arange(16, dtype=np.int32), (4, 1)),
        "decoder_loss_weights": weights,
    }
    with nn.logical_axis_rules(()):
        s1, m1 = jax.jit(sft.make_train_step(model, tx, schedule, 0.0, 1))(state, batch)
        s2, m2 = jax.jit(sft.make_train_step(model, tx, schedule, 0.0, 2))(state, batch)
    np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m2["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_schedule_warmup_then_cosine():
    config = common.base_config()
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 10
    config.optimizer.end_lr_fraction = 0.1
    _, sched = optimizers.make_optimizer(config.optimizer, 110)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(5)), 5e-4, rtol=1e-6)
    np.testing.assert_allclose(float(sched(10)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(sched(60)), 1e-4 + 0.5 * (1e-3 - 1e-4), rtol=1e-5)
    np.testing.assert_allclose(float(sched(110)), 1e-4, rtol=1e-5)
    config.optimizer.schedule = "linear"
    _, sched = optimizers.make_optimizer(config.optimizer, 110)
    np.testing.assert_allclose(float(sched(60)), 5.5e-4, rtol=1e-5)


def test_weight_decay_skips_norm_scales():
    config = common.base_config()
    config.optimizer.learning_rate = 1.0
    config.optimizer.warmup_steps = 0
    config.optimizer.schedule = "constant"
    config.optimizer.weight_decay = 0.5
    config.optimizer.grad_clip_norm = 0.0
    tx, _ = optimizers.make_optimizer(config.optimizer, 10)
    params = {"norm": {"scale": jnp.ones(3)}, "proj": jnp.ones((2, 2))}
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["norm"]["scale"]), 0.0)
    np.testing.assert_allclose(np.asarray(updates["proj"]), -0.5)


def test_linear_cross_entropy_equals_full_logits_values_and_grads():
    """The fused chunked loss against cross_entropy on explicitly materialised logits (ragged last chunk)."""
    rng = np.random.default_rng(2)
    h = jnp.asarray(rng.normal(size=(2, 37, 16)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(50, 16)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 50, (2, 37)))
    w = jnp.asarray(rng.random((2, 37)) > 0.3, jnp.float32)
    for z in (0.0, 1e-2):

        def full(h, k, z=z):
            logits = jnp.einsum("bte,ve->btv", h, k) * 0.125
            return losses.cross_entropy(logits, t, w, z_loss=z)[1]["loss_sum"]

        def fused(h, k, z=z):
            return losses.linear_cross_entropy(h, k, t, w, logit_scale=0.125, z_loss=z, chunk_size=8)[
                "loss_sum"
            ]

        np.testing.assert_allclose(float(fused(h, kernel)), float(full(h, kernel)), rtol=1e-5)
        g_full = jax.grad(full, argnums=(0, 1))(h, kernel)
        g_fused = jax.grad(fused, argnums=(0, 1))(h, kernel)
        for a, b in zip(g_full, g_fused, strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    out = losses.linear_cross_entropy(h, kernel, t, w, logit_scale=0.125, chunk_size=8)
    logits = np.einsum("bte,ve->btv", np.asarray(h, np.float64), np.asarray(kernel, np.float64)) * 0.125
    nll = -np.take_along_axis(_np_log_softmax(logits), np.asarray(t)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out["nll"]), nll, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(out["correct"]), (logits.argmax(-1) == np.asarray(t)).astype(np.float32)
    )
