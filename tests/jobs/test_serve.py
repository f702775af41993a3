"""The `serve` job end to end through `python -m aya_jax.main`: an aya_jax run (a tiny random Cohere model, the
Command-R tokenizer) served on a free port, found through <workdir>/server.json, queried with the official
`openai` client; SIGTERM while a streamed request runs lets that request finish whole, then the job exits 0
with its summary and stops listening."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest
import runs  # tests/jobs/runs.py
from flax import linen as nn

from aya_jax import defaults, pretrained
from aya_jax.data import vocab

openai = pytest.importorskip("openai")

OVERRIDES = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                 max_position_embeddings=256, initializer_range=0.3)  # fmt: skip
NEW_TOKENS = 60


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("serve")
    tokenizer = shared_data / "tokenizers/command_r/tokenizer.json.gz"
    config = defaults.base_config()
    config.model.preset = "cohere-tiny"
    for name, value in OVERRIDES.items():
        config.model.overrides[name] = value
    model, _ = pretrained.build_model(config.model, vocab.HfTokenizerCodec(tokenizer).vocab_size)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    pretrained.save_params(root / "run", params, {})
    return root / "run", tokenizer


def _command(run_dir: pathlib.Path, tokenizer: pathlib.Path, workdir: pathlib.Path) -> list[str]:
    return [
        sys.executable, "-m", "aya_jax.main", "--config", str(runs.REPO / "configs/serve.py"), "--workdir", str(workdir),
        f"--config.serve.checkpoint_dir={run_dir}", f"--config.serve.tokenizer={tokenizer}",
        "--config.serve.port=0", "--config.serve.model_name=tiny", "--config.serve.slots=4",
        "--config.serve.max_len=256", "--config.model.dtype=float32",
        *(f"--config.model.overrides.{k}={v}" for k, v in OVERRIDES.items()),
    ]  # fmt: skip


@pytest.mark.slow
def test_sigterm_mid_request_finishes_it_and_exits_0(served_run, tmp_path, data_dir):
    run_dir, tokenizer = served_run
    workdir = tmp_path / "serve"
    proc = subprocess.Popen(
        _command(run_dir, tokenizer, workdir), env=runs.env(data_dir, devices=2), cwd=runs.REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    info = workdir / "server.json"
    deadline = time.time() + 300
    while not info.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.5)
    url = json.loads(info.read_text())["url"]
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["tiny"]

    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Écris un haïku sur la mer."}], temperature=0,
        max_tokens=NEW_TOKENS, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = iter(stream)
    first = next(chunks)
    proc.send_signal(signal.SIGTERM)  # the request is running: it must still be answered whole
    rest = list(chunks)
    assert [c.choices[0].finish_reason for c in (first, *rest) if c.choices][-1] == "length"
    assert rest[-1].usage.completion_tokens == NEW_TOKENS
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "served" in out and "SIGTERM stops" in out
    assert not info.exists()
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


@pytest.mark.bad_input
def test_a_bad_serve_config_names_the_field(served_run, tmp_path, data_dir):
    run_dir, tokenizer = served_run
    proc = subprocess.run(
        [*_command(run_dir, tokenizer, tmp_path / "w"), "--config.serve.chat_template=chatml"],
        env=runs.env(data_dir, devices=1), cwd=runs.REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: config.serve.chat_template: 'chatml' is not one of auto, cohere, none"), (
        line
    )
