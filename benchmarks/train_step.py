"""Train-step throughput of the benchmark model, beside the device's matmul peak and transformers, in one run.

    python benchmarks/train_step.py                 # fp32, batch 8 x 512, aya_jax vs transformers
    python benchmarks/train_step.py --dtype bfloat16 --steps 5 --no-torch

Model (fixed): Cohere decoder, hidden 512, ffn 1536, 8 layers, 8 heads, vocab 32000; one AdamW step on a
batch of 8 x 512 tokens. Prints tokens/s, model FLOP/s, MFU against the matmul peak measured in the same
run, and the ratio to transformers' CohereForCausalLM doing the same training step with torch (when both are
installed: `pip install -e '.[hf]'`). Shared machines are noisy: compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import linen as nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aya_jax import losses, metrics  # noqa: E402
from aya_jax.models import cohere  # noqa: E402

BATCH, SEQ = 8, 512


def bench_jax(cfg: cohere.CohereConfig, dtype: str, steps: int, remat: str, scan: bool) -> list[float]:
    model = cohere.CohereLM(
        cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.float32, remat=remat, scan_layers=scan
    )
    tokens = jax.random.randint(jax.random.PRNGKey(1), (BATCH, SEQ + 1), 0, cfg.vocab_size)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    weights = jnp.ones((BATCH, SEQ), jnp.float32)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), inputs)["params"])
    tx = optax.adamw(1e-4, weight_decay=0.1)
    opt_state = tx.init(params)

    def loss_fn(p):
        logits = model.apply({"params": p}, inputs)
        return losses.cross_entropy(logits, targets, weights)[0]

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(2):  # compile + warm caches
        params, opt_state, loss = step(params, opt_state)
    loss.block_until_ready()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state)
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    return times


def bench_torch(cfg: cohere.CohereConfig, steps: int) -> list[float] | None:
    try:
        import torch
        from transformers import CohereConfig, CohereForCausalLM
    except ImportError as e:
        print(f"transformers/torch not installed ({e.name}); skipping the reference (pip install -e '.[hf]')")
        return None
    torch.manual_seed(0)
    hf_cfg = CohereConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        logit_scale=cfg.logit_scale,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    model = CohereForCausalLM(hf_cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, SEQ + 1))
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, cfg.vocab_size), labels.reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--remat", default="none", choices=["none", "full", "dots_saveable"])
    ap.add_argument("--no-scan", action="store_true", help="unroll the layers instead of nn.scan")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()

    cfg = cohere.PRESETS["cohere-bench"]
    flops_tok = cohere.train_flops_per_token(cfg, SEQ)
    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); "
        f"model cohere-bench {cohere.param_count(cfg) / 1e6:.1f} M params; batch {BATCH} x {SEQ}; "
        f"{flops_tok / 1e6:.1f} MFLOP/token"
    )
    peak, source = metrics.peak_flops_per_device(args.dtype)
    print(f"peak matmul: {peak / 1e9:.1f} GFLOP/s ({source})")

    rows = []
    jt = bench_jax(cfg, args.dtype, args.steps, args.remat, not args.no_scan)
    rows.append((f"aya_jax ({args.dtype}, remat={args.remat}, scan={not args.no_scan})", jt))
    tt = None if args.no_torch else bench_torch(cfg, args.steps)
    if tt is not None:
        rows.append(("transformers CohereForCausalLM (torch fp32)", tt))
    peak_after, _ = metrics.peak_flops_per_device(args.dtype)  # cached: same figure

    print(f"\n{'implementation':58s} {'step s':>8s} {'tokens/s':>10s} {'GFLOP/s':>9s} {'MFU':>6s}")
    results = {}
    for name, times in rows:
        med = statistics.median(times)
        tps = BATCH * SEQ / med
        results[name] = tps
        print(
            f"{name:58s} {med:8.3f} {tps:10.1f} {tps * flops_tok / 1e9:9.1f} "
            f"{100 * tps * flops_tok / peak_after:5.1f}%"
        )
    if tt is not None:
        ratio = BATCH * SEQ / statistics.median(jt) / (BATCH * SEQ / statistics.median(tt))
        print(f"\naya_jax / transformers tokens/s ratio: {ratio:.2f}x (same run)")
    print(
        f"spread (max/min step time): aya_jax {max(jt) / min(jt):.2f}"
        + (f", transformers {max(tt) / min(tt):.2f}" if tt else "")
    )
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
