"""aya_jax on one H100/H200-class GPU: train-step MFU of a ~1B-parameter Cohere model, and decode tokens/s.

    python benchmarks/gpu.py                       # the full run (~1.25 B params; a few minutes with compiles)
    python benchmarks/gpu.py --quick               # smoke run: fewer steps, decode batch 1 and 32, 32 tokens
    python benchmarks/gpu.py --allow-cpu --tiny    # the code paths on CPU with a tiny model (< 1 min): the test

Without a GPU (and without --allow-cpu) it stops at once with a one-line message and exit status 2.

1. Train step: the trainer's own step (benchmarks/train_step.py `make_jax_step`: sft.make_train_step, fused
   chunked cross-entropy, block-causal attention, nn.scan, AdamW with clipping), bf16 compute and fp32 params,
   on a `--batch` x `--seq` batch of random tokens. MFU = tokens/s x model FLOPs per token
   (cohere.train_flops_per_token: 6 x matmul params + attention, PaLM-style, no remat recomputation counted)
   over the device's dense bf16 peak (aya_jax.metrics.peak_flops_per_device: the datasheet table for
   H100/H200/A100/TPUs, a measured matmul elsewhere), and also over a bf16 matmul rate measured here on random
   data (an 8192^3 product on GPU: about 790 TFLOP/s was seen on an H200, against 989 on the datasheet). If the
   step runs out of memory at `--remat`, it is retried with dots_saveable, then full rematerialisation.
   `--variants` also times train_step.py's variants of the step, one after the other (e.g. scan-unroll:
   nn.scan fully unrolled; f32acc: bf16 einsums accumulating in fp32 with an fp32-accumulating backward —
   both ~1.4x faster on CPU; whether they help or hurt on a GPU is what this measures):
       python benchmarks/gpu.py --variants trainer,scan-unroll,f32acc,f32acc+scan-unroll
2. Decode: `aya_jax.sampling.Sampler` (greedy, no EOS, bf16 params and KV cache) at each `--decode-batches`
   batch size, timed as benchmarks/decode.py does: (time of N new tokens - time of 1 token, i.e. the prefill)
   over B x (N - 1) tokens, best of `--repeats`; beside the memory-bandwidth bound (weights + the KV cache so
   far, read once per step, at the read bandwidth of a jitted reduction measured here).

Model (`--tiny` off): "cohere-1b", defined here: hidden 2048, ffn 5632, 16 layers, 16 heads (4 KV heads),
head_dim 128, vocab 256000 (Aya's tokenizer), tied embeddings; its parameter count is printed.

On the lent H200 machines: the image has jax (CUDA plugin), flax and optax but not every aya_jax dependency;
ml-collections and tensorboardX at least must travel as wheels (/work/.library/device/README.md, Notes).
`--json PATH` also writes the figures as JSON (e.g. under $OUT).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCHMARKS))
sys.path.insert(0, BENCHMARKS)

COHERE_1B = dict(
    vocab_size=256000,
    hidden_size=2048,
    intermediate_size=5632,
    num_layers=16,
    num_heads=16,
    num_kv_heads=4,
    max_position_embeddings=8192,
    rope_theta=10000.0,
    logit_scale=0.0625,
)
# --tiny: the code paths on CPU in seconds.
COHERE_TINY = dict(
    vocab_size=1024,
    hidden_size=128,
    intermediate_size=384,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    max_position_embeddings=1024,
    logit_scale=0.125,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (for testing, with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="a tiny model and sizes: the code paths in < 1 min")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: fewer steps, decode batch 1,32, 32 tokens"
    )
    ap.add_argument("--batch", type=int, default=None, help="train rows per step (default 8; tiny 2)")
    ap.add_argument("--seq", type=int, default=None, help="train tokens per row (default 2048; tiny 128)")
    ap.add_argument("--steps", type=int, default=None, help="timed train steps (default 10; quick 3)")
    ap.add_argument("--remat", default="none", choices=["none", "dots_saveable", "full"])
    ap.add_argument(
        "--variants",
        default="trainer",
        help="comma-separated train-step variants of benchmarks/train_step.py (trainer, scan-unroll, f32acc, "
        "f32acc+scan-unroll, unrolled, attn-full, ce-full, plain-like); default: the trainer's step",
    )
    ap.add_argument("--decode-batches", default=None, help="comma-separated (default 1,32,128; quick 1,32)")
    ap.add_argument(
        "--prompt-len", type=int, default=None, help="decode prompt tokens (default 128; tiny 16)"
    )
    ap.add_argument("--new-tokens", type=int, default=None, help="decode new tokens (default 128; quick 32)")
    ap.add_argument("--repeats", type=int, default=None, help="decode timings, best of (default 3; quick 1)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    def pick(value, full, quick, tiny):
        if value is not None:
            return value
        return tiny if args.tiny else quick if args.quick else full

    args.batch = pick(args.batch, 8, 8, 2)
    args.seq = pick(args.seq, 2048, 2048, 128)
    args.steps = pick(args.steps, 10, 3, 2)
    args.decode_batches = [int(b) for b in pick(args.decode_batches, "1,32,128", "1,32", "1,4").split(",")]
    args.prompt_len = pick(args.prompt_len, 128, 128, 16)
    args.new_tokens = pick(args.new_tokens, 128, 32, 8)
    args.repeats = pick(args.repeats, 3, 1, 1)
    args.variants = [v for v in args.variants.split(",") if v]
    if args.new_tokens < 2:
        ap.error("--new-tokens: at least 2 (decode tokens/s is N tokens minus 1)")
    return args


def require_gpu(allow_cpu: bool) -> None:
    """Exit with one line unless jax's default backend is a GPU (or `allow_cpu`)."""
    import jax

    try:
        backend = jax.default_backend()
    except RuntimeError as e:  # no backend at all
        backend = f"none ({e})"
    if backend != "gpu" and not allow_cpu:
        print(
            f"gpu.py: no GPU found (jax backend: {backend}); run it on an H100/H200 machine, "
            "or test the code paths with --allow-cpu --tiny",
            file=sys.stderr,
        )
        raise SystemExit(2)


def is_oom(e: Exception) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def bench_train(cfg, args, peak: float, measured: float) -> list[dict]:
    """One row per `--variants` entry (train_step.VARIANTS), each built, timed and freed in turn."""
    import gc

    import jax
    import train_step

    from aya_jax.models import cohere

    batch = train_step.make_batch(cfg, args.batch, args.seq)
    flops_tok = cohere.train_flops_per_token(cfg, args.seq)
    order = ["none", "dots_saveable", "full"]
    rows = []
    for name in args.variants:
        for remat in order[order.index(args.remat) :]:
            t0 = time.perf_counter()
            try:
                run, _ = train_step.make_jax_step(
                    cfg, "bfloat16", remat, True, batch, train_step.VARIANTS[name]
                )
                compile_s = time.perf_counter() - t0
                times = [run() for _ in range(args.steps)]
            except Exception as e:  # noqa: BLE001 - only out-of-memory is retried
                if not is_oom(e) or remat == order[-1]:
                    raise
                print(f"train step {name}: out of memory with remat={remat}; retrying with more remat")
                run = None
                gc.collect()
                jax.clear_caches()
                continue
            break
        step_s = statistics.median(times)
        tps = args.batch * args.seq / step_s
        rows.append(
            {
                "variant": name,
                "batch": args.batch,
                "seq": args.seq,
                "remat": remat,
                "compile_and_warmup_s": compile_s,
                "step_s": step_s,
                "step_spread": max(times) / min(times),
                "tokens_per_s": tps,
                "model_flops_per_token": flops_tok,
                "model_tflops_per_s": tps * flops_tok / 1e12,
                "mfu": tps * flops_tok / peak,
                "mfu_vs_measured_matmul": tps * flops_tok / measured,
                "loss": run.last_loss,
            }
        )
        print(f"train {name}: {tps:,.0f} tokens/s, MFU {100 * rows[-1]['mfu']:.1f}%", flush=True)
        del run
        gc.collect()
    return rows


def bench_decode(cfg, args) -> list[dict]:
    import decode as decode_bench
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import linen as nn

    from aya_jax import sampling
    from aya_jax.models import cohere

    dtype = jnp.bfloat16
    model = cohere.CohereLM(cfg, dtype=dtype, param_dtype=dtype)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    sampler = sampling.Sampler(model, params, prompt_bucket=args.prompt_len)
    bandwidth = decode_bench.measure_read_bandwidth(64 if args.tiny else 1024)
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    kv_bytes_per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.dim_per_head * jnp.dtype(dtype).itemsize
    n, p = args.new_tokens, args.prompt_len
    rows = []
    for batch in args.decode_batches:
        prompts = np.random.default_rng(batch).integers(10, cfg.vocab_size, size=(batch, p)).tolist()
        t0 = time.perf_counter()
        t_full, t_one = decode_bench.time_aya(sampler, prompts, n, args.repeats)
        tps = batch * (n - 1) / (t_full - t_one)
        bound = batch * bandwidth / (weight_bytes + batch * (p + n / 2) * kv_bytes_per_token)
        rows.append(
            {
                "batch": batch,
                "tokens_per_s": tps,
                "ms_per_step": 1e3 * (t_full - t_one) / (n - 1),
                "prefill_s": t_one,
                "bound_tokens_per_s": bound,
                "of_bound": tps / bound,
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(
            f"decode batch {batch}: {tps:,.0f} tokens/s ({rows[-1]['wall_s']:.0f} s with compiles)",
            flush=True,
        )
    for row in rows:
        row["read_bandwidth_gb_s"] = bandwidth / 1e9
        row["weight_bytes"] = weight_bytes
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import train_step

    unknown = [v for v in args.variants if v not in train_step.VARIANTS]
    if unknown:
        raise SystemExit(f"gpu.py: --variants: unknown {unknown} (known: {', '.join(train_step.VARIANTS)})")
    require_gpu(args.allow_cpu)

    import jax
    from machine import describe

    from aya_jax import metrics
    from aya_jax.models import cohere

    print(describe())
    cfg = cohere.CohereConfig(**(COHERE_TINY if args.tiny else COHERE_1B), bos_id=-1, eos_id=1)
    name = "cohere-tiny (gpu.py)" if args.tiny else "cohere-1b"
    print(
        f"model {name}: {cohere.param_count(cfg) / 1e9:.3f} B params (hidden {cfg.hidden_size}, ffn "
        f"{cfg.intermediate_size}, {cfg.num_layers} layers, {cfg.num_heads} heads / {cfg.num_kv_heads} KV, "
        f"head_dim {cfg.dim_per_head}, vocab {cfg.vocab_size})"
    )
    peak, source = metrics.peak_flops_per_device("bfloat16")
    measured = train_step.measure_bf16_matmul(512 if args.tiny or jax.default_backend() != "gpu" else 8192)
    print(
        f"bf16 peak: {peak / 1e12:.1f} TFLOP/s ({source}); measured bf16 matmul: {measured / 1e12:.1f} TFLOP/s",
        flush=True,
    )
    results: dict = {
        "machine": describe(),
        "model": name,
        "params": cohere.param_count(cfg),
        "peak_flops": peak,
        "peak_source": source,
        "measured_matmul_flops": measured,
    }
    if not args.skip_train:
        results["train"] = bench_train(cfg, args, peak, measured)
    if not args.skip_decode:
        results["decode"] = bench_decode(cfg, args)

    print()
    if "train" in results:
        t = results["train"]
        print(
            f"train step ({name}, bf16 compute, fp32 params, {args.batch} x {args.seq}, median of {args.steps}; "
            f"MFU vs {peak / 1e12:.3g} TFLOP/s peak and vs the {measured / 1e12:.3g} TFLOP/s measured matmul)"
        )
        print(
            f"{'variant':20s} {'remat':>13s} {'step s':>8s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} "
            f"{'vs matmul':>9s} {'spread':>6s} {'compile s':>9s}"
        )
        for r in t:
            print(
                f"{r['variant']:20s} {r['remat']:>13s} {r['step_s']:8.3f} {r['tokens_per_s']:10,.0f} "
                f"{r['model_tflops_per_s']:8.1f} {100 * r['mfu']:5.1f}% {100 * r['mfu_vs_measured_matmul']:8.1f}% "
                f"{r['step_spread']:6.2f} {r['compile_and_warmup_s']:9.0f}"
            )
    if "decode" in results:
        d = results["decode"]
        print(
            f"\ndecode ({name}, bf16 params + KV cache, greedy, prompt {args.prompt_len}, {args.new_tokens} new "
            f"tokens, best of {args.repeats}; bound at {d[0]['read_bandwidth_gb_s']:.0f} GB/s measured read)"
        )
        print(f"{'batch':>5s} {'tokens/s':>10s} {'ms/step':>8s} {'bound tok/s':>12s} {'of bound':>9s}")
        for r in d:
            print(
                f"{r['batch']:5d} {r['tokens_per_s']:10,.0f} {r['ms_per_step']:8.2f} "
                f"{r['bound_tokens_per_s']:12,.0f} {100 * r['of_bound']:8.1f}%"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
