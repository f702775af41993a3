"""KV-cache generation: cached decoding equals the plain forward, filtering against a NumPy re-derivation,
stopping, log-probs, determinism, streaming, sharding invariance, and errors.

The plain (no-cache) forward is itself checked against an independent NumPy model in tests/models; here every
cached quantity is compared with it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import sampling, sharding
from aya_jax.models import cohere, mt5
from configs.common import default_rules

VOCAB = 211
CFG = cohere.CohereConfig(
    VOCAB,
    64,
    128,
    2,
    4,
    2,
    max_position_embeddings=128,
    use_qk_norm=True,
    logit_scale=0.5,
    initializer_range=0.3,
)
RULES = default_rules()


@pytest.fixture(scope="module")
def model_and_params():
    model = cohere.CohereLM(CFG)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    return model, params


@pytest.fixture(scope="module")
def sampler(model_and_params):
    model, params = model_and_params
    return sampling.Sampler(model, params, prompt_bucket=8)


def prompts(lengths=(3, 11, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=n).tolist() for n in lengths]


PLAIN_LEN = 32  # every plain forward runs on rows right-padded to this length: one compilation


@functools.cache
def _plain_apply(model):
    return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))


def plain_logits(model, params, seq):
    """Logits [len(seq), vocab] of the plain (no-cache) forward. Right padding changes nothing before it
    (causal attention), so every call reuses one compiled shape."""
    padded = np.zeros((1, PLAIN_LEN), np.int32)
    padded[0, : len(seq)] = seq
    return np.asarray(_plain_apply(model)(params, jnp.asarray(padded))[0, : len(seq)])


def full_forward_log_probs(model, params, prompt, generated):
    """log p(generated[t] | prompt + generated[:t]) from the plain forward over the whole sequence."""
    seq = list(prompt) + list(generated)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(plain_logits(model, params, seq)), axis=-1))
    steps = np.arange(len(prompt) - 1, len(seq) - 1)
    return log_probs[steps, np.asarray(generated)]


# ------------------------------------------------------------------------------------------------------------
# The cache
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scan_layers", [True, False])
def test_cached_decoding_equals_the_plain_forward(model_and_params, scan_layers):
    """Ragged rows, left-padded: the prefill's last logits and every one-token step match the plain forward
    over that row alone."""
    model, params = model_and_params
    if not scan_layers:
        model = cohere.CohereLM(CFG, scan_layers=False)
        params = {k: v for k, v in params.items() if k != "layers"} | {
            f"layers_{i}": jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(CFG.num_layers)
        }
    rows = prompts((4, 9))
    extra = np.random.default_rng(1).integers(1, VOCAB, size=(2, 3))
    tokens, start, _ = sampling.left_pad(rows, pad_id=0, bucket=8)
    cache = cohere.init_cache(CFG, jnp.asarray(start), tokens.shape[1] + 3)
    apply = jax.jit(lambda p, t, c: model.apply({"params": p}, t, cache=c))
    logits, cache = apply(params, jnp.asarray(tokens), cache)
    for b, row in enumerate(rows):
        np.testing.assert_allclose(logits[b, -1], plain_logits(model, params, row)[-1], atol=1e-5, rtol=0)
    for t in range(3):
        logits, cache = apply(params, jnp.asarray(extra[:, t : t + 1]), cache)
        for b, row in enumerate(rows):
            full = row + extra[b, : t + 1].tolist()
            np.testing.assert_allclose(logits[b, 0], plain_logits(model, params, full)[-1], atol=1e-5, rtol=0)
    assert int(cache.index) == tokens.shape[1] + 3


def test_cache_rejects_explicit_positions(model_and_params):
    model, params = model_and_params
    cache = cohere.init_cache(CFG, jnp.zeros((1,), jnp.int32), 8)
    with pytest.raises(ValueError, match="come from the cache"):
        model.apply(
            {"params": params}, jnp.ones((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32), cache=cache
        )


# ------------------------------------------------------------------------------------------------------------
# Filtering, against NumPy
# ------------------------------------------------------------------------------------------------------------


def numpy_filter(logits, temperature, top_k, top_p):
    out = logits / temperature
    for row in out:
        if top_k:
            row[row < np.sort(row)[::-1][top_k - 1]] = -np.inf
        if top_p < 1:
            order = np.argsort(-row, kind="stable")
            p = np.exp(row[order] - row[order][0])
            p /= p.sum()
            keep_count = int(np.sum(np.cumsum(p) - p < top_p))
            row[row < row[order][keep_count - 1]] = -np.inf
    return out


@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.9, 20, 0.5)]
)
def test_filter_logits_matches_numpy(temperature, top_k, top_p):
    logits = np.random.default_rng(2).normal(0, 2, size=(4, 50)).astype(np.float32)
    ours = np.asarray(sampling.filter_logits(jnp.asarray(logits), temperature, top_k, top_p))
    ref = numpy_filter(logits.copy(), temperature, top_k, top_p)
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
    np.testing.assert_allclose(ours[~np.isinf(ours)], ref[~np.isinf(ref)], rtol=1e-6)


def test_sampling_frequencies_follow_the_filtered_distribution():
    """20,000 draws (one per row key) from a fixed 6-token distribution with top-k 4 and top-p 0.9."""
    logits = jnp.log(jnp.asarray([[0.35, 0.25, 0.2, 0.1, 0.06, 0.04]]))
    params = sampling.SamplingParams(max_new_tokens=1, temperature=1.0, top_k=4, top_p=0.9)
    n = 20000
    tokens, _ = sampling.choose_tokens(
        jnp.repeat(logits, n, axis=0), jax.random.PRNGKey(7), jnp.int32(0), jnp.arange(n), params
    )
    counts = np.bincount(np.asarray(tokens), minlength=6) / n
    expected = np.asarray([0.35, 0.25, 0.2, 0.1, 0, 0]) / 0.9  # top-k 4 keeps 0.9; top-p 0.9 keeps all four
    np.testing.assert_allclose(counts, expected, atol=0.015)  # ~4 standard errors at n = 20000


# ------------------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------------------


def test_greedy_tokens_and_log_probs_match_the_plain_forward(model_and_params, sampler):
    model, params = model_and_params
    rows = prompts()
    out = sampler.generate(rows, sampling.SamplingParams(max_new_tokens=12))
    assert out.tokens.shape == (3, 12) and not out.stopped.any() and (out.lengths == 12).all()
    for b, row in enumerate(rows):
        seq = list(row)
        for _ in range(12):  # greedy, re-running the plain forward on the whole sequence each time
            seq.append(int(np.argmax(plain_logits(model, params, seq)[-1])))
        np.testing.assert_array_equal(out.tokens[b], seq[len(row) :])
        ref = full_forward_log_probs(model, params, row, out.tokens[b])
        np.testing.assert_allclose(out.log_probs[b], ref, atol=1e-5, rtol=0)


def test_stops_on_eos_and_on_stop_sequences(sampler):
    rows = prompts()
    free = sampler.generate(rows, sampling.SamplingParams(max_new_tokens=12))
    eos = int(free.tokens[1, 4])  # row 1 emits it at step 4 at the latest
    seq = (int(free.tokens[0, 6]), int(free.tokens[0, 7]))  # row 0 completes it at step 7 at the latest
    out = sampler.generate(
        rows, sampling.SamplingParams(max_new_tokens=12, eos_ids=(eos,), stop_sequences=(seq,))
    )
    for b in range(3):
        ends = [
            t
            for t in range(12)
            if free.tokens[b, t] == eos or (t > 0 and tuple(free.tokens[b, t - 1 : t + 1]) == seq)
        ]
        n = ends[0] + 1 if ends else 12
        assert out.stopped[b] == bool(ends) and out.lengths[b] == n
        np.testing.assert_array_equal(out.tokens[b, :n], free.tokens[b, :n])
        np.testing.assert_allclose(out.log_probs[b, :n], free.log_probs[b, :n], atol=1e-6)
        assert (out.tokens[b, n:] == 0).all() and (out.log_probs[b, n:] == 0).all()
    assert out.stopped[0] and out.stopped[1]


def test_sampling_is_deterministic_and_streaming_gives_the_same_tokens(sampler):
    rows = prompts()
    params = sampling.SamplingParams(max_new_tokens=10, temperature=1.0, top_k=30, top_p=0.95)
    a = sampler.generate(rows, params, seed=11)
    b = sampler.generate(rows, params, seed=11)
    c = sampler.generate(rows, params, seed=12)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert (a.tokens != c.tokens).any()
    # Row 0 alone (other padding, one row) draws the same tokens: keys depend on (seed, step, row) only.
    alone = sampler.generate(rows[:1], params, seed=11)
    np.testing.assert_array_equal(alone.tokens[0], a.tokens[0])
    streamed = list(sampler.stream(rows[0], params, seed=11))
    assert [t for t, _ in streamed] == a.tokens[0].tolist()
    np.testing.assert_allclose([lp for _, lp in streamed], a.log_probs[0], atol=1e-6)


def test_sharded_generation_equals_single_device(model_and_params, sampler):
    model, params = model_and_params
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    sharded = sampling.Sampler(model, params, mesh=mesh, rules=RULES, prompt_bucket=8)
    rows = prompts()  # 3 prompts on a data-parallel size of 4: one dummy row is added and dropped
    params_ = sampling.SamplingParams(max_new_tokens=10, temperature=1.0, top_k=30, top_p=0.95)
    np.testing.assert_array_equal(
        sharded.generate(rows, params_, 3).tokens, sampler.generate(rows, params_, 3).tokens
    )


def test_bad_requests_fail_with_the_field_named(sampler):
    with pytest.raises(sampling.SamplingError, match="prompts\\[1\\]: empty prompt"):
        sampler.generate([[1, 2], []], sampling.SamplingParams(max_new_tokens=2))
    with pytest.raises(sampling.SamplingError, match="max_position_embeddings 128"):
        sampler.generate([[1] * 100], sampling.SamplingParams(max_new_tokens=40))
    with pytest.raises(sampling.SamplingError, match="top_p"):
        sampling.SamplingParams(top_p=0.0)
    with pytest.raises(sampling.SamplingError, match="temperature"):
        sampling.SamplingParams(temperature=-1.0)


# ------------------------------------------------------------------------------------------------------------
# Encoder-decoder models (mT5)
# ------------------------------------------------------------------------------------------------------------

MT5_CFG = mt5.MT5Config(VOCAB, 64, 128, 16, 4, 2, 2)
ENC_LEN = 16  # every plain mT5 forward: the encoder row right-padded to this, the decoder row to PLAIN_LEN


@pytest.fixture(scope="module")
def mt5_model_and_params():
    model = mt5.MT5(MT5_CFG)
    tokens = jnp.zeros((1, 4), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens)["params"])
    return model, params


@functools.cache
def _plain_mt5_apply(model):
    return jax.jit(lambda params, enc, dec: model.apply({"params": params}, enc, dec))


def plain_mt5_logits(model, params, prompt, decoder_tokens):
    """Logits [len(decoder_tokens), vocab] of the teacher-forced forward on one row (encoder padding is
    pad_id; right padding of the decoder changes nothing before it)."""
    enc = np.zeros((1, ENC_LEN), np.int32)
    enc[0, : len(prompt)] = prompt
    dec = np.zeros((1, PLAIN_LEN), np.int32)
    dec[0, : len(decoder_tokens)] = decoder_tokens
    logits = _plain_mt5_apply(model)(params, jnp.asarray(enc), jnp.asarray(dec))
    return np.asarray(logits[0, : len(decoder_tokens)])


def right_pad(rows, length=ENC_LEN):
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@functools.cache
def _generate_mt5(model, sampling_params):
    return jax.jit(
        lambda params, enc: sampling.generate(
            model, params, enc, (enc != 0).astype(jnp.int32), jax.random.PRNGKey(0), sampling_params
        )
    )


def test_encoder_decoder_greedy_tokens_and_log_probs_match_the_plain_forward(mt5_model_and_params):
    """Cached greedy decoding == argmax over repeated teacher-forced forwards of the whole decoder sequence
    (start token + tokens so far), with right-padded encoder rows; log-probs == that forward's log-softmax."""
    model, params = mt5_model_and_params
    rows = prompts((3, 11, 6))
    out = _generate_mt5(model, sampling.SamplingParams(max_new_tokens=12))(
        params, jnp.asarray(right_pad(rows))
    )
    assert out.tokens.shape == (3, 12) and not out.stopped.any() and (out.lengths == 12).all()
    for b, row in enumerate(rows):
        seq = [MT5_CFG.decoder_start_id]
        for _ in range(12):
            seq.append(int(np.argmax(plain_mt5_logits(model, params, row, seq)[-1])))
        np.testing.assert_array_equal(out.tokens[b], seq[1:])
        log_probs = np.asarray(
            jax.nn.log_softmax(jnp.asarray(plain_mt5_logits(model, params, row, seq[:-1])))
        )
        np.testing.assert_allclose(out.log_probs[b], log_probs[np.arange(12), seq[1:]], atol=1e-5, rtol=0)
    assert len(set(out.tokens.ravel().tolist())) > 4  # the model does not repeat one token


def test_encoder_decoder_stops_on_eos(mt5_model_and_params):
    model, params = mt5_model_and_params
    enc = jnp.asarray(right_pad(prompts((3, 11, 6))))
    free = _generate_mt5(model, sampling.SamplingParams(max_new_tokens=12))(params, enc)
    eos = int(free.tokens[1, 4])
    out = _generate_mt5(model, sampling.SamplingParams(max_new_tokens=12, eos_ids=(eos,)))(params, enc)
    for b in range(3):
        ends = np.flatnonzero(np.asarray(free.tokens[b]) == eos)
        n = int(ends[0]) + 1 if len(ends) else 12
        assert bool(out.stopped[b]) == bool(len(ends)) and int(out.lengths[b]) == n
        np.testing.assert_array_equal(out.tokens[b, :n], free.tokens[b, :n])
        np.testing.assert_allclose(out.log_probs[b, :n], free.log_probs[b, :n], atol=1e-6)
        assert (np.asarray(out.tokens[b, n:]) == 0).all() and (np.asarray(out.log_probs[b, n:]) == 0).all()
    assert out.stopped[1]


def test_sampler_generates_and_streams_from_an_encoder_decoder(mt5_model_and_params):
    """The Sampler left-pads prompts as encoder inputs on an 8-device mesh: the same tokens as the
    right-padded single-device generation (relative positions), and streaming gives them one by one."""
    model, params = mt5_model_and_params
    rows = prompts((3, 11, 6))
    greedy = sampling.SamplingParams(max_new_tokens=12)
    want = _generate_mt5(model, greedy)(params, jnp.asarray(right_pad(rows)))
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    sampler = sampling.Sampler(model, params, mesh=mesh, rules=RULES, prompt_bucket=8)
    got = sampler.generate(rows, greedy)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.log_probs, want.log_probs, atol=1e-5, rtol=0)
    streamed = list(sampler.stream(rows[1], greedy))
    assert [t for t, _ in streamed] == np.asarray(want.tokens[1]).tolist()
    np.testing.assert_allclose([lp for _, lp in streamed], want.log_probs[1], atol=1e-5)
