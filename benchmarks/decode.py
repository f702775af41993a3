"""Decode throughput of the benchmark model with the KV cache, against the memory-bandwidth bound and
transformers' `generate`, in one run; then the peak host memory of an HF import.

    python benchmarks/decode.py                      # fp32, batch 1 and 32, prompt 128, 64 new tokens
    python benchmarks/decode.py --dtype bfloat16 --new-tokens 128 --no-torch
    python benchmarks/decode.py --skip-import-memory --no-split

Model (fixed): cohere-bench (hidden 512, ffn 1536, 8 layers, 8 heads, vocab 32000), random weights, greedy.
Decode tokens/s counts only the decode steps: (time of generating N tokens - time of generating 1 token, i.e.
the prefill) over B x (N - 1) tokens, best of `--repeats`; transformers is timed the same way
(`generate(do_sample=False, min_new_tokens=N)`, torch in the same dtype, same threads, same prompt).

Bound: one decode step must read every weight once plus the keys/values of the tokens so far; at the
device's measured read bandwidth (a large jitted reduction) that takes
    (weight bytes + B x average context x 2 x layers x kv_heads x head_dim x cache bytes) / bandwidth
seconds, so the bound is B / that tokens/s. aya_jax reads the whole preallocated cache every step (fixed
shapes; masked), which the bound does not count. On CPU, compute rather than bandwidth usually limits batch
32; the ratio says how far from the bandwidth roofline each batch size runs.

Split: the per-step time of the decode loop by kind of work (sampling, attention over the cache, matmuls,
other model ops, loop overhead), from a `jax.profiler` trace of one generate (`pip install xprof` converts it).

Import memory: writes a random cohere-bench HF checkpoint (fp32 safetensors), imports it in a fresh process and
reports that process's peak RSS growth next to the size of the weights: the streaming import should need the
weights once (on CPU the device buffers are host memory) plus about one tensor, not two copies.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import linen as nn  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from machine import describe  # noqa: E402  (benchmarks/machine.py, beside this file)

from aya_jax import hf, sampling  # noqa: E402
from aya_jax.models import cohere  # noqa: E402


def measure_read_bandwidth(megabytes: int = 512, repeats: int = 7) -> float:
    """Bytes/s of a jitted full reduction over a large fp32 array (reads it once)."""
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    reduce = jax.jit(lambda a: jnp.sum(a))
    reduce(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        reduce(x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return x.nbytes / best


def time_aya(sampler, prompts, n: int, repeats: int) -> tuple[float, float]:
    """(best seconds for n new tokens, best seconds for 1) — both compiled first."""
    full, one = sampling.SamplingParams(max_new_tokens=n), sampling.SamplingParams(max_new_tokens=1)
    sampler.generate(prompts, full)
    sampler.generate(prompts, one)
    t_full, t_one = [], []
    for _ in range(repeats):  # interleaved, so load on a shared machine hits both alike
        t0 = time.perf_counter()
        sampler.generate(prompts, full)
        t_full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sampler.generate(prompts, one)
        t_one.append(time.perf_counter() - t0)
    return min(t_full), min(t_one)


# Where a decode step's time goes: every XLA op of the decode loop (the instructions of the while loop's body) falls
# in the first bin that claims it, by its source metadata (op_name) or, for the dots XLA emits without any, by
# its form: a dot with batch dimensions is attention (batched over rows and heads), one without is a matmul.
# Einsum specs are those of aya_jax/models/cohere.py.
SPLIT_BINS = (
    ("sampling", lambda op, text: "choose_tokens" in op),
    (
        "attention over the cache",
        lambda op, text: (
            "bhgqd,bhkd" in op or "bhgqk,bhkd" in op or (" dot(" in text and "lhs_batch_dims" in text)
        ),
    ),
    (
        "matmuls (projections, MLP, LM head)",
        lambda op, text: (
            " dot(" in text or any(e in op for e in ("bte,ehd", "bthd,hde", "bte,ef", "btf,fe", "bte,ve"))
        ),
    ),
    ("attention's softmax and masks", lambda op, text: "/attn/" in op),
    ("norms, RoPE, residuals, cache writes", lambda op, text: "CohereLM" in op),
)


def _loop_instructions(hlo: str) -> list[tuple[str, str, str]]:
    """(instruction, op_name, its HLO line) of every instruction in a while loop's body (nested ones too)."""
    computations: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.-]+) .*\{$", line)
        if header and not line.startswith(" "):
            current = computations.setdefault(header.group(1), [])
        elif current is not None and line.startswith("  %"):
            current.append(line)
    bodies, todo = set(), [c for lines in computations.values() for c in _bodies(lines)]
    while todo:
        body = todo.pop()
        if body not in bodies and body in computations:
            bodies.add(body)
            todo.extend(_bodies(computations[body]))
    out = []
    for body in bodies:
        for line in computations[body]:
            name = re.match(r"\s+%([\w.-]+) =", line).group(1)
            op = re.search(r'op_name="([^"]+)"', line)
            out.append((name, op.group(1) if op else "", line))
    return out


def _bodies(lines: list[str]) -> list[str]:
    return [
        m.group(1) for line in lines if " while(" in line for m in [re.search(r"body=%?([\w.-]+)", line)] if m
    ]


def profile_split(sampler, prompts, n: int) -> list[tuple[str, float]] | None:
    """Per-step milliseconds of the decode loop by bin (SPLIT_BINS), from a profile of one `generate`: the
    op durations of the perfetto trace of `jax.profiler` (needs `pip install xprof` for the trace conversion),
    attributed through the compiled HLO's op metadata. What no op accounts for is the loop's own overhead
    (control flow, thread hand-offs). None where no trace could be made."""
    params = sampling.SamplingParams(max_new_tokens=n)
    sampler.generate(prompts, params)  # compiled
    directory = tempfile.mkdtemp(prefix="decode_profile_")
    try:
        try:
            jax.profiler.start_trace(directory, create_perfetto_trace=True)
            t0 = time.perf_counter()
            sampler.generate(prompts, params)
            wall = time.perf_counter() - t0
            jax.profiler.stop_trace()
        except Exception as e:  # noqa: BLE001 - the split is optional; say why it is missing
            print(f"(no profile split: {type(e).__name__}: {e}; pip install xprof)")
            return None
        traces = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
        if not traces:
            print("(no profile split: jax.profiler wrote no perfetto trace; pip install xprof)")
            return None
        with gzip.open(traces[0]) as f:
            events = json.load(f)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    events = events["traceEvents"] if isinstance(events, dict) else events
    durations: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X":
            durations[e["name"]] = durations.get(e["name"], 0.0) + e["dur"] / 1e6
    tokens, start, _ = sampling.left_pad(prompts, sampler.pad_id, sampler.prompt_bucket)
    hlo = (
        sampler._generate.lower(
            sampler.params,
            tokens,
            start,
            jax.random.PRNGKey(0),
            sampling=params,
            row_ids=np.arange(len(tokens)),
        )
        .compile()
        .as_text()
    )
    seconds = {name: 0.0 for name, _ in SPLIT_BINS}
    for instruction, op_name, text in _loop_instructions(hlo):
        for name, claims in SPLIT_BINS:
            if instruction in durations and claims(op_name, text):
                seconds[name] += durations[instruction]
                break
    steps = n  # the loop runs max_new_tokens times (no EOS in the benchmark)
    rows = [(name, 1e3 * s / steps) for name, s in seconds.items()]
    # The loop's own wall time: its while thunk (prefill and the host transfers excluded).
    loop = max((d for name, d in durations.items() if re.fullmatch(r"while(\.\d+)?", name)), default=wall)
    rows.append(
        ("loop overhead (the rest of the step)", max(0.0, 1e3 * loop / steps - sum(r[1] for r in rows)))
    )
    return rows


def time_torch(model, prompts: np.ndarray, n: int, repeats: int) -> tuple[float, float]:
    import torch

    ids = torch.from_numpy(prompts.astype(np.int64))

    def gen(k):
        with torch.no_grad():
            model.generate(ids, do_sample=False, max_new_tokens=k, min_new_tokens=k, pad_token_id=0)

    gen(n)
    gen(1)
    t_full, t_one = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen(n)
        t_full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gen(1)
        t_one.append(time.perf_counter() - t0)
    return min(t_full), min(t_one)


def torch_reference(params, cfg: cohere.CohereConfig, directory: str, dtype: str):
    """The same weights in transformers' CohereForCausalLM (exported by aya_jax.hf, loaded by from_pretrained
    in `dtype`)."""
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"transformers/torch not installed ({e.name}); skipping the reference (pip install -e '.[hf]')")
        return None
    hf.save(directory, params, cfg, dtype="float32")
    torch.set_num_threads(os.cpu_count() or 1)
    return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype)).eval()


IMPORT_PROBE = """
import json, os, sys, resource
sys.path.insert(0, {repo!r})
def rss():
    fields = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return {{k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}}
import jax, jax.numpy as jnp
from aya_jax import hf
jax.block_until_ready(jnp.ones(8))  # backend up before the baseline
base = rss()["VmRSS"]
loaded = hf.load({directory!r}, dtype=jnp.float32)
jax.block_until_ready(loaded.params)
params = sum(x.nbytes for x in jax.tree.leaves(loaded.params))
print(json.dumps({{"baseline": base, "peak": rss()["VmHWM"], "params": params}}))
"""


def import_memory(cfg: cohere.CohereConfig) -> None:
    model = cohere.CohereLM(cfg)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    with tempfile.TemporaryDirectory() as directory:
        hf.save(directory, params, cfg, dtype="float32", max_shard_bytes=64 * 2**20)
        del params
        size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        probe = IMPORT_PROBE.format(repo=REPO, directory=directory)
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["baseline"]
    largest = cfg.vocab_size * cfg.hidden_size * 4
    print(
        f"\nHF import of cohere-bench ({size / 2**20:.0f} MiB of safetensors, fp32): peak RSS grew by "
        f"{growth / 2**20:.0f} MiB for {r['params'] / 2**20:.0f} MiB of params = {growth / r['params']:.2f}x "
        f"(the largest tensor, the embedding, is {largest / 2**20:.0f} MiB; a non-streaming import would need ~2x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--skip-import-memory", action="store_true")
    ap.add_argument(
        "--no-split", dest="split", action="store_false", help="skip the profile of a decode step"
    )
    args = ap.parse_args()

    cfg = cohere.PRESETS["cohere-bench"]
    dtype = jnp.dtype(args.dtype)
    n, p = args.new_tokens, args.prompt_len
    device = jax.devices()[0]
    print(describe())
    print(
        f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); cohere-bench "
        f"{cohere.param_count(cfg) / 1e6:.1f} M params; prompt {p}, {n} new tokens, greedy, {args.dtype}"
    )
    bandwidth = measure_read_bandwidth()
    print(f"measured read bandwidth: {bandwidth / 1e9:.1f} GB/s (jitted reduction over 512 MiB)")

    model = cohere.CohereLM(cfg, dtype=dtype, param_dtype=dtype)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    sampler = sampling.Sampler(model, params, prompt_bucket=p)
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    kv_bytes_per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.dim_per_head * dtype.itemsize

    with tempfile.TemporaryDirectory() as directory:
        reference = None
        if not args.no_torch:
            fp32_params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
            reference = torch_reference(fp32_params, cfg, directory, args.dtype)

        header = (
            f"\n{'batch':>5s} {'aya_jax tok/s':>14s} {'bound tok/s':>12s} {'of bound':>9s} "
            f"{'transformers tok/s':>19s} {'aya/hf':>7s}"
        )
        print(header)
        for batch in [int(b) for b in args.batches.split(",")]:
            prompts = np.random.default_rng(batch).integers(10, cfg.vocab_size, size=(batch, p))
            t_full, t_one = time_aya(sampler, prompts.tolist(), n, args.repeats)
            tps = batch * (n - 1) / (t_full - t_one)
            context = p + n / 2  # average tokens in the cache over the decode steps
            step_bytes = weight_bytes + batch * context * kv_bytes_per_token
            bound = batch * bandwidth / step_bytes
            row = f"{batch:5d} {tps:14.1f} {bound:12.1f} {100 * tps / bound:8.1f}%"
            if reference is not None:
                r_full, r_one = time_torch(reference, prompts, n, args.repeats)
                ref_tps = batch * (n - 1) / (r_full - r_one)
                row += f" {ref_tps:19.1f} {tps / ref_tps:6.2f}x"
            print(row, flush=True)
        if args.split:
            print(
                "\nper-step time of the decode loop, from a profile (ms; the profiler adds its own overhead):"
            )
            for batch in [int(b) for b in args.batches.split(",")]:
                prompts = np.random.default_rng(batch).integers(10, cfg.vocab_size, size=(batch, p)).tolist()
                split = profile_split(sampler, prompts, n)
                if split is None:
                    break
                total = sum(ms for _, ms in split)
                cells = ", ".join(f"{name} {ms:.2f} ({100 * ms / total:.0f}%)" for name, ms in split)
                print(f"  batch {batch}: {total:.2f} ms/step = {cells}")
        print(
            f"(bytes per decode step: weights {weight_bytes / 2**20:.0f} MiB + KV cache "
            f"{kv_bytes_per_token / 1024:.0f} KiB per token of context per row; decode only, prefill excluded)"
        )
    if not args.skip_import_memory:
        import_memory(cfg)


if __name__ == "__main__":
    main()
