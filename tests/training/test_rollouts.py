"""Rollouts: the k-samples-per-prompt layout, log-probs recomputed by the training forward against the sampler's
own and against a NumPy re-derivation from the plain forward of each row alone, entropy, gradients through
padded rows, and invariance of the draws and log-probs to a (data=2, fsdp=2, tensor=2) mesh."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from aya_jax import sampling, sharding
from aya_jax.models import cohere
from aya_jax.training import rollouts
from configs.common import default_rules

VOCAB = 212  # even: the vocab axis splits over tensor=2
CFG = cohere.CohereConfig(
    VOCAB, 64, 128, 2, 4, 2, max_position_embeddings=128, logit_scale=0.5, initializer_range=0.3
)
EOS = tuple(range(3, 23))  # 20 of 212 ids stop a row: some rows end early, some run to the limit
PAD = 0
K = 3
SAMPLING = sampling.SamplingParams(max_new_tokens=10, temperature=1.0, eos_ids=EOS)


@pytest.fixture(scope="module")
def model_and_params():
    model = cohere.CohereLM(CFG)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    return model, params


def _prompts():
    rng = np.random.default_rng(1)
    prompts = [rng.integers(23, VOCAB, size=n).tolist() for n in (3, 7, 5, 8)]
    tokens, start, _ = sampling.left_pad(prompts, PAD, bucket=8)
    return prompts, tokens, start


@pytest.fixture(scope="module")
def rolled(model_and_params):
    model, params = model_and_params
    prompts, tokens, start = _prompts()
    ro = rollouts.sample(
        model, params, jnp.asarray(tokens), jnp.asarray(start), K, jax.random.PRNGKey(7), SAMPLING
    )
    return prompts, jax.device_get(ro)


def test_layout_rows_masks_positions(rolled):
    prompts, ro = rolled
    p = ro.prompt_len
    assert p == 8 and ro.tokens.shape == (len(prompts) * K, p + SAMPLING.max_new_tokens)
    lengths = np.asarray(ro.lengths)
    assert lengths.min() >= 1 and 0 < np.sum(ro.ended_with_eos) < len(lengths)  # both kinds of ending occur
    for row in range(ro.tokens.shape[0]):
        prompt, n = prompts[row // K], int(lengths[row])
        assert ro.prompt_index[row] == row // K
        start = p - len(prompt)
        np.testing.assert_array_equal(ro.tokens[row, start:p], prompt)
        assert np.all(ro.tokens[row, :start] == PAD) and np.all(ro.tokens[row, p + n :] == PAD)
        comp = ro.tokens[row, p : p + n]
        assert bool(ro.ended_with_eos[row]) == (comp[-1] in EOS)
        assert not any(t in EOS for t in comp[:-1])  # nothing after the first EOS
        np.testing.assert_array_equal(np.nonzero(ro.completion_mask[row])[0], np.arange(p, p + n))
        np.testing.assert_array_equal(np.nonzero(ro.segment_ids[row])[0], np.arange(start, p + n))
        np.testing.assert_array_equal(ro.positions[row, start : p + n], np.arange(len(prompt) + n))
        np.testing.assert_array_equal(ro.completion_tokens[row, :n], comp)
    # k samples of one prompt are different draws
    assert len({tuple(ro.tokens[r]) for r in range(K)}) > 1


PLAIN_LEN = 24  # longest prompt (8) + max_new_tokens (10), rounded up


@functools.cache
def _plain_apply(model):
    return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))


def _numpy_row_reference(model, params, prompt, completion, temperature=1.0):
    """log p(completion[t] | ...) and per-token entropy from the plain forward of the row alone, starting at
    position 0. Right padding to a fixed length changes nothing before it (causal), so one compilation serves
    every row."""
    seq = list(prompt) + list(completion)
    padded = jnp.asarray([seq + [PAD] * (PLAIN_LEN - len(seq))], jnp.int32)
    logits = np.asarray(_plain_apply(model)(params, padded)[0], np.float64) / temperature
    logits = logits[len(prompt) - 1 : len(seq) - 1]
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token_logps = logp[np.arange(len(completion)), np.asarray(completion)]
    entropy = -(np.exp(logp) * logp).sum(-1)
    return token_logps, entropy


def test_sequence_log_probs_match_sampler_and_numpy(model_and_params, rolled):
    model, params = model_and_params
    prompts, ro = rolled
    sums, token_logps, entropy = jax.device_get(rollouts.sequence_log_probs(model, params, ro))
    np.testing.assert_allclose(sums, ro.sample_log_probs, rtol=1e-4, atol=1e-4)
    p = ro.prompt_len
    for row in range(ro.tokens.shape[0]):
        n = int(ro.lengths[row])
        ref_lp, ref_h = _numpy_row_reference(model, params, prompts[row // K], ro.tokens[row, p : p + n])
        np.testing.assert_allclose(token_logps[row, p : p + n], ref_lp, rtol=1e-4, atol=1e-4)
        assert np.all(token_logps[row, :p] == 0) and np.all(token_logps[row, p + n :] == 0)
        np.testing.assert_allclose(sums[row], ref_lp.sum(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(entropy[row], ref_h.mean(), rtol=1e-4, atol=1e-4)


def test_fused_sums_and_their_gradient_equal_the_per_token_path(model_and_params, rolled):
    model, params = model_and_params
    _, ro = rolled
    coef = jnp.asarray(np.random.default_rng(3).normal(size=ro.tokens.shape[0]), jnp.float32)

    def per_token(p):
        return jnp.sum(coef * rollouts.sequence_log_probs(model, p, ro, temperature=0.8)[0])

    def fused(p):
        return jnp.sum(coef * rollouts.sequence_log_prob_sums(model, p, ro, temperature=0.8, chunk_size=16))

    np.testing.assert_allclose(float(fused(params)), float(per_token(params)), rtol=1e-5)
    for a, b in zip(
        jax.tree.leaves(jax.grad(per_token)(params)), jax.tree.leaves(jax.grad(fused)(params)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)


def test_temperature_divides_the_logits(model_and_params, rolled):
    model, params = model_and_params
    prompts, ro = rolled
    sums, _, entropy = jax.device_get(rollouts.sequence_log_probs(model, params, ro, temperature=0.7))
    p = ro.prompt_len
    for row in (0, 5, 11):
        n = int(ro.lengths[row])
        ref_lp, ref_h = _numpy_row_reference(model, params, prompts[row // K], ro.tokens[row, p : p + n], 0.7)
        np.testing.assert_allclose(sums[row], ref_lp.sum(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(entropy[row], ref_h.mean(), rtol=1e-4, atol=1e-4)


def test_gradient_is_finite_and_ignores_padding(model_and_params, rolled):
    model, params = model_and_params
    _, ro = rolled

    def total(p, tokens):
        return jnp.sum(rollouts.sequence_log_probs(model, p, ro.replace(tokens=tokens))[0])

    grads = jax.grad(total)(params, jnp.asarray(ro.tokens))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    # Padding tokens (segment 0) are invisible: changing them changes nothing.
    scrambled = np.where(ro.segment_ids == 0, 100, ro.tokens)
    np.testing.assert_allclose(
        total(params, jnp.asarray(scrambled)), total(params, jnp.asarray(ro.tokens)), rtol=1e-6
    )


def test_sharded_mesh_gives_the_same_draws_and_log_probs(model_and_params, rolled):
    model, params = model_and_params
    _, ro = rolled
    _, tokens, start = _prompts()
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    rules = sharding.normalize_rules(default_rules(), mesh)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    params_sh = sharding.tree_shardings(nn.get_partition_spec(boxed), mesh, rules)
    sharded_params = jax.device_put(params, params_sh)
    assert sharded_params["embedding"].sharding.spec == PartitionSpec("tensor", "fsdp")
    rows = NamedSharding(mesh, sharding.batch_spec(rules, 2))
    with mesh, nn.logical_axis_rules(rules):
        ro_sh = rollouts.sample(
            model,
            sharded_params,
            jax.device_put(tokens, rows),
            jax.device_put(start, NamedSharding(mesh, sharding.batch_spec(rules, 1))),
            K,
            jax.random.PRNGKey(7),
            SAMPLING,
        )
        sums_sh, _, entropy_sh = rollouts.sequence_log_probs(model, sharded_params, ro_sh)
    np.testing.assert_array_equal(np.asarray(ro_sh.tokens), ro.tokens)
    np.testing.assert_array_equal(np.asarray(ro_sh.lengths), ro.lengths)
    sums, _, entropy = rollouts.sequence_log_probs(model, params, ro)
    np.testing.assert_allclose(np.asarray(sums_sh), np.asarray(sums), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(entropy_sh), np.asarray(entropy), rtol=1e-5, atol=1e-5)
