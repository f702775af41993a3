"""Serve any checkpoint the project reads over an OpenAI-compatible HTTP API, with continuous batching.

    python -m aya_jax.main --config configs/serve.py --config.serve.hf_dir=/ckpt/aya-expanse-8b
    python -m aya_jax.main --config configs/serve.py --config.serve.checkpoint_dir=workdirs/quickstart

Then any OpenAI client, e.g. `openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")`, the
`eval_battles` judge (config.eval.judge_base_url) or lm-evaluation-harness's `local-completions` model. The
endpoints and their fields are in aya_jax/openai_server.py; the batching in aya_jax/serving.py.

Once listening, the job writes `<workdir>/server.json` (url, model, pid: what scripts and tests read to find a
server started on port 0). SIGTERM or SIGINT stops it: no new connection is accepted, the requests in flight
finish and are answered, and the job exits 0 with a summary (requests, errors, tokens).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import signal
import threading
import time
from typing import Any

from aya_jax import defaults, hf, openai_server, pretrained, serving, sharding, workdirs
from aya_jax.evaluation import likelihood

log = logging.getLogger(__name__)

SECTIONS = ("model", "mesh", "data", "serve")


@dataclasses.dataclass
class ServeSummary:
    url: str
    model: str
    requests: int
    errors: int
    generated_tokens: int
    seconds: float


def run(config: Any, workdir: str) -> ServeSummary:
    s = config.serve
    defaults.validate(config, SECTIONS)
    workdirs.check_writable(workdir, "--workdir")
    mesh, rules = sharding.setup(config.mesh)
    if s.hf_dir:
        hf.read_config(s.hf_dir)  # a wrong directory is reported as such, before anything else
    source, field = (
        (s.hf_dir, "config.serve.hf_dir") if s.hf_dir else (s.checkpoint_dir, "config.serve.checkpoint_dir")
    )
    t0 = time.perf_counter()
    loaded = pretrained.load_inference_model(
        source, config.model, config.data, mesh, rules, tokenizer=str(s.tokenizer), field=field
    )
    engine = serving.Engine(
        loaded.model, loaded.params, mesh=mesh, rules=rules, pad_id=loaded.codec.pad_id, slots=int(s.slots),
        max_len=int(s.max_len), prompt_bucket=int(s.prompt_bucket), encoder_len=int(s.encoder_len),
    )  # fmt: skip
    scorer = None
    if s.echo_scoring and not engine.family.encoder_decoder:
        scorer = likelihood.Scorer(
            loaded.model, loaded.params, mesh=mesh, rules=rules, pad_id=loaded.codec.pad_id,
            batch_size=int(s.score_batch_size), max_length=engine.max_len,
        )  # fmt: skip
    name = str(s.model_name) or pathlib.Path(str(source)).resolve().name
    chat = str(s.chat_template)
    if chat == "auto" and s.checkpoint_dir and config.data.format == "raw":
        chat = "none"  # a run trained on raw rows reads its prompts as plain text
    server = openai_server.Server(
        engine, loaded.codec, model_name=name, eos_ids=loaded.eos_ids, chat_template=chat,
        default_max_tokens=int(s.max_tokens), scorer=scorer,
    )  # fmt: skip
    engine.start()
    log.info("model ready in %.1f s (%s)", time.perf_counter() - t0, source)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    host, port = server.listen(str(s.host), int(s.port))
    url = f"http://{host}:{port}/v1"
    info = pathlib.Path(workdir) / "server.json"
    info.write_text(json.dumps({"url": url, "model": name, "pid": os.getpid()}) + "\n")
    print(
        f"serving {name!r} at {url} ({engine.slots} rows, {engine.max_len} tokens each); SIGTERM stops",
        flush=True,
    )
    started = time.perf_counter()
    try:
        while not stop.wait(0.5):
            pass
        log.warning("stopping: no new requests; finishing %d in flight", engine.busy)
        server.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        info.unlink(missing_ok=True)
    summary = ServeSummary(
        url, name, server.requests, server.errors, engine.generated, time.perf_counter() - started
    )
    print(
        f"served {summary.requests} requests ({summary.errors} refused or failed), {summary.generated_tokens} "
        f"tokens generated in {summary.seconds:.0f} s",
        flush=True,
    )
    return summary
