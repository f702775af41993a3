"""Encoder-decoder decode throughput of the mT5 benchmark model with the KV cache, against the
memory-bandwidth bound and transformers' `generate`, in one run: the mT5 twin of benchmarks/decode.py.

    python benchmarks/decode_mt5.py                  # fp32, batch 1 and 32, encoder prompt 128, 64 new tokens
    python benchmarks/decode_mt5.py --batches 8 --new-tokens 128 --no-torch

Model (fixed): mt5-bench (d_model 512, d_ff 1536, 8 heads of 64, 4 encoder + 4 decoder layers, vocab 32000,
untied lm_head), random weights, greedy. The prompt is the encoder input; the decoder starts from
`decoder_start_id`. aya_jax runs `sampling.Sampler` (jitted `generate_from_prompt`: the encoder once,
then a `while_loop` of cached decoder steps); transformers runs the same weights, exported by
`aya_jax.hf.save(model_type="mt5", dtype="float32")` and loaded by `AutoModelForSeq2SeqLM` (torch fp32, same
threads), with `generate(do_sample=False, num_beams=1, min_new_tokens=N, max_new_tokens=N)`. Before timing,
the greedy token ids of both are asserted identical on one batch (the largest), so the timing compares the
same work.

Decode tokens/s counts only the decode steps, as decode.py: (time of generating N tokens - time of generating
1 token, i.e. the encoder and the start-token step) over B x (N - 1) tokens, best of `--repeats`, the two
timings interleaved.

Bound: one decode step must read, once each,
    W      the decoder weights a step uses (every decoder-stack parameter except the cross-attention k/v
           projections, which only the prefill applies to the encoder output) + lm_head [vocab, d_model]
    KVs    the self-attention keys/values of the tokens so far: B x C x 2 x L_dec x heads x d_kv x bytes,
           C = N / 2 + 1 the average decoder context over the timed steps (start token included)
    KVx    the cached cross-attention keys/values of the encoder output: B x S x 2 x L_dec x heads x d_kv x
           bytes, S the encoder length
so a step takes at least (W + KVs + KVx) / bandwidth seconds at the measured read bandwidth (decode.py's
jitted reduction), and the bound is B x bandwidth / (W + KVs + KVx) tokens/s. The B embedding rows gathered
per step are left out (negligible). aya_jax reads the whole preallocated self-attention cache (1 + N slots,
masked) every step, which the bound does not count. With a short reply the cross-attention K/V (S slots per row)
outweighs the self-attention cache (about N / 2 slots per row).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import linen as nn  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from aya_jax import hf, sampling  # noqa: E402
from aya_jax.models import mt5  # noqa: E402


def _load_decode_benchmark():
    """benchmarks/decode.py as a module (benchmarks/ is not a package): its bandwidth probe and timers."""
    spec = importlib.util.spec_from_file_location(
        "decode_benchmark", os.path.join(REPO, "benchmarks", "decode.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


decode_benchmark = _load_decode_benchmark()


def torch_reference(params: Any, cfg: mt5.MT5Config, directory: str):
    """The same weights in transformers' MT5ForConditionalGeneration (exported by aya_jax.hf, loaded by
    AutoModelForSeq2SeqLM.from_pretrained), or None without transformers/torch."""
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"transformers/torch not installed ({e.name}); skipping the reference (pip install -e '.[hf]')")
        return None
    hf.save(directory, params, cfg, model_type="mt5", dtype="float32")
    torch.set_num_threads(os.cpu_count() or 1)
    return transformers.AutoModelForSeq2SeqLM.from_pretrained(directory, dtype=torch.float32).eval()


def torch_greedy(model, prompts: np.ndarray, n: int) -> np.ndarray:
    """transformers' greedy decoder tokens [batch, n] (the leading decoder start token dropped)."""
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.from_numpy(prompts.astype(np.int64)),
            do_sample=False,
            num_beams=1,
            max_new_tokens=n,
            min_new_tokens=n,
            pad_token_id=0,
        )
    return out[:, 1:].numpy()


def check_same_tokens(sampler: sampling.Sampler, reference, prompts: np.ndarray, n: int) -> None:
    """Assert that both implementations choose the same greedy tokens for `prompts`."""
    ours = sampler.generate(prompts.tolist(), sampling.SamplingParams(max_new_tokens=n)).tokens
    theirs = torch_greedy(reference, prompts, n)
    if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
        rows, steps = np.nonzero(ours != theirs) if ours.shape == theirs.shape else ([], [])
        where = f" (first difference: row {rows[0]}, token {steps[0]})" if len(rows) else ""
        raise AssertionError(
            f"greedy tokens differ between aya_jax {ours.shape} and transformers {theirs.shape}{where}"
        )
    print(
        f"greedy check: aya_jax and transformers chose the same {ours.size} token ids ({ours.shape[0]} rows)"
    )


def bytes_per_step(params: Any, cfg: mt5.MT5Config, batch: int, enc_len: int, n: int, itemsize: int) -> dict:
    """The bytes one decode step must read (module docstring): weights, self-attention KV, cross-attention KV."""
    decoder = params["decoder"]
    cross = decoder["layers"]["cross_attn"]
    weights = (
        sum(x.nbytes for x in jax.tree.leaves(decoder))
        - cross["k_proj"].nbytes
        - cross["v_proj"].nbytes
        + mt5.output_kernel(params).nbytes
    )
    per_token = 2 * cfg.num_decoder_layers * cfg.num_heads * cfg.d_kv * itemsize
    context = n / 2 + 1
    return {
        "weights": weights,
        "self_kv": batch * context * per_token,
        "cross_kv": batch * enc_len * per_token,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()

    cfg = mt5.PRESETS["mt5-bench"]
    dtype = jnp.dtype(args.dtype)
    n, p = args.new_tokens, args.prompt_len
    batches = [int(b) for b in args.batches.split(",")]
    if n < 2:
        raise ValueError(f"--new-tokens: decode tokens/s needs at least 2, got {n}")
    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); mt5-bench "
        f"{mt5.param_count(cfg) / 1e6:.1f} M params; encoder prompt {p}, {n} new tokens, greedy, {args.dtype}"
    )
    bandwidth = decode_benchmark.measure_read_bandwidth()
    print(f"measured read bandwidth: {bandwidth / 1e9:.1f} GB/s (jitted reduction over 512 MiB)")

    model = mt5.MT5(cfg, dtype=dtype, param_dtype=dtype)
    init_tokens = jnp.zeros((1, 8), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), init_tokens, init_tokens)["params"])
    sampler = sampling.Sampler(model, params, pad_id=cfg.pad_id, prompt_bucket=p)

    def prompts_for(batch: int) -> np.ndarray:  # no pad (0) or EOS (1): every encoder token is real
        return np.random.default_rng(batch).integers(10, cfg.vocab_size, size=(batch, p))

    with tempfile.TemporaryDirectory() as directory:
        reference = None
        if not args.no_torch:
            fp32_params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
            reference = torch_reference(fp32_params, cfg, directory)
        if reference is not None:
            if dtype == jnp.float32:
                check_same_tokens(sampler, reference, prompts_for(max(batches)), n)
            else:
                print("greedy check skipped: bf16 rounding legitimately changes tokens against fp32 torch")

        header = (
            f"\n{'batch':>5s} {'aya_jax tok/s':>14s} {'bound tok/s':>12s} {'of bound':>9s} "
            f"{'transformers tok/s':>19s} {'aya/hf':>7s}"
        )
        print(header)
        for batch in batches:
            prompts = prompts_for(batch)
            t_full, t_one = decode_benchmark.time_aya(sampler, prompts.tolist(), n, args.repeats)
            tps = batch * (n - 1) / (t_full - t_one)
            step = bytes_per_step(params, cfg, batch, p, n, dtype.itemsize)
            bound = batch * bandwidth / sum(step.values())
            row = f"{batch:5d} {tps:14.1f} {bound:12.1f} {100 * tps / bound:8.1f}%"
            if reference is not None:
                r_full, r_one = decode_benchmark.time_torch(reference, prompts, n, args.repeats)
                ref_tps = batch * (n - 1) / (r_full - r_one)
                row += f" {ref_tps:19.1f} {tps / ref_tps:6.2f}x"
            print(row, flush=True)
            print(
                f"      bytes per decode step: weights {step['weights'] / 2**20:.0f} MiB + self-attention KV "
                f"{step['self_kv'] / 2**20:.1f} MiB + cross-attention KV {step['cross_kv'] / 2**20:.1f} MiB"
            )
        print("(decode only: the encoder and the start-token step are excluded)")


if __name__ == "__main__":
    main()
