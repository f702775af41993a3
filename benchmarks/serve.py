"""Throughput of the `serve` job's HTTP server under 1, 8 and 32 concurrent clients against the offline sampler
at the same batch, and time to first token, in one run.

    python benchmarks/serve.py                       # cohere-bench fp32, prompt 128, 64 new tokens, 32 rows
    python benchmarks/serve.py --clients 1,8,32,64 --slots 32 --repeats 3

Model (fixed): cohere-bench (hidden 512, 8 layers, vocab 32000), random weights, greedy, no EOS (every request
generates exactly --new-tokens). The tokenizer only turns generated ids into text (the Command-R tokenizer
from the shared test data by default; prompts are sent as token ids, as lm-eval does).

Server: an engine of --slots rows (aya_jax/serving.py) behind the HTTP API on 127.0.0.1, C client threads
each sending one streamed `/v1/completions` request with the official `openai` client at once; generated
tokens/s = C x N / (time from the first request sent to the last token received), best of --repeats; time to
first token (TTFT) = the median, over clients, of request sent -> first chunk received. Offline: one
`Sampler.generate` of the same C prompts (prefill included: the server's figure includes it too). The server
always steps all --slots rows (fixed shapes), so with fewer clients than rows it does more work than the
offline batch of C; the ratio at C = slots is the like-for-like figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import linen as nn  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import openai  # noqa: E402
from machine import describe  # noqa: E402  (benchmarks/machine.py, beside this file)

from aya_jax import openai_server, sampling, serving  # noqa: E402
from aya_jax.data import vocab  # noqa: E402
from aya_jax.models import cohere  # noqa: E402

DEFAULT_TOKENIZER = os.path.join(os.path.dirname(REPO), "shared/data/tokenizers/command_r/tokenizer.json.gz")


def time_offline(sampler, prompts, n: int, repeats: int) -> float:
    params = sampling.SamplingParams(max_new_tokens=n)
    sampler.generate(prompts, params)  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sampler.generate(prompts, params)
        best = min(best, time.perf_counter() - t0)
    return best


async def _burst(url: str, model: str, prompts, n: int, stream: bool) -> dict:
    """One burst of concurrent requests from an asyncio client (run in its own process: see `time_server`)."""
    import asyncio

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

    async def one(prompt):
        sent = time.perf_counter()
        if not stream:
            reply = await client.completions.create(model=model, prompt=prompt, max_tokens=n, temperature=0)
            return time.perf_counter() - sent, reply.usage.completion_tokens
        first, tokens = None, 0
        chunks = await client.completions.create(
            model=model, prompt=prompt, max_tokens=n, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        async for chunk in chunks:
            if chunk.choices and first is None:
                first = time.perf_counter() - sent
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return first, tokens

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts))
    return {
        "wall": time.perf_counter() - t0,
        "ttft": [r[0] for r in results],
        "tokens": sum(r[1] for r in results),
    }


def time_server(url: str, model: str, prompts, n: int, stream: bool = True) -> tuple[float, list[float], int]:
    """(wall seconds, per-client TTFT seconds, tokens received) of one burst of concurrent requests. The
    clients run in a separate process (one asyncio loop), as real clients would: in this process their
    parsing would compete with the server's threads for the interpreter."""
    proc = subprocess.run(
        [sys.executable, __file__, "--client", url, "--new-tokens", str(n), *(["--no-stream"] if not stream else [])],
        input=json.dumps(prompts), capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"the client process failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["wall"], out["ttft"], out["tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    ap.add_argument(
        "--no-stream", action="store_true", help="whole replies (TTFT column: whole request time)"
    )
    ap.add_argument(
        "--client", default="", help=argparse.SUPPRESS
    )  # internal: run one burst against this URL
    args = ap.parse_args()
    if args.client:
        import asyncio

        prompts = json.loads(sys.stdin.read())
        print(
            json.dumps(
                asyncio.run(_burst(args.client, "bench", prompts, args.new_tokens, not args.no_stream))
            )
        )
        return

    cfg = cohere.PRESETS["cohere-bench"]
    n, p = args.new_tokens, args.prompt_len
    print(describe())
    print(
        f"cohere-bench {cohere.param_count(cfg) / 1e6:.1f} M params, fp32; prompt {p}, {n} new tokens, greedy; "
        f"server: {args.slots} rows"
    )
    model = cohere.CohereLM(cfg)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    codec = vocab.HfTokenizerCodec(args.tokenizer)
    sampler = sampling.Sampler(model, params, prompt_bucket=p)
    engine = serving.Engine(model, params, slots=args.slots, max_len=p + n, prompt_bucket=p).start()
    server = openai_server.Server(engine, codec, model_name="bench", eos_ids=())
    host, port = server.listen("127.0.0.1", 0)
    url = f"http://{host}:{port}/v1"

    print(
        f"\n{'clients':>7s} {'server tok/s':>13s} {'offline tok/s':>14s} {'server/offline':>15s} {'TTFT ms':>8s}"
    )
    for clients in [int(c) for c in args.clients.split(",")]:
        prompts = np.random.default_rng(clients).integers(10, cfg.vocab_size, size=(clients, p)).tolist()
        offline = time_offline(sampler, prompts, n, args.repeats)
        time_server(url, "bench", prompts, n)  # compile the joins of this many clients
        best, ttft = float("inf"), []
        for _ in range(args.repeats):
            wall, firsts, tokens = time_server(url, "bench", prompts, n, not args.no_stream)
            assert tokens == clients * n, (tokens, clients * n)
            if wall < best:
                best, ttft = wall, firsts
        served, reference = clients * n / best, clients * n / offline
        print(
            f"{clients:7d} {served:13.1f} {reference:14.1f} {served / reference:14.2f}x "
            f"{1000 * statistics.median(ttft):8.0f}",
            flush=True,
        )
    server.shutdown()


if __name__ == "__main__":
    main()
