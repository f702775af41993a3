"""Losses against NumPy re-derivations, and gradient accumulation equal to one big batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import losses, optimizers, pretrained
from aya_jax.training import sft as sft_objective
from aya_jax.training import state as ts
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
    model, _ = pretrained.build_model(config.model, 300)
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
        s1, m1 = jax.jit(sft_objective.make_train_step(model, tx, schedule, 0.0, 1))(state, batch)
        s2, m2 = jax.jit(sft_objective.make_train_step(model, tx, schedule, 0.0, 2))(state, batch)
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


# ---- Preference losses: Bradley–Terry and DPO -------------------------------------------------------------


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_bradley_terry_loss_accuracy_and_gradient_match_hand_derivation():
    r_c = np.array([2.0, -1.0, 0.5, 3.0, 0.0])
    r_r = np.array([1.0, 0.5, 0.5, -2.0, 40.0])
    loss, acc = losses.bradley_terry_loss(jnp.asarray(r_c, jnp.float32), jnp.asarray(r_r, jnp.float32))
    np.testing.assert_allclose(float(loss), np.mean(-_np_log_sigmoid(r_c - r_r)), rtol=1e-5)
    assert float(acc) == (1 + 0 + 0.5 + 1 + 0) / 5  # a tie counts one half
    # By hand: d/dr_c of -log σ(r_c - r_r) = -σ(r_r - r_c), and the opposite for r_r; then the mean's 1/n.
    g_c, g_r = jax.grad(lambda a, b: losses.bradley_terry_loss(a, b)[0], argnums=(0, 1))(
        jnp.asarray(r_c, jnp.float32), jnp.asarray(r_r, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(g_c), -_np_sigmoid(r_r - r_c) / 5, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_r), _np_sigmoid(r_r - r_c) / 5, rtol=1e-5, atol=1e-7)
    # One worked number: margin 1 -> log(1 + e^-1) = 0.3132617.
    one, _ = losses.bradley_terry_loss(jnp.array([2.0]), jnp.array([1.0]))
    np.testing.assert_allclose(float(one), 0.31326169, rtol=1e-6)
    # Weights drop pairs: only the first two count.
    w = np.array([1, 1, 0, 0, 0], np.float32)
    loss_w, acc_w = losses.bradley_terry_loss(jnp.asarray(r_c), jnp.asarray(r_r), jnp.asarray(w))
    np.testing.assert_allclose(float(loss_w), np.mean(-_np_log_sigmoid(r_c[:2] - r_r[:2])), rtol=1e-5)
    assert float(acc_w) == 0.5


def _dpo_inputs():
    rng = np.random.default_rng(3)
    pi_c, pi_r, ref_c, ref_r = (rng.normal(size=6) * 4 - 20 for _ in range(4))
    return pi_c, pi_r, ref_c, ref_r


def test_dpo_loss_value_metrics_and_gradients_match_hand_derivation():
    pi_c, pi_r, ref_c, ref_r = _dpo_inputs()
    beta, n = 0.3, 6
    args = [jnp.asarray(x, jnp.float32) for x in (pi_c, pi_r, ref_c, ref_r)]
    h = (pi_c - ref_c) - (pi_r - ref_r)
    for eps in (0.0, 0.1):
        loss, m = losses.dpo_loss(*args, beta, label_smoothing=eps)
        expected = np.mean(-(1 - eps) * _np_log_sigmoid(beta * h) - eps * _np_log_sigmoid(-beta * h))
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        # d/d log π(c) = -β (1-ε) σ(-βh) + β ε σ(βh); d/d log π(r) is its negative; no gradient to the reference.
        grads = jax.grad(
            lambda a, b, c, d, eps=eps: losses.dpo_loss(a, b, c, d, beta, label_smoothing=eps)[0],
            argnums=(0, 1, 2, 3),
        )(*args)
        d_c = (-beta * (1 - eps) * _np_sigmoid(-beta * h) + beta * eps * _np_sigmoid(beta * h)) / n
        np.testing.assert_allclose(np.asarray(grads[0]), d_c, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.asarray(grads[1]), -d_c, rtol=1e-4, atol=1e-7)
        assert not np.asarray(grads[2]).any() and not np.asarray(grads[3]).any()
    r_c, r_r = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
    np.testing.assert_allclose(float(m["rewards/chosen"]), r_c.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["rewards/rejected"]), r_r.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["rewards/margin"]), (r_c - r_r).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["rewards/accuracy"]), np.mean(r_c > r_r), rtol=1e-6)
    np.testing.assert_allclose(float(m["logps/chosen"]), pi_c.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["logps/rejected"]), pi_r.mean(), rtol=1e-5)
    # One worked number: h = (-1 - -2) - (-3 - -2) = 2, β = 0.5 -> log(1 + e^-1) = 0.3132617.
    one, m1 = losses.dpo_loss(jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0]), 0.5)
    np.testing.assert_allclose(float(one), 0.31326169, rtol=1e-6)
    assert float(m1["rewards/margin"]) == 1.0 and float(m1["rewards/accuracy"]) == 1.0


def test_dpo_ipo_loss_weights_and_bad_arguments():
    pi_c, pi_r, ref_c, ref_r = _dpo_inputs()
    beta = 0.25
    args = [jnp.asarray(x, jnp.float32) for x in (pi_c, pi_r, ref_c, ref_r)]
    h = (pi_c - ref_c) - (pi_r - ref_r)
    loss, _ = losses.dpo_loss(*args, beta, loss_type="ipo")
    np.testing.assert_allclose(float(loss), np.mean((h - 1 / (2 * beta)) ** 2), rtol=1e-5)
    g = jax.grad(lambda a: losses.dpo_loss(a, *args[1:], beta, loss_type="ipo")[0])(args[0])
    np.testing.assert_allclose(np.asarray(g), 2 * (h - 1 / (2 * beta)) / 6, rtol=1e-4, atol=1e-6)
    w = np.array([1, 0, 1, 0, 0, 1], np.float32)
    loss_w, m = losses.dpo_loss(*args, 0.3, weights=jnp.asarray(w))
    keep = w > 0
    np.testing.assert_allclose(float(loss_w), np.mean(-_np_log_sigmoid(0.3 * h[keep])), rtol=1e-5)
    np.testing.assert_allclose(float(m["logps/chosen"]), pi_c[keep].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="loss_type"):
        losses.dpo_loss(*args, 0.1, loss_type="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.dpo_loss(*args, 0.1, label_smoothing=0.5)


def test_completion_log_probs_equal_full_logits_values_and_grads():
    rng = np.random.default_rng(4)
    h = jnp.asarray(rng.normal(size=(3, 11, 16)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(40, 16)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 40, (3, 11)))
    w = jnp.asarray(rng.random((3, 11)) > 0.4, jnp.float32)
    coef = jnp.asarray(
        [1.0, -2.0, 0.5]
    )  # a non-uniform function of the row sums, to test each row's gradient

    def full(h, k):
        logp = losses.token_log_probs(jnp.einsum("bte,ve->btv", h, k) * 0.5, t)
        return jnp.sum(logp * w, axis=-1)

    def chunked(h, k):
        return losses.completion_log_probs(h, k, t, w, logit_scale=0.5, chunk_size=8)  # ragged last chunk

    np.testing.assert_allclose(np.asarray(chunked(h, kernel)), np.asarray(full(h, kernel)), rtol=1e-5)
    logits = np.einsum("bte,ve->btv", np.asarray(h, np.float64), np.asarray(kernel, np.float64)) * 0.5
    ref = np.take_along_axis(_np_log_softmax(logits), np.asarray(t)[..., None], -1)[..., 0]
    np.testing.assert_allclose(
        np.asarray(chunked(h, kernel)), (ref * np.asarray(w)).sum(-1), rtol=1e-5, atol=1e-5
    )
    g_full = jax.grad(lambda h, k: jnp.sum(coef * full(h, k)), argnums=(0, 1))(h, kernel)
    g_chunk = jax.grad(lambda h, k: jnp.sum(coef * chunked(h, k)), argnums=(0, 1))(h, kernel)
    for a, b in zip(g_full, g_chunk, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def test_token_log_probs_and_entropy_match_numpy_float64():
    rng = np.random.default_rng(5)
    h = jnp.asarray(rng.normal(size=(3, 11, 16)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(40, 16)), jnp.float32)
    t = rng.integers(0, 40, (3, 11))
    logits = np.einsum("bte,ve->btv", np.asarray(h, np.float64), np.asarray(kernel, np.float64)) * 0.4
    ref_logp = _np_log_softmax(logits)
    ref_target = np.take_along_axis(ref_logp, t[..., None], -1)[..., 0]
    ref_entropy = -(np.exp(ref_logp) * ref_logp).sum(-1)
    for chunk in (7, 33, 1024):  # 33 tokens: ragged last chunk, one chunk exactly, one chunk bigger than all
        logp, entropy = losses.token_log_probs_and_entropy(
            h, kernel, jnp.asarray(t), logit_scale=0.4, chunk_size=chunk
        )
        assert logp.shape == entropy.shape == (3, 11) and logp.dtype == entropy.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(logp), ref_target, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(entropy), ref_entropy, rtol=0, atol=1e-5)
    # The log-probs agree with the other chunked path's.
    greedy_logp, _ = losses.token_log_probs_and_greedy(
        h, kernel, jnp.asarray(t), logit_scale=0.4, chunk_size=7
    )
    np.testing.assert_allclose(np.asarray(logp), np.asarray(greedy_logp), rtol=0, atol=1e-6)


def test_top_k_by_argmax_equals_a_stable_sort_with_ties_and_on_a_sharded_vocabulary():
    """Values descending, ties lower id first (numpy's stable argsort of the negated row), on a row with
    repeated values, with the vocabulary sharded over the 8 devices as the output projection leaves it."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 6, (5, 64)).astype(np.float32)  # six distinct values over 64 columns: many ties
    order = np.argsort(-x, axis=-1, kind="stable")[:, :5]
    mesh = jax.make_mesh((8,), ("vocab",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "vocab")))
    for k in (1, 5):
        values, ids = jax.jit(losses.top_k_by_argmax, static_argnums=1)(sharded, k)
        assert ids.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(ids), order[:, :k])
        np.testing.assert_array_equal(np.asarray(values), np.take_along_axis(x, order[:, :k], -1))


def test_token_log_probs_and_top_match_numpy_float64():
    rng = np.random.default_rng(6)
    h = jnp.asarray(rng.normal(size=(2, 9, 16)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(40, 16)), jnp.float32)
    t = rng.integers(0, 40, (2, 9))
    ref = _np_log_softmax(np.einsum("bte,ve->btv", np.asarray(h, np.float64), np.asarray(kernel, np.float64)))
    order = np.argsort(-ref, axis=-1, kind="stable")[..., :3]
    logp, top_values, top_ids = losses.token_log_probs_and_top(h, kernel, jnp.asarray(t), k=3, chunk_size=7)
    np.testing.assert_allclose(np.asarray(logp), np.take_along_axis(ref, t[..., None], -1)[..., 0], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(top_ids), order)  # random logits: no ties within 1e-5
    np.testing.assert_allclose(np.asarray(top_values), np.take_along_axis(ref, order, -1), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# RLOO
# ------------------------------------------------------------------------------------------------------------


def test_rloo_advantages_match_hand_values():
    rewards = jnp.asarray([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # Row 1: 1 - (2+3)/2, 2 - (1+3)/2, 3 - (1+2)/2; row 2: 0 - (0+6)/2 twice, 6 - 0.
    expected = np.asarray([[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]])
    adv = np.asarray(losses.rloo_advantages(rewards))
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    r = np.asarray(rewards)
    np.testing.assert_allclose(adv, 3 / 2 * (r - r.mean(-1, keepdims=True)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(losses.rloo_advantages(jnp.asarray([[0.3, -0.7]]))), [[1.0, -1.0]])
    with pytest.raises(ValueError, match="k >= 2"):
        losses.rloo_advantages(jnp.ones((4, 1)))


def test_shape_scores_and_normalize_advantages_match_hand_values():
    scores = jnp.asarray([1.0, 0.5, 0.0, 2.0])
    eos = jnp.asarray([True, False, True, False])
    np.testing.assert_allclose(
        np.asarray(losses.shape_scores(scores, eos, missing_eos_penalty=1.0)), [1.0, -0.5, 0.0, 1.0]
    )
    np.testing.assert_allclose(
        np.asarray(losses.shape_scores(scores, eos, missing_eos_penalty=1.0, clip=0.75)),
        [0.75, -0.5, 0.0, 0.75],
    )
    # mean 0.875, unbiased std sqrt(((0.125)^2 + (0.375)^2 + (0.875)^2 + (1.125)^2) / 3)
    std = np.sqrt((0.125**2 + 0.375**2 + 0.875**2 + 1.125**2) / 3)
    expected = (np.asarray([1.0, 0.5, 0.0, 2.0]) - 0.875) / (std + 1e-8)
    np.testing.assert_allclose(
        np.asarray(losses.shape_scores(scores, eos, normalize=True)), expected, rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(losses.shape_scores(scores, eos, normalize=True, clip=1.0)),
        np.clip(expected, -1, 1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(np.asarray(losses.normalize_advantages(scores)), expected, rtol=1e-6)


def _toy_policy_log_probs(theta, ys):
    """A toy policy over 2-token completions: token t ~ softmax(theta[t]) independently. theta [2, V],
    ys [n, 2] -> Σ_t log π(y_t) [n]."""
    logp = jax.nn.log_softmax(theta, axis=-1)
    return logp[0, ys[:, 0]] + logp[1, ys[:, 1]]


def test_rloo_gradient_on_a_toy_policy_matches_hand_derivation():
    """d/dθ_t of -mean_i A_i Σ_t log π(y_i,t) = -mean_i A_i (onehot(y_i,t) - softmax(θ_t)), with A the
    leave-one-out advantages of the sample rewards (constants)."""
    rng = np.random.default_rng(0)
    v, prompts, k = 5, 3, 4
    theta = rng.normal(size=(2, v))
    ys = rng.integers(0, v, size=(prompts * k, 2))
    r = rng.normal(size=(prompts, k))
    adv = r - (r.sum(-1, keepdims=True) - r) / (k - 1)  # NumPy LOO advantages
    p = np.exp(theta - theta.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = np.zeros_like(theta)
    for i, y in enumerate(ys):
        for t in range(2):
            expected[t] -= adv.reshape(-1)[i] * (np.eye(v)[y[t]] - p[t]) / len(ys)

    def loss(th):
        logps = _toy_policy_log_probs(th, jnp.asarray(ys))
        a = losses.rloo_advantages(jnp.asarray(r, jnp.float32)).reshape(-1)
        return losses.rloo_policy_loss(logps, jax.lax.stop_gradient(logps), a)[0]

    value, grad = jax.value_and_grad(loss)(jnp.asarray(theta, jnp.float32))
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(value), -adv.mean(), atol=1e-6)  # ratio 1: -mean A (= 0 for LOO)


def test_rloo_expected_gradient_is_the_policy_gradient():
    """Unbiasedness, exactly: averaging the RLOO gradient over every joint outcome of k samples (weighted by
    its probability) gives -∇_θ E_π[R(y)] = -Σ_y R(y) π(y) ∇ log π(y), computed here in NumPy."""
    rng = np.random.default_rng(1)
    v, k = 3, 3
    theta = rng.normal(size=(2, v))
    reward = rng.normal(size=(v, v))  # R(y) for y = (y_0, y_1)
    outcomes = np.asarray([(a, b) for a in range(v) for b in range(v)])  # the v^2 completions
    p = np.exp(theta) / np.exp(theta).sum(-1, keepdims=True)
    prob = p[0, outcomes[:, 0]] * p[1, outcomes[:, 1]]
    true_grad = np.zeros_like(theta)
    for y, py in zip(outcomes, prob, strict=True):
        for t in range(2):
            true_grad[t] -= reward[y[0], y[1]] * py * (np.eye(v)[y[t]] - p[t])

    def sample_loss(th, ys):
        logps = _toy_policy_log_probs(th, ys)
        r = jnp.asarray(reward, jnp.float32)[ys[:, 0], ys[:, 1]]
        a = losses.rloo_advantages(r[None, :])[0]
        return losses.rloo_policy_loss(logps, jax.lax.stop_gradient(logps), a)[0]

    grad_fn = jax.jit(jax.grad(sample_loss))
    th = jnp.asarray(theta, jnp.float32)
    expected_grad = np.zeros_like(theta)
    for joint in np.ndindex(*(len(outcomes),) * k):  # every k-tuple of completions
        ys = outcomes[list(joint)]
        weight = np.prod(prob[list(joint)])
        expected_grad += weight * np.asarray(grad_fn(th, jnp.asarray(ys)), np.float64)
    np.testing.assert_allclose(expected_grad, true_grad, rtol=1e-4, atol=1e-6)


def test_rloo_ppo_clip_on_the_sequence_ratio():
    # rows: A>0 ratio 1.5 (clipped at 1.2), A<0 ratio 0.5 (clipped at 0.8), A>0 ratio 0.9, A<0 ratio 1.1
    adv = jnp.asarray([2.0, -1.0, 1.0, -3.0])
    ratios = np.asarray([1.5, 0.5, 0.9, 1.1])
    old = jnp.asarray([-3.0, -2.0, -5.0, -1.0])
    new = old + jnp.log(jnp.asarray(ratios, jnp.float32))
    loss, metrics = losses.rloo_policy_loss(new, old, adv, clip_eps=0.2)
    per_row = [-2.0 * 1.2, 1.0 * 0.8, -1.0 * 0.9, 3.0 * 1.1]
    np.testing.assert_allclose(float(loss), np.mean(per_row), rtol=1e-6)
    assert float(metrics["clip_fraction"]) == 0.5
    np.testing.assert_allclose(float(metrics["ratio"]), ratios.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        float(metrics["approx_kl_old_new"]), np.mean(ratios - 1 - np.log(ratios)), rtol=1e-5
    )
    # d loss / d log π_i: 0 where clipped, else -A_i ratio_i / n
    grad = jax.grad(lambda lp: losses.rloo_policy_loss(lp, old, adv, clip_eps=0.2)[0])(new)
    np.testing.assert_allclose(np.asarray(grad), [0.0, 0.0, -1.0 * 0.9 / 4, 3.0 * 1.1 / 4], rtol=1e-5)
    # No clip: every row's gradient flows.
    grad = jax.grad(lambda lp: losses.rloo_policy_loss(lp, old, adv)[0])(new)
    np.testing.assert_allclose(np.asarray(grad), -np.asarray(adv) * ratios / 4, rtol=1e-5)
