"""Parity with lm-evaluation-harness itself. One tiny random-init Cohere model with the real Command-R
tokenizer is saved as an aya_jax checkpoint and exported to Hugging Face; three harness tasks in local files (the
offline path: `dataset_path: parquet|json` with `data_files`) — a Global-MMLU-format multiple-choice task (1-shot,
real multilingual text), a `loglikelihood_rolling` task and a short greedy `generate_until` task — run through
lm-eval with (a) the `aya_jax` adapter on the checkpoint and (b) lm-eval's own `hf` model on the export. They must
give the same per-request log-likelihoods, the same accuracy and identical greedy text; and the native Global-MMLU
evaluator the same log-likelihoods and accuracy again.

Tolerances: |Δ| <= 1e-4 nats per multiple-choice request (one or two tokens scored: fp32 rounding of two
implementations); a rolling log-likelihood sums hundreds of tokens into a total of thousands of nats, which torch
accumulates in fp32, so there |Δ| <= 1e-4 + 1e-7·|total| (float32's resolution, 1.19e-7, of the total)."""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiny_models  # tests/tiny_models.py
from flax import linen as nn

from aya_jax import hf, openai_server, pretrained, serving
from aya_jax.data import vocab

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")
from lm_eval.tasks import TaskManager  # noqa: E402

from aya_jax.evaluation import global_mmlu, harness  # noqa: E402  (harness needs lm_eval)

LL_TOL = 1e-4
ROLLING_RTOL = 1e-7
LANGS = {"fr": "fra", "sw": "swa", "ja": "jpn"}  # Global-MMLU code -> NTREX column (checked below)


def _config():
    config = tiny_models.cohere_config(max_positions=96)
    config.mesh.shape = (2, 2, 2)
    return config


def _ntrex(shared_data):
    rows = [
        json.loads(line)
        for line in (shared_data / "parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl").open()
    ]
    for column in LANGS.values():
        assert column in rows[0], sorted(rows[0])
    return rows


def _mmlu_rows(rows, lang, column, start, n):
    out = []
    for i in range(n):
        texts = [rows[start + 5 * i + j][column][:80] for j in range(5)]
        out.append({
            "sample_id": f"{lang}/{start + i}", "subject": "world_news", "subject_category": "Humanities",
            "question": texts[0], "option_a": texts[1], "option_b": texts[2], "option_c": texts[3],
            "option_d": texts[4], "answer": "ABCD"[(start + i) % 4], "required_knowledge": "", "time_sensitive": "No",
            "reference": "", "culture": "", "region": "", "country": "",
            "cultural_sensitivity_label": ["CS", "CA", "-"][i % 3], "is_annotated": i % 3 != 2,
        })  # fmt: skip
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("harness")
    tokenizer = shared_data / "tokenizers/command_r/tokenizer.json.gz"
    config = _config()
    codec = vocab.HfTokenizerCodec(tokenizer)
    model, cfg = pretrained.build_model(config.model, codec.vocab_size)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    pretrained.save_params(root / "run", params, {})
    hf.save(root / "hf", params, cfg, dtype="float32", tokenizer=tokenizer)

    rows = _ntrex(shared_data)
    data = root / "global_mmlu"
    tasks = root / "tasks"
    tasks.mkdir()
    for lang, column in LANGS.items():
        (data / lang).mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pylist(_mmlu_rows(rows, lang, column, 0, 5)),
            data / lang / "test-00000-of-00001.parquet",
        )
        pq.write_table(
            pa.Table.from_pylist(_mmlu_rows(rows, lang, column, 100, 2)),
            data / lang / "dev-00000-of-00001.parquet",
        )
        (tasks / f"gmmlu_{lang}.yaml").write_text(textwrap.dedent(f"""\
            task: local_global_mmlu_{lang}
            dataset_path: parquet
            dataset_kwargs:
              data_files:
                test: {data / lang / "test-00000-of-00001.parquet"}
                dev: {data / lang / "dev-00000-of-00001.parquet"}
            test_split: test
            fewshot_split: dev
            fewshot_config:
              sampler: first_n
            num_fewshot: 1
            output_type: multiple_choice
            doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{option_a}}}}\\nB. {{{{option_b}}}}\\nC. {{{{option_c}}}}\\nD. {{{{option_d}}}}\\nAnswer:"
            doc_to_choice: ["A", "B", "C", "D"]
            doc_to_target: answer
            metric_list:
              - metric: acc
                aggregation: mean
                higher_is_better: true
            """))  # fmt: skip
    texts = root / "texts.jsonl"
    with texts.open("w") as f:
        for i, column in enumerate(["eng", "fra", "arb", "jpn", "hin"]):
            text = " ".join(
                rows[j][column] for j in range(3 * i, 3 * i + 3)
            )  # some over 96 tokens: 2+ windows
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    (tasks / "rolling.yaml").write_text(textwrap.dedent(f"""\
        task: local_rolling
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {texts}
        test_split: test
        output_type: loglikelihood_rolling
        doc_to_text: ""
        doc_to_target: "{{{{text}}}}"
        metric_list:
          - metric: word_perplexity
        """))  # fmt: skip
    (tasks / "generate.yaml").write_text(textwrap.dedent(f"""\
        task: local_generate
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {texts}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{text[:60]}}}}"
        doc_to_target: ""
        generation_kwargs:
          until: ["\\n\\n"]
          max_gen_toks: 12
          do_sample: false
        metric_list:
          - metric: exact_match
        """))  # fmt: skip
    return {"config": config, "tokenizer": tokenizer, "run": root / "run", "hf": root / "hf", "tasks": tasks,
            "data": data}  # fmt: skip


pytestmark = pytest.mark.slow  # ~70 s: two harness runs (one through torch)

TASKS = [f"local_global_mmlu_{lang}" for lang in LANGS] + ["local_rolling", "local_generate"]


def _evaluate(model, tasks_dir, **kwargs):
    return lm_eval.simple_evaluate(
        model=model, tasks=TASKS, task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=True,
        **kwargs,
    )  # fmt: skip


def _responses(out, task):
    return [s["resps"] for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]


@pytest.fixture(scope="module")
def both(setup):  # one harness run per model for the module
    ours = harness.AyaJaxLM(
        checkpoint=str(setup["run"]), config=setup["config"], tokenizer=str(setup["tokenizer"]), batch_size=8
    )
    theirs = _evaluate("hf", setup["tasks"], model_args=f"pretrained={setup['hf']},dtype=float32", device="cpu",
                       batch_size=1)  # fmt: skip
    return ours, _evaluate(ours, setup["tasks"]), theirs


def _assert_same_results(ours, theirs):
    """Per-request log-likelihoods (LL_TOL; rolling totals also ROLLING_RTOL), accuracy, greedy text."""
    for lang in LANGS:
        task = f"local_global_mmlu_{lang}"
        a = np.array([[r[0][0] for r in doc] for doc in _responses(ours, task)])
        b = np.array([[r[0][0] for r in doc] for doc in _responses(theirs, task)])
        np.testing.assert_allclose(a, b, atol=LL_TOL, rtol=0)
        assert ours["results"][task]["acc,none"] == theirs["results"][task]["acc,none"]
    a = np.array([doc[0][0] for doc in _responses(ours, "local_rolling")])
    b = np.array([doc[0][0] for doc in _responses(theirs, "local_rolling")])
    np.testing.assert_allclose(a, b, atol=LL_TOL, rtol=ROLLING_RTOL)
    assert _responses(ours, "local_generate") == _responses(theirs, "local_generate")


def test_loglikelihoods_accuracy_and_greedy_text_equal_lm_evals_hf_model(both):
    _, ours, theirs = both
    _assert_same_results(ours, theirs)
    assert all(doc[0][0] for doc in _responses(ours, "local_generate"))  # something was generated


def test_the_adapter_is_registered_by_name(setup):
    from lm_eval.api.registry import get_model  # noqa: PLC0415 - the registry as lm_eval's CLI reads it

    assert get_model("aya_jax") is harness.AyaJaxLM


def test_the_native_global_mmlu_evaluator_equals_the_harness(setup, both):
    lm, ours, theirs = both
    items = global_mmlu.load(setup["data"], tuple(LANGS), "test")
    dev = global_mmlu.load(setup["data"], tuple(LANGS), "dev")
    native = global_mmlu.evaluate(items, lm.text_model.loglikelihood, dev=dev, num_fewshot=1, rounds=10)
    for lang in LANGS:
        task = f"local_global_mmlu_{lang}"
        mine = np.array([p["loglikelihoods"] for p in native["predictions"] if p["language"] == lang])
        for out in (ours, theirs):
            harness_ll = np.array([[r[0][0] for r in doc] for doc in _responses(out, task)])
            np.testing.assert_allclose(mine, harness_ll, atol=LL_TOL, rtol=0)
            assert native["per_language"][lang]["all"]["mean"] == out["results"][task]["acc,none"]


def test_lm_evals_command_line_runs_the_aya_jax_model(setup, both, tmp_path):
    """`aya-lm-eval` (= `python -m aya_jax.lm_eval_main`): lm-eval's own CLI with `--model aya_jax`, the run's
    experiment file given as `config=`; the same accuracy as the in-process run."""
    _, ours, _ = both
    overrides = "".join(
        f"    c.model.overrides.{k} = {v!r}\n"
        for k, v in setup["config"].model.overrides.items()
        if v is not None
    )
    experiment = tmp_path / "tiny.py"
    experiment.write_text(
        "from aya_jax import defaults\n\n\ndef get_config():\n    c = defaults.base_config()\n"
        f"    c.model.preset = 'cohere-tiny'\n    c.model.dtype = 'float32'\n{overrides}    return c\n"
    )  # fmt: skip
    task = "local_global_mmlu_fr"
    proc = subprocess.run(
        [sys.executable, "-m", "aya_jax.lm_eval_main", "--model", "aya_jax", "--model_args",
         f"checkpoint={setup['run']},config={experiment},tokenizer={setup['tokenizer']}", "--batch_size", "8",
         "--tasks", task, "--include_path", str(setup["tasks"]), "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert written["results"][task]["acc,none"] == ours["results"][task]["acc,none"]


def test_lm_evals_local_completions_through_the_server_equals_the_adapter(setup, both):
    """The same tasks through lm-eval's `local-completions` model against the `serve` job's HTTP API (the
    adapter's model behind aya_jax/openai_server.py): the same per-request log-likelihoods (1e-4; the rolling
    totals as above), the same accuracy and the same greedy text.

    lm-eval's API models keep one position of `max_length` for a generated token and window rolling texts by
    `max_length - 1`: a request is cut to `max_length - 1` tokens where the `hf` model and the adapter keep
    `max_length + 1`. So the served run (max_length 96, the model's context) is compared with the adapter at
    max_length 94: both then score the same tokens of every request, cut or not (most requests here are cut)."""
    lm, _, _ = both
    text_model = lm.text_model
    model, params, codec = text_model.scorer.model, text_model.scorer.params, text_model.codec
    engine = serving.Engine(
        model, params, pad_id=codec.pad_id, slots=4, max_len=text_model.max_length
    ).start()
    server = openai_server.Server(engine, codec, model_name="tiny", eos_ids=(), scorer=text_model.scorer)
    host, port = server.listen("127.0.0.1", 0)
    try:
        served = _evaluate(
            "local-completions", setup["tasks"],
            model_args=(f"model=tiny,base_url=http://{host}:{port}/v1/completions,tokenizer={setup['hf']},"
                        "tokenizer_backend=huggingface,tokenized_requests=True,add_bos_token=True,"
                        f"max_length={text_model.max_length},num_concurrent=1,max_retries=1"),
        )  # fmt: skip
    finally:
        server.shutdown()
    shorter = harness.AyaJaxLM(
        checkpoint=str(setup["run"]), config=setup["config"], tokenizer=str(setup["tokenizer"]), batch_size=8,
        max_length=text_model.max_length - 2,
    )  # fmt: skip
    _assert_same_results(_evaluate(shorter, setup["tasks"]), served)
