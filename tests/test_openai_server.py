"""The OpenAI-compatible server (aya_jax/openai_server.py over aya_jax/serving.py), driven by the official `openai`
client on 127.0.0.1: a tiny random Cohere model with the real Command-R tokenizer and chat template, real
multilingual prompts (HPLT OASST test prompts). Greedy replies under concurrent clients equal the offline
sampler's text; streams concatenate to the same text; echoed log-probs equal the likelihood scorer's; bad
requests get a 4xx naming the field and the server goes on serving. The job itself (SIGTERM while a request
runs) is in tests/jobs/test_serve.py."""

import concurrent.futures
import http.client
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models  # tests/tiny_models.py
from flax import linen as nn

from aya_jax import openai_server, pretrained, sampling, serving
from aya_jax.data import vocab
from aya_jax.evaluation import likelihood

openai = pytest.importorskip("openai")

MODEL = "tiny-aya"
LANGS = ("bg", "bn", "es", "fi", "fr", "hi", "ru", "en")
MAX_TOKENS = 20
LOGPROB_TOL = 2e-5  # fp32: the same model in differently shaped computations (batch rows, cache lengths)


def model_config():
    return tiny_models.cohere_config(max_positions=256)


@pytest.fixture(scope="module")
def setup(shared_data):
    codec = vocab.HfTokenizerCodec(shared_data / "tokenizers/command_r/tokenizer.json.gz")
    config = model_config()
    model, cfg = pretrained.build_model(config.model, codec.vocab_size)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    eos = pretrained.stop_ids(codec, cfg)
    prompts = []
    for lang in LANGS:
        path = shared_data / f"instruct/hplt_oasst_test_prompts/test_{lang}.jsonl"
        prompts.append(json.loads(path.open(encoding="utf-8").readline())["prompt"][:200])
    engine = serving.Engine(
        model, params, pad_id=codec.pad_id, slots=8, max_len=256, prompt_bucket=32
    ).start()
    scorer = likelihood.Scorer(model, params, pad_id=codec.pad_id, batch_size=4, max_length=256)
    server = openai_server.Server(
        engine, codec, model_name=MODEL, eos_ids=eos, chat_template="auto", scorer=scorer
    )
    host, port = server.listen("127.0.0.1", 0)
    client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    yield dict(model=model, params=params, codec=codec, eos=eos, prompts=prompts, server=server, client=client,
               host=host, port=port, scorer=scorer)  # fmt: skip
    server.shutdown()


def offline(setup, prompts, max_tokens=MAX_TOKENS, stops=()):
    """The offline sampler's greedy replies (text without the EOS, cut at a stop string) and log-probs."""
    codec = setup["codec"]
    ids = pretrained.encode_prompts(codec, prompts, template="auto")
    sampler = sampling.Sampler(setup["model"], setup["params"], pad_id=codec.pad_id, prompt_bucket=32)
    out = sampler.generate(ids, sampling.SamplingParams(max_new_tokens=max_tokens, eos_ids=setup["eos"]))
    texts, log_probs = [], []
    for i in range(len(prompts)):
        tokens = out.tokens[i, : out.lengths[i]].tolist()
        text = codec.decode([t for t in tokens if t not in setup["eos"]])
        for s in stops:
            text = text.split(s)[0] if s in text else text
        texts.append(text)
        log_probs.append(out.log_probs[i, : out.lengths[i]])
    return texts, log_probs


def test_models_lists_the_served_model(setup):
    assert [m.id for m in setup["client"].models.list().data] == [MODEL]


def test_eight_concurrent_greedy_clients_get_the_offline_samplers_text(setup):
    client, prompts = setup["client"], setup["prompts"]

    def ask(prompt):
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=MAX_TOKENS,
            logprobs=True, top_logprobs=3,
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        replies = list(pool.map(ask, prompts))
    expected, log_probs = offline(setup, prompts)
    assert [r.choices[0].message.content for r in replies] == expected
    for reply, lp in zip(replies, log_probs, strict=True):
        content = reply.choices[0].logprobs.content
        assert len(content) == len(lp) == reply.usage.completion_tokens
        np.testing.assert_allclose([c.logprob for c in content], lp, atol=LOGPROB_TOL)
        for c in content:  # greedy: the chosen token is the most likely
            assert len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob == pytest.approx(
                c.logprob, abs=1e-6
            )
        assert reply.choices[0].finish_reason in ("stop", "length")


def test_streamed_chunks_concatenate_to_the_same_text(setup):
    client, prompts = setup["client"], setup["prompts"][:3]
    expected, _ = offline(setup, prompts)
    for prompt, text in zip(prompts, expected, strict=True):
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=MAX_TOKENS,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
        assert chunks[-1].usage.completion_tokens > 0
    # the legacy endpoint streams the same way; a prompt given as text is read without the chat template
    raw = "Bonjour, je"
    stream = client.completions.create(model=MODEL, prompt=raw, temperature=0, max_tokens=8, stream=True)
    streamed = "".join(c.choices[0].text for c in stream)
    whole = client.completions.create(model=MODEL, prompt=raw, temperature=0, max_tokens=8)
    assert streamed == whole.choices[0].text and whole.usage.completion_tokens > 0


def test_stop_strings_cut_the_text_in_both_modes(setup):
    client, prompt = setup["client"], setup["prompts"][2]
    [full], _ = offline(setup, [prompt], max_tokens=40)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assume = stop.strip() and len(full) > 6
    if not assume:
        pytest.skip("the reply is too short to cut")
    [cut], _ = offline(setup, [prompt], max_tokens=40, stops=(stop,))
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=40)
    reply = client.chat.completions.create(**kwargs, stop=[stop])
    assert reply.choices[0].message.content == cut and reply.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stop=stop,
                                                                                               stream=True))  # fmt: skip
    assert streamed == cut


def test_n_choices_with_a_seed_are_the_offline_rows(setup):
    client, codec = setup["client"], setup["codec"]
    prompt = setup["prompts"][4]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0.8, top_p=0.95, n=3, seed=7,
        max_tokens=12,
    )  # fmt: skip
    ids = pretrained.encode_prompts(codec, [prompt], template="auto")
    sampler = sampling.Sampler(setup["model"], setup["params"], pad_id=codec.pad_id, prompt_bucket=32)
    params = sampling.SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.95, eos_ids=setup["eos"])
    out = sampler.generate(ids * 3, params, seed=7)
    expected = [
        codec.decode([t for t in out.tokens[i, : out.lengths[i]].tolist() if t not in setup["eos"]])
        for i in range(3)
    ]
    assert [c.message.content for c in sorted(reply.choices, key=lambda c: c.index)] == expected


def test_echoed_prompt_log_probs_equal_the_scorer_and_parse_as_lm_eval_does(setup):
    """lm-evaluation-harness's `local-completions` asks for `echo` + `logprobs=1` + `max_tokens=1` on token ids
    and sums `token_logprobs[ctxlen:-1]`: through the server that equals the in-process scorer (1e-4)."""
    client, codec, scorer = setup["client"], setup["codec"], setup["scorer"]
    pairs = [(codec.encode(p[:60], True), codec.encode(" " + p[60:90], False)) for p in setup["prompts"][:4]]
    reply = client.completions.create(
        model=MODEL,
        prompt=[c + t for c, t in pairs],
        max_tokens=1,
        logprobs=1,
        echo=True,
        temperature=0,
        seed=1234,
    )
    reference = scorer.loglikelihood(pairs)
    lm_eval_api = pytest.importorskip("lm_eval.models.openai_completions")
    parsed = lm_eval_api.LocalCompletionsAPI.parse_logprobs(
        reply.model_dump(), tokens=None, ctxlens=[len(c) for c, _ in pairs]
    )
    for (got, greedy), (want, want_greedy) in zip(parsed, reference, strict=True):
        assert abs(got - want) <= 1e-4 and greedy == want_greedy
    first = reply.choices[0].logprobs
    assert first.token_logprobs[0] is None and len(first.tokens) == len(pairs[0][0]) + len(pairs[0][1]) + 1


BAD = [
    # (path, body, status, param)
    ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ("/v1/chat/completions", {"model": MODEL}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, 400,
     "messages[0].role"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 3}]}, 400,
     "messages[0].content"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": -1},
     400, "temperature"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": 2}, 400,
     "top_p"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 0}, 400, "n"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"},
     400, "max_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000},
     400, "max_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "word " * 400}]}, 400,
     "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                              "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                              "presence_penalty": 1.0}, 400, "presence_penalty"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3},
     400, "top_logprobs"),
    ("/v1/completions", {"model": MODEL, "prompt": [[1, 2, 999999]]}, 400, "prompt[0]"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt[0]"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "seed": -3}, 400, "seed"),
]  # fmt: skip


def _raw(setup, method, path, data: bytes | None):
    conn = http.client.HTTPConnection(setup["host"], setup["port"], timeout=60)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    status, body = response.status, json.loads(response.read())
    conn.close()
    return status, body


def test_a_burst_of_bad_requests_is_answered_naming_the_field_and_the_server_goes_on(setup):
    def send(case):
        path, body, _, _ = case
        return _raw(setup, "POST", path, json.dumps(body).encode())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, BAD * 2))
    for (path, body, status, param), (got_status, got) in zip(BAD * 2, answers, strict=True):
        assert got_status == status, (path, body, got)
        assert got["error"]["param"] == param, got
        assert got["error"]["message"].startswith(param), got
    for data, status in ((b"{not json", 400), (b"[1, 2]", 400), (b'{"model": 3}', 400)):
        got_status, got = _raw(setup, "POST", "/v1/chat/completions", data)
        assert got_status == status and got["error"]["message"], got
    assert _raw(setup, "GET", "/v1/nothing", None)[0] == 404
    assert _raw(setup, "GET", "/v1/chat/completions", None)[0] == 405
    # the official client raises its typed errors from the same bodies
    with pytest.raises(openai.NotFoundError):
        setup["client"].chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        setup["client"].chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=-1
        )
    # and it still serves
    expected, _ = offline(setup, setup["prompts"][:1])
    reply = setup["client"].chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": setup["prompts"][0]}],
        temperature=0,
        max_tokens=MAX_TOKENS,
    )
    assert reply.choices[0].message.content == expected[0]
