"""The teacher pool: entries and their options, resumable generation (a run stopped part-way and rerun asks only
for what is missing and ends with the uninterrupted run's records), seeded samples of an in-process model that
do not depend on their batch, and OpenAI-compatible endpoints through the official client — a real HTTP server,
its failures named with the teacher and the prompt, nothing already generated lost."""

import endpoint as endpoint_lib  # tests/endpoint.py
import jax
import jax.numpy as jnp
import pytest
import tiny_models  # tests/tiny_models.py
from flax import linen as nn

from aya_jax import pretrained, sampling
from aya_jax.curation import teachers
from aya_jax.data import vocab
from aya_jax.evaluation import rows


def test_entries_parse_with_options_and_defaults(tmp_path):
    specs = teachers.parse(
        (f"local={tmp_path};temperature=0.3;template=none", "api=http://127.0.0.1:9/v1;model=m;concurrency=2"),
        "config.curation.teachers", temperature=0.7, max_new_tokens=64, top_p=0.9,
    )  # fmt: skip
    local, api = specs
    assert (local.name, local.source, local.temperature, local.template, local.max_new_tokens, local.top_p) == (
        "local", str(tmp_path), 0.3, "none", 64, 0.9)  # fmt: skip
    assert not local.is_endpoint and api.is_endpoint and api.model == "m" and api.concurrency == 2
    bad = {
        "noequals": "is not name=source",
        f"a={tmp_path};colour=red": "unknown option 'colour=red'",
        f"a={tmp_path};temperature=hot": "temperature='hot' is not a float",
        f"a={tmp_path};template=chatml": "template 'chatml'",
        "a=http://x/v1": "an endpoint needs model=",
        f"a={tmp_path}/missing": "no checkpoint at",
        f"a b={tmp_path}": "teacher name 'a b'",
    }
    for entry, message in bad.items():
        with pytest.raises(ValueError, match=f"^config.curation.teachers: .*{message}"):
            teachers.parse((entry,), "config.curation.teachers")
    with pytest.raises(ValueError, match="names repeat"):
        teachers.parse((f"a={tmp_path}", f"a={tmp_path}"), "config.curation.teachers")


def _fake_teacher(calls):
    """A deterministic teacher: replies depend on the prompt and its row id only."""

    def generate(prompts, row_ids, where):
        calls.append(list(where))
        return [[f"{p} / {r} / {j}" for j in range(2)] for p, r in zip(prompts, row_ids, strict=True)]

    return generate


def test_fill_resumes_by_chunks_and_never_asks_twice(tmp_path):
    prompts = [f"prompt {i}" for i in range(10)]
    keys = [f"pool.jsonl:{i + 1}" for i in range(10)]
    whole_calls: list = []
    whole = rows.KeyedLog(tmp_path / "whole.jsonl")
    assert (
        teachers.fill(whole, "t", keys, prompts, list(range(10)), 2, _fake_teacher(whole_calls), chunk=4)
        == 10
    )
    assert [len(c) for c in whole_calls] == [4, 4, 2]

    # a run that dies in its third chunk keeps the first two; the rerun asks only for the third
    def dying(prompts_, row_ids, where):
        if where[0] == keys[8]:
            raise teachers.TeacherError("teacher t: gone")
        return _fake_teacher([])(prompts_, row_ids, where)

    path = tmp_path / "part.jsonl"
    with pytest.raises(teachers.TeacherError, match="gone"):
        teachers.fill(rows.KeyedLog(path), "t", keys, prompts, list(range(10)), 2, dying, chunk=4)
    assert len(rows.KeyedLog(path)) == 8
    calls: list = []
    log_ = rows.KeyedLog(path)
    assert teachers.fill(log_, "t", keys, prompts, list(range(10)), 2, _fake_teacher(calls), chunk=4) == 2
    assert calls == [keys[8:]]
    assert log_.records == whole.records
    assert teachers.fill(log_, "t", keys, prompts, list(range(10)), 2, _fake_teacher(calls), chunk=4) == 0
    assert len(calls) == 1
    with pytest.raises(teachers.TeacherError, match="sample lists"):
        teachers.fill(rows.KeyedLog(tmp_path / "x.jsonl"), "t", keys, prompts, list(range(10)), 3,
                      _fake_teacher([]), chunk=4)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_chat(shared_data):
    codec = vocab.HfTokenizerCodec(shared_data / "tokenizers/command_r/tokenizer.json.gz")
    config = tiny_models.cohere_config(max_positions=256)
    model, cfg = pretrained.build_model(config.model, codec.vocab_size)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    loaded = pretrained.InferenceModel(model, params, codec, pretrained.stop_ids(codec, cfg), None, "tiny")
    sampler = sampling.Sampler(model, params, pad_id=codec.pad_id, prompt_bucket=32)
    params_ = sampling.SamplingParams(max_new_tokens=12, temperature=1.0, eos_ids=loaded.eos_ids)
    return pretrained.ChatModel(loaded, sampler, params_, batch_size=64, seed=3)


def test_a_local_teachers_samples_do_not_depend_on_their_batch(tiny_chat):
    """Sample j of prompt r is keyed by r * k + j: the same text when drawn with other prompts, alone, or
    in another order; the k samples of one prompt differ."""
    prompts = ["Bonjour, comment vas-tu ?", "Write a haiku.", "¿Qué hora es?"]
    together = teachers.chat_samples(tiny_chat, prompts, [10, 11, 12], 3)
    alone = teachers.chat_samples(tiny_chat, prompts[2:], [12], 3)
    reordered = teachers.chat_samples(tiny_chat, prompts[::-1], [12, 11, 10], 3)
    assert alone[0] == together[2] and reordered[::-1] == together
    assert all(len(set(s)) > 1 for s in together)
    assert tiny_chat.new_tokens > 0


def test_an_endpoint_teacher_through_the_openai_client_and_its_failure(tmp_path):
    prompts = [f"question {i}" for i in range(6)]
    keys = [f"q:{i}" for i in range(6)]
    with endpoint_lib.Endpoint(lambda m: f"answer to {m}", fail_on={"question 4"}) as server:
        spec = teachers.parse((f"api={server.url};model=m;concurrency=3",), "config.curation.teachers")[0]
        client = teachers.EndpointTeacher(spec, max_retries=0)
        log_ = rows.KeyedLog(tmp_path / "api.jsonl")
        with pytest.raises(
            teachers.TeacherError, match=r"^teacher api \(http://127.0.0.1:\d+/v1\): prompt q:4: HTTP 400"
        ):
            teachers.fill(log_, "api", keys, prompts, list(range(6)), 2,
                          lambda p, r, w: client(p, r, 2, w), chunk=2, whole_chunks=False)  # fmt: skip
        kept = rows.KeyedLog(tmp_path / "api.jsonl")
        # the chunks before the failing one, and q5, answered in the failing prompt's chunk
        assert sorted(kept.records) == [*keys[:4], "q:5"]
        assert kept.records["q:1"]["samples"] == ["answer to question 1 [0]", "answer to question 1 [1]"]
        assert client.new_tokens == 5 * 2 * 5  # q0-q3 and q5 (q4 failed in its chunk): 2 replies of 5 words
        asked = dict(server.seen)
        server.fail_on.clear()
        assert teachers.fill(kept, "api", keys, prompts, list(range(6)), 2,
                             lambda p, r, w: client(p, r, 2, w), chunk=2, whole_chunks=False) == 1  # fmt: skip
        assert all(server.seen[p] == asked[p] for p in prompts if p != "question 4")  # nothing asked twice
        assert sorted(kept.records) == keys
    with endpoint_lib.Endpoint(lambda m: "x", status_always=503) as down:
        spec = teachers.parse((f"api={down.url};model=m",), "config.curation.teachers")[0]
        client = teachers.EndpointTeacher(spec, max_retries=1, backoff_s=0.01)
        with pytest.raises(teachers.TeacherError, match="prompt 0: InternalServerError after 2 attempts"):
            client(["hello"], [0], 1)
