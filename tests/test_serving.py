"""Continuous batching (aya_jax/serving.py): requests that join a running batch at any step get exactly the
offline sampler's tokens, for both model families, through cache moves in both directions."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import sampling, serving, sharding
from aya_jax.models import cohere, mt5
from configs.common import default_rules

VOCAB = 211
COHERE_CFG = cohere.CohereConfig(
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
MT5_CFG = mt5.MT5Config(VOCAB, 64, 128, 16, 4, 2, 2)


def _init(model, length):
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), *_dummy(model, length))
    return nn.unbox(variables["params"])


def _dummy(model, length):
    x = jnp.ones((1, length), jnp.int32)
    return (x,) if isinstance(model, cohere.CohereLM) else (x, x)


@pytest.fixture(scope="module", params=["cohere", "mt5"])
def model_and_params(request):
    model = cohere.CohereLM(COHERE_CFG) if request.param == "cohere" else mt5.MT5(MT5_CFG)
    return model, _init(model, 4)


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=n).tolist() for n in lengths]


def _offline(model, params, prompt, sampling_params, seed=0, rows=1):
    sampler = sampling.Sampler(model, params, prompt_bucket=8)
    out = sampler.generate([prompt] * rows, sampling_params, seed=seed)
    return [out.tokens[i, : out.lengths[i]].tolist() for i in range(rows)], out


def _collect(request):
    tokens, log_probs, reason = [], [], None
    for event in request.events(timeout=120):
        if isinstance(event, serving.Finished):
            reason = event.reason
        else:
            tokens.append(event.token)
            log_probs.append(event.log_prob)
    return tokens, log_probs, reason


def test_staggered_greedy_requests_equal_the_offline_sampler(model_and_params):
    """Six requests of different lengths and budgets on four rows over a 48-slot cache: some wait for a free
    row, others join while the rest decode; the cache moves left (full) and right (a long prompt)."""
    model, params = model_and_params
    engine = serving.Engine(model, params, slots=4, max_len=48, prompt_bucket=8, encoder_len=32).start()
    prompts = _prompts((3, 11, 6, 25, 1, 9))
    budgets = (20, 7, 30, 16, 44, 35)
    # Each request is submitted once the engine has run this many decode steps (not after a sleep: the joins,
    # hence the cache moves, must not depend on the machine's speed). The 25-token prompt joins while the index
    # is below its 32-slot bucket (a move right); the 44-token reply outlasts the 48-slot cache (moves left).
    schedule = (0, 0, 2, 3, 5, 8)
    requests = []
    for p, n, at in zip(prompts, budgets, schedule, strict=True):
        while engine.steps < at:
            time.sleep(0.001)
        requests.append(engine.submit(serving.Request(prompt=p, max_tokens=n)))
    results = [_collect(r) for r in requests]
    engine.close()
    # full cache: rows move left; a prompt longer than the index (decoder-only): right
    assert engine.moves["left"] > 0 and (engine.moves["right"] > 0 or isinstance(model, mt5.MT5)), (
        engine.moves
    )
    for p, n, (tokens, log_probs, reason) in zip(prompts, budgets, results, strict=True):
        [expected], out = _offline(model, params, p, sampling.SamplingParams(max_new_tokens=n))
        assert tokens == expected
        assert reason == "length"
        np.testing.assert_allclose(
            log_probs, out.log_probs[0, :n], atol=2e-5
        )  # fp32 rounding, differently shaped


def test_eos_sampling_and_choices_match_the_offline_rows(model_and_params):
    model, params = model_and_params
    engine = serving.Engine(model, params, slots=8, max_len=64, prompt_bucket=8, encoder_len=32).start()
    [prompt] = _prompts((7,), seed=3)
    settings = sampling.SamplingParams(max_new_tokens=24, temperature=0.9, top_k=50, top_p=0.9)
    requests = [
        engine.submit(
            serving.Request(
                prompt=prompt, max_tokens=24, temperature=0.9, top_k=50, top_p=0.9, seed=11, row_id=i
            )
        )
        for i in range(3)
    ]
    results = [_collect(r) for r in requests]
    expected, _ = _offline(model, params, prompt, settings, seed=11, rows=3)
    assert [t for t, _, _ in results] == expected
    # an EOS id stops the row, the EOS token included, as the offline sampler does
    [greedy], _ = _offline(model, params, prompt, sampling.SamplingParams(max_new_tokens=24))
    eos = greedy[5]
    tokens, _, reason = _collect(engine.submit(serving.Request(prompt=prompt, max_tokens=24, eos_ids=(eos,))))
    assert tokens == greedy[: greedy.index(eos) + 1] and reason == "stop"
    engine.close()


def test_cancel_frees_the_row_and_close_finishes_the_work_in_flight(model_and_params):
    model, params = model_and_params
    engine = serving.Engine(model, params, slots=2, max_len=64, prompt_bucket=8, encoder_len=32).start()
    prompts = _prompts((4, 5, 6))
    first = engine.submit(serving.Request(prompt=prompts[0], max_tokens=60))
    events = first.events(timeout=120)
    next(events)
    first.cancel()
    assert [e for e in events if isinstance(e, serving.Finished)] == [serving.Finished("cancelled")]
    late = [engine.submit(serving.Request(prompt=p, max_tokens=10)) for p in prompts[1:]]
    closer = threading.Thread(target=engine.close)
    closer.start()
    while not engine.closing:
        time.sleep(0.001)
    with pytest.raises(serving.EngineClosed):
        engine.submit(serving.Request(prompt=prompts[0], max_tokens=4))
    assert all(_collect(r)[2] == "length" for r in late)
    closer.join(60)
    assert not closer.is_alive()


@pytest.mark.parametrize(
    "field, request_kw",
    [
        ("prompt", dict(prompt=[])),
        ("prompt", dict(prompt=[1] * 70)),
        ("max_tokens", dict(prompt=[1] * 10, max_tokens=60)),
        ("max_tokens", dict(prompt=[1], max_tokens=0)),
        ("temperature", dict(prompt=[1], temperature=-1.0)),
        ("top_p", dict(prompt=[1], top_p=0.0)),
        ("seed", dict(prompt=[1], seed=-1)),
        ("top_logprobs", dict(prompt=[1], top_logprobs=21)),
    ],
)
def test_a_request_that_cannot_run_is_refused_naming_the_field(field, request_kw):
    model = cohere.CohereLM(COHERE_CFG)
    engine = serving.Engine(model, _init(model, 4), slots=2, max_len=64)
    with pytest.raises(sampling.SamplingError, match=f"^{field}: "):
        engine.check(serving.Request(**{"max_tokens": 4, **request_kw}))


def test_rows_sharded_over_the_mesh_decode_as_on_one_device():
    model = cohere.CohereLM(COHERE_CFG)
    params = _init(model, 4)
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    engine = serving.Engine(
        model, params, mesh=mesh, rules=default_rules(), slots=3, max_len=48, prompt_bucket=8
    ).start()
    assert engine.slots % 4 == 0
    prompts = _prompts((5, 13))
    requests = [engine.submit(serving.Request(prompt=p, max_tokens=12)) for p in prompts]
    results = [_collect(r)[0] for r in requests]
    engine.close()
    for p, tokens in zip(prompts, results, strict=True):
        assert tokens == _offline(model, params, p, sampling.SamplingParams(max_new_tokens=12))[0][0]
