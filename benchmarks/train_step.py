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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aya_jax import metrics, optimizers  # noqa: E402
from aya_jax.models import cohere  # noqa: E402
from aya_jax.training import sft as sft_objective  # noqa: E402
from aya_jax.training import state as ts  # noqa: E402
from configs import common  # noqa: E402

BATCH, SEQ = 8, 512


def make_jax_step(cfg: cohere.CohereConfig, dtype: str, remat: str, scan: bool):
    """The trainer's own step (fused chunked cross-entropy, AdamW, clipping) on one device."""
    model = cohere.CohereLM(
        cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.float32, remat=remat, scan_layers=scan
    )
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (BATCH, SEQ + 1), 0, cfg.vocab_size))
    batch = {
        "decoder_input_tokens": tokens[:, :-1],
        "decoder_target_tokens": tokens[:, 1:],
        "decoder_loss_weights": np.ones((BATCH, SEQ), np.float32),
        "decoder_segment_ids": np.ones((BATCH, SEQ), np.int32),
        "decoder_positions": np.tile(np.arange(SEQ, dtype=np.int32), (BATCH, 1)),
    }
    config = common.base_config()
    tx, schedule = optimizers.make_optimizer(config.optimizer, 1000)
    state = ts.make_init_fn(model, tx, SEQ)(jax.random.PRNGKey(0))
    step = jax.jit(sft_objective.make_train_step(model, tx, schedule, 0.0, 1), donate_argnums=(0,))
    batch = jax.device_put(batch)
    holder = [state]

    def run() -> float:
        t0 = time.perf_counter()
        holder[0], m = step(holder[0], batch)
        jax.block_until_ready(m)
        return time.perf_counter() - t0

    run(), run()  # compile + warm caches
    return run


def make_torch_step(cfg: cohere.CohereConfig):
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

    def run() -> float:
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    run(), run()
    return run


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

    runners = [
        (
            f"aya_jax ({args.dtype}, remat={args.remat}, scan={not args.no_scan})",
            make_jax_step(cfg, args.dtype, args.remat, not args.no_scan),
        )
    ]
    torch_run = None if args.no_torch else make_torch_step(cfg)
    if torch_run is not None:
        runners.append(("transformers CohereForCausalLM (torch fp32)", torch_run))
    # Interleave the implementations step by step so that load from elsewhere hits both alike.
    timings = {name: [] for name, _ in runners}
    for _ in range(args.steps):
        for name, run in runners:
            timings[name].append(run())
    rows = list(timings.items())
    jt = rows[0][1]
    tt = rows[1][1] if torch_run is not None else None
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
