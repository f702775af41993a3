"""Token log-likelihoods of the evaluation scorer against the plain forward of each request alone (one row,
no batching, NumPy log-softmax), on a sharded 8-device (data 2, fsdp 2, tensor 2) mesh, for both families;
rolling windows against lm-evaluation-harness's own window function."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import sharding
from aya_jax.evaluation import likelihood
from aya_jax.models import cohere, mt5
from configs.common import default_rules

VOCAB = 211
CFG = cohere.CohereConfig(
    VOCAB, 64, 128, 2, 4, 2, max_position_embeddings=128, use_qk_norm=True, logit_scale=0.5,
    initializer_range=0.3,
)  # fmt: skip
MT5_CFG = mt5.MT5Config(VOCAB, 64, 128, 16, 4, 2, 2)
PLAIN_LEN = 64
TOL = dict(atol=5e-5, rtol=0)  # fp32 sums of <= 40 log-probs, batched and sharded vs one row: rounding only


@pytest.fixture(scope="module")
def mesh_and_rules():
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    return mesh, sharding.normalize_rules(default_rules(), mesh)


@pytest.fixture(scope="module")
def cohere_model():
    model = cohere.CohereLM(CFG)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    return model, params


@pytest.fixture(scope="module")
def mt5_model():
    model = mt5.MT5(MT5_CFG)
    enc, dec = jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(1), enc, dec)["params"])
    return model, params


@functools.cache
def _plain(model):
    return jax.jit(lambda params, *tokens: model.apply({"params": params}, *tokens))


def reference_decoder(model, params, context, continuation):
    """log p of each continuation token from one unpadded-prefix row of the plain forward, in NumPy."""
    seq = list(context) + list(continuation)
    row = np.zeros((1, PLAIN_LEN), np.int32)
    row[0, : len(seq)] = seq
    logits = np.asarray(_plain(model)(params, jnp.asarray(row))[0], np.float64)
    log_probs = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1, keepdims=True))
    log_probs -= logits.max(-1, keepdims=True)
    steps = np.arange(len(context) - 1, len(seq) - 1)
    targets = np.asarray(continuation)
    return log_probs[steps, targets], np.argmax(logits[steps], axis=-1) == targets


def reference_mt5(model, params, context, continuation):
    enc = np.zeros((1, PLAIN_LEN), np.int32)
    enc[0, : len(context)] = context
    dec = np.zeros((1, PLAIN_LEN), np.int32)
    dec[0, : len(continuation)] = [MT5_CFG.decoder_start_id, *continuation[:-1]]
    logits = np.asarray(_plain(model)(params, jnp.asarray(enc), jnp.asarray(dec))[0], np.float64)
    m = logits.max(-1, keepdims=True)
    log_probs = logits - m - np.log(np.sum(np.exp(logits - m), -1, keepdims=True))
    steps = np.arange(len(continuation))
    targets = np.asarray(continuation)
    return log_probs[steps, targets], np.argmax(logits[steps], axis=-1) == targets


def requests(seed=0, n=11):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        context = rng.integers(1, VOCAB, size=int(rng.integers(1, 30))).tolist()
        continuation = rng.integers(1, VOCAB, size=int(rng.integers(1, 9))).tolist()
        out.append((context, continuation))
    return out


@pytest.mark.parametrize("family", ["cohere", "mt5"])
def test_scores_equal_the_plain_forward_of_each_request(family, cohere_model, mt5_model, mesh_and_rules):
    model, params = cohere_model if family == "cohere" else mt5_model
    reference = reference_decoder if family == "cohere" else reference_mt5
    mesh, rules = mesh_and_rules
    scorer = likelihood.Scorer(model, params, mesh=mesh, rules=rules, batch_size=4, length_bucket=16)
    reqs = requests()
    done = []
    got = scorer.token_log_probs(reqs, progress=done.append)
    assert sum(done) == len(reqs) and len(done) == 3  # 11 requests in batches of 4
    totals = scorer.loglikelihood(reqs)
    for (context, continuation), (logp, greedy), (total, all_greedy) in zip(reqs, got, totals, strict=True):
        want, want_greedy = reference(model, params, context, continuation)
        np.testing.assert_allclose(logp, want, **TOL)
        np.testing.assert_array_equal(greedy, want_greedy)
        np.testing.assert_allclose(total, want.sum(), **TOL)
        assert all_greedy == bool(want_greedy.all())


@pytest.mark.parametrize("family", ["cohere", "mt5"])
def test_mean_hidden_states_equal_numpy_means_of_each_unpadded_row(
    family, cohere_model, mt5_model, mesh_and_rules
):
    """Embeddings batched, left- or right-padded and sharded over 8 devices vs one unpadded row's final hidden
    states (a decoder's over its input; mT5's encoder output) averaged in NumPy; over-long sequences keep their
    first max_length tokens."""
    model, params = cohere_model if family == "cohere" else mt5_model
    mesh, rules = mesh_and_rules
    scorer = likelihood.Scorer(
        model, params, mesh=mesh, rules=rules, batch_size=4, length_bucket=16, max_length=24
    )  # fmt: skip
    rng = np.random.default_rng(3)
    seqs = [rng.integers(1, VOCAB, size=int(n)).tolist() for n in (1, 5, 23, 24, 30, 9, 2)]
    done = []
    got = scorer.mean_hidden_states(seqs, progress=done.append)
    assert got.shape == (7, CFG.hidden_size if family == "cohere" else MT5_CFG.d_model) and sum(done) == 7
    for seq, vector in zip(seqs, got, strict=True):
        row = jnp.asarray([seq[:24]], jnp.int32)
        if family == "cohere":
            positions, segments = jnp.arange(row.shape[1])[None], jnp.ones_like(row)
            hidden = model.apply({"params": params}, row, positions, segments, return_hidden=True)
        else:
            hidden = model.apply({"params": params}, row, method="encode")
        np.testing.assert_allclose(vector, np.asarray(hidden[0], np.float64).mean(0), **TOL)


def test_a_greedy_continuation_is_flagged(cohere_model, mesh_and_rules):
    """The argmax token after a context is greedy; every other token is not."""
    model, params = cohere_model
    mesh, rules = mesh_and_rules
    context = [5, 17, 33, 2]
    best = int(np.argmax(_next_logits(model, params, context)))
    scorer = likelihood.Scorer(model, params, mesh=mesh, rules=rules, batch_size=8)
    results = scorer.loglikelihood([(context, [best]), (context, [(best + 1) % VOCAB])])
    assert results[0][1] and not results[1][1]


def _next_logits(model, params, context):
    row = np.zeros((1, PLAIN_LEN), np.int32)
    row[0, : len(context)] = context
    return np.asarray(_plain(model)(params, jnp.asarray(row))[0, len(context) - 1])


def test_long_requests_keep_their_last_max_length_tokens(cohere_model, mesh_and_rules):
    """(context + continuation)[-(max_length + 1):][:-1] is what the model reads, as in the harness."""
    model, params = cohere_model
    mesh, rules = mesh_and_rules
    scorer = likelihood.Scorer(model, params, mesh=mesh, rules=rules, batch_size=8, max_length=16)
    context, continuation = list(range(1, 31)), [40, 41, 42]
    ((logp, _),) = scorer.token_log_probs([(context, continuation)])
    seq = (context + continuation)[-17:]
    want, _ = reference_decoder(model, params, seq[:-3], seq[-3:])
    np.testing.assert_allclose(logp, want, **TOL)


def test_rolling_windows_equal_the_harness_windows():
    utils = pytest.importorskip("lm_eval.utils")
    tokens = list(range(100, 137))
    for max_length in (1, 5, 8, 36, 37, 50):
        ours = list(likelihood.rolling_windows(tokens, 7, max_length))
        theirs = [
            utils.make_disjoint_window(w)
            for w in utils.get_rolling_token_windows(
                tokens, prefix_token=7, max_seq_len=max_length, context_len=1
            )
        ]
        assert [(list(a), list(b)) for a, b in ours] == [(list(a), list(b)) for a, b in theirs], max_length
    assert list(likelihood.rolling_windows([], 7, 8)) == []


def test_empty_requests_are_refused(cohere_model):
    model, params = cohere_model
    scorer = likelihood.Scorer(model, params)
    with pytest.raises(ValueError, match="request 1: empty continuation"):
        scorer.loglikelihood([([1], [2]), ([1], [])])


def _full_log_probs(model, params, context, continuation, family):
    """[len(continuation), vocab] float64 log-distributions before each continuation token (plain forward)."""
    if family == "cohere":
        seq = list(context) + list(continuation)
        row = np.zeros((1, PLAIN_LEN), np.int32)
        row[0, : len(seq)] = seq
        logits = np.asarray(_plain(model)(params, jnp.asarray(row))[0], np.float64)
        logits = logits[np.arange(len(context) - 1, len(seq) - 1)]
    else:
        enc = np.zeros((1, PLAIN_LEN), np.int32)
        enc[0, : len(context)] = context
        dec = np.zeros((1, PLAIN_LEN), np.int32)
        dec[0, : len(continuation)] = [MT5_CFG.decoder_start_id, *continuation[:-1]]
        logits = np.asarray(_plain(model)(params, jnp.asarray(enc), jnp.asarray(dec))[0], np.float64)
        logits = logits[: len(continuation)]
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.sum(np.exp(logits - m), -1, keepdims=True))


@pytest.mark.parametrize("family", ["cohere", "mt5"])
def test_divergences_of_two_models_equal_numpy_on_their_full_distributions(family, mesh_and_rules):
    """KL(p || q) and H(p, q) per continuation token of two differently initialised models, batched and sharded,
    against float64 NumPy sums over the whole vocabulary of each request's plain forward."""
    mesh, rules = mesh_and_rules
    if family == "cohere":
        model = cohere.CohereLM(CFG)
        init = [nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(s), jnp.zeros((1, 4), jnp.int32))["params"])
                for s in (0, 5)]  # fmt: skip
    else:
        model = mt5.MT5(MT5_CFG)
        z = jnp.zeros((1, 4), jnp.int32)
        init = [nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(s), z, z)["params"]) for s in (1, 6)]
    p, q = (likelihood.Scorer(model, w, mesh=mesh, rules=rules, batch_size=4, length_bucket=16) for w in init)
    reqs = requests(seed=3, n=6)
    got = likelihood.Divergence(p, q, chunk_size=16).token_divergences(reqs)
    for (context, continuation), (log_p, kl, cross) in zip(reqs, got, strict=True):
        lp = _full_log_probs(model, init[0], context, continuation, family)
        lq = _full_log_probs(model, init[1], context, continuation, family)
        probs = np.exp(lp)
        np.testing.assert_allclose(log_p, lp[np.arange(len(continuation)), continuation], **TOL)
        np.testing.assert_allclose(kl, (probs * (lp - lq)).sum(-1), **TOL)
        np.testing.assert_allclose(cross, -(probs * lq).sum(-1), **TOL)
        assert (kl > 0).all()
    same = likelihood.Divergence(p, p).token_divergences(reqs[:2])
    np.testing.assert_allclose(np.concatenate([s[1] for s in same]), 0.0, atol=1e-5)


def test_divergence_refuses_models_that_read_different_tokens(cohere_model, mt5_model):
    model, params = cohere_model
    other = cohere.CohereLM(dataclasses.replace(CFG, vocab_size=VOCAB + 1))
    other_params = nn.unbox(
        jax.jit(other.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    )
    with pytest.raises(ValueError, match=r"do not read the same tokens \(vocabularies 211 and 212"):
        likelihood.Divergence(likelihood.Scorer(model, params), likelihood.Scorer(other, other_params))
    with pytest.raises(ValueError, match="decoder and encoder-decoder"):
        likelihood.Divergence(likelihood.Scorer(model, params), likelihood.Scorer(*mt5_model))
