"""One RLOO iteration of the benchmark model, split into generation / scoring / update, beside references
measured in the same run.

    python benchmarks/rloo_step.py                          # fp32, 8 prompts x k=4, 64 prompt + 64 new tokens
    python benchmarks/rloo_step.py --dtype bfloat16 --prompts 16 --steps 5

Model (fixed): the `cohere-bench` preset (hidden 512, ffn 1536, 8 layers, 8 heads, vocab 32000), random
weights, on one device. Each iteration runs the trainer's own pieces (aya_jax/training/rloo.py):
`rollouts.sample` (k completions per prompt; no EOS, so every row generates exactly `--new-tokens` and the
token count is fixed), scoring (a host-side reward of the token ids standing in for a Python reward function,
plus the policy and reference log-probs and the leave-one-out advantages), and the update (one optax step on
the REINFORCE loss over all rows). References, on the same rows:

* sampling alone: `aya_jax.sampling.Sampler.generate` of the same B·k prompts and token count, i.e. what the
  generation phase costs without RLOO's row layout around it (ratio near 1 = no overhead);
* the SFT train step (`aya_jax.training.sft.make_train_step`: fused chunked cross-entropy, AdamW) on the same
  [B·k, prompt + new] tokens, loss on the completion tokens: what one supervised step on the same data costs.

Prints per-phase seconds (median over `--steps` iterations after a compile/warm-up iteration), tokens/s and
the ratios. Shared machines are noisy: compare ratios within one run only.

Then the peak memory of scoring (`rloo.make_score_fn`: policy and reference log-probs and entropy of every
row) from XLA's compiled memory analysis (`jax.jit(f).lower(...).compile().memory_analysis()`): the trainer's
chunked path (`losses.token_log_probs_and_entropy`, fp32 logits [chunk, vocab] at a time) beside the former
full-logits formulation written out here (fp32 logits [n, L, vocab], log-softmax, entropy), with the largest
difference of their outputs.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import describe  # noqa: E402

from aya_jax import losses, optimizers, sampling  # noqa: E402
from aya_jax.models import cohere  # noqa: E402
from aya_jax.training import (
    rloo,  # noqa: E402
    rollouts,
)
from aya_jax.training import sft as sft_objective  # noqa: E402
from aya_jax.training import state as ts  # noqa: E402
from configs import rloo as rloo_config  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def _full_logits_score_fn(model: cohere.CohereLM, temperature: float):
    """The "before" reference: `rloo.make_score_fn` as it was, with `rollouts.sequence_log_probs` forming the
    completion's logits [n, L, vocab] in fp32 all at once."""

    def sequence_log_probs(params, ro):
        p = ro.prompt_len
        h = rollouts._completion_states(model, params, ro)  # [n, L, embed]
        kernel = cohere.output_kernel(params).astype(model.dtype)
        logits = jnp.einsum("bte,ve->btv", h, kernel, preferred_element_type=jnp.float32)
        logits = logits * (model.cfg.logit_scale / temperature)
        log_z = jax.nn.logsumexp(logits, axis=-1)
        mask = ro.completion_mask[:, p:]
        token_logps = (jnp.take_along_axis(logits, ro.tokens[:, p:, None], axis=-1)[..., 0] - log_z) * mask
        entropy_t = log_z - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
        entropy = jnp.sum(entropy_t * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        return jnp.sum(token_logps, axis=1), entropy

    def score(params, ref_params, ro):
        old, entropy = sequence_log_probs(params, ro)
        ref, _ = sequence_log_probs(ref_params, ro)
        return old, ref, entropy

    return score


def _scoring_memory(model, temperature, params, ref_params, ro, n: int, new_tokens: int) -> list[str]:
    """XLA's compiled memory analysis of scoring, chunked (the trainer's) and full-logits (before): the lines
    to print."""
    mib = 2.0**-20
    fns = {
        "before: full logits": _full_logits_score_fn(model, temperature),
        "after:  chunked": rloo.make_score_fn(model, temperature),
    }
    stats, outs = {}, {}
    for name, fn in fns.items():
        compiled = jax.jit(fn).lower(params, ref_params, ro).compile()
        ma = compiled.memory_analysis()
        stats[name] = (ma.temp_size_in_bytes, ma.argument_size_in_bytes, ma.output_size_in_bytes)
        outs[name] = jax.device_get(compiled(params, ref_params, ro))
    chunk = inspect.signature(losses.token_log_probs_and_entropy).parameters["chunk_size"].default
    vocab = model.cfg.vocab_size
    lines = [
        f"scoring memory (rloo.make_score_fn, policy + reference; XLA memory_analysis, MiB): {n} rows x "
        f"{new_tokens} completion tokens, vocab {vocab}; fp32 logits [n, L, vocab] = "
        f"{n * new_tokens * vocab * 4 * mib:.1f}, one chunk [{min(chunk, n * new_tokens)}, vocab] = "
        f"{min(chunk, n * new_tokens) * vocab * 4 * mib:.1f}"
    ]
    for name, (temp, arg, out) in stats.items():
        lines.append(
            f"  {name:<20} temp {temp * mib:9.1f}   arguments {arg * mib:7.1f}   outputs {out * mib:6.3f}"
        )
    (before_temp, *_), (after_temp, *_) = stats.values()
    before, after = outs.values()
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(before, after, strict=True))
    lines.append(
        f"  temp before / after = {before_temp / max(after_temp, 1):.2f}   "
        f"(saved {(before_temp - after_temp) * mib:.1f} MiB); max |difference| of the outputs {diff:.2e}"
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    print(describe())

    cfg = cohere.PRESETS["cohere-bench"]
    model = cohere.CohereLM(cfg, dtype=jnp.dtype(args.dtype), param_dtype=jnp.float32)
    config = rloo_config.get_config()
    config.rloo.k = args.k
    config.rloo.max_new_tokens = args.new_tokens
    tx, schedule = optimizers.make_optimizer(config.optimizer, 1000)
    state = jax.jit(ts.make_init_fn(model, tx, 8))(jax.random.PRNGKey(0))
    ref_params = jax.tree.map(jnp.copy, state.params)
    n, length = args.prompts * args.k, args.prompt_len + args.new_tokens
    rng = np.random.default_rng(0)
    prompt_tokens = rng.integers(2, cfg.vocab_size, (args.prompts, args.prompt_len)).astype(np.int32)
    prompt_start = np.zeros((args.prompts,), np.int32)
    sp = sampling.SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, eos_ids=())
    temperature = float(config.rloo.temperature)
    p_score = jax.jit(rloo.make_score_fn(model, temperature))
    p_adv = jax.jit(rloo.make_advantage_fn(config))
    p_update = jax.jit(
        rloo.make_update_step(model, tx, temperature, float(config.rloo.clip_eps)), donate_argnums=(0,)
    )
    all_rows = jnp.arange(n, dtype=jnp.int32)
    print(
        f"cohere-bench ({cohere.param_count(cfg) / 1e6:.1f} M params, {args.dtype}) on {jax.devices()[0].device_kind}: "
        f"{args.prompts} prompts x k={args.k} = {n} rows, {args.prompt_len} prompt + {args.new_tokens} new tokens"
    )

    holder = {"state": state}
    times: dict[str, list[float]] = {"generation": [], "scoring": [], "update": []}
    for it in range(args.steps + 1):  # iteration 0 compiles
        key = jax.random.PRNGKey(it)
        t0 = time.perf_counter()
        ro = rollouts.sample(model, holder["state"].params, prompt_tokens, prompt_start, args.k, key, sp)
        jax.block_until_ready(ro)
        t1 = time.perf_counter()
        # Host reward standing in for a Python reward function: the fraction of even token ids.
        comp = np.asarray(ro.completion_tokens)
        scores = jnp.asarray((comp % 2 == 0).mean(axis=1), jnp.float32)
        old, ref, _ = p_score(holder["state"].params, ref_params, ro)
        adv, _ = p_adv(scores, ro.ended_with_eos, old, ref)
        jax.block_until_ready(adv)
        t2 = time.perf_counter()
        holder["state"], m = p_update(holder["state"], ro, old, adv, all_rows)
        jax.block_until_ready(m)
        t3 = time.perf_counter()
        if it:
            for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[name].append(dt)
    med = {name: statistics.median(v) for name, v in times.items()}
    # Before the references below: the SFT step donates the state.
    memory = _scoring_memory(model, temperature, holder["state"].params, ref_params, ro, n, args.new_tokens)
    total = sum(med.values())

    # Reference 1: sampling alone, the same rows and token count through the Sampler.
    sampler = sampling.Sampler(model, holder["state"].params, prompt_bucket=args.prompt_len)
    prompts = [list(p) for p in np.repeat(prompt_tokens, args.k, axis=0)]
    sampler.generate(prompts, sp, seed=0)  # compile
    sample_alone = statistics.median(
        _timed(lambda s=s: sampler.generate(prompts, sp, seed=s).tokens) for s in range(args.steps)
    )

    # Reference 2: the SFT train step on the same [n, prompt + new] tokens (loss on the completion part).
    sft_step = jax.jit(sft_objective.make_train_step(model, tx, schedule, 0.0, 1), donate_argnums=(0,))
    toks = np.asarray(ro.tokens)
    weights = np.zeros((n, length), np.float32)
    weights[:, args.prompt_len - 1 : length - 1] = 1.0
    batch = {
        "decoder_input_tokens": toks,
        "decoder_target_tokens": np.concatenate([toks[:, 1:], np.zeros((n, 1), np.int32)], axis=1),
        "decoder_loss_weights": weights,
        "decoder_segment_ids": np.ones((n, length), np.int32),
        "decoder_positions": np.tile(np.arange(length, dtype=np.int32), (n, 1)),
    }
    sft_holder = {"state": holder["state"]}

    def sft_once():
        sft_holder["state"], m = sft_step(sft_holder["state"], batch)
        return m

    _timed(sft_once)  # compile
    sft_time = statistics.median(_timed(sft_once) for _ in range(args.steps))

    new_tokens, all_tokens = n * args.new_tokens, n * length
    print(
        f"per RLOO step (median of {args.steps}):   {total:8.3f} s   {all_tokens / total:10,.0f} tokens/s (prompt + completion)"
    )
    for name in times:
        print(f"  {name:<11}{med[name]:8.3f} s  {100 * med[name] / total:5.1f}%")
    print(f"  generation  {new_tokens / med['generation']:10,.0f} new tokens/s")
    print(f"  update      {all_tokens / med['update']:10,.0f} tokens/s")
    print(
        f"reference: sampling alone            {sample_alone:8.3f} s   generation / sampling alone = "
        f"{med['generation'] / sample_alone:.2f}"
    )
    print(
        f"reference: SFT train step, same rows {sft_time:8.3f} s   RLOO update / SFT step = {med['update'] / sft_time:.2f}, "
        f"whole RLOO step / SFT step = {total / sft_time:.2f}"
    )
    print("\n".join(memory))


if __name__ == "__main__":
    main()
