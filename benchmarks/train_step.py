"""Train-step throughput of the benchmark model beside a plain-JAX reference and transformers, in one run.

    python benchmarks/train_step.py                      # fp32, batch 8 x 512: aya_jax, plain JAX, torch
    python benchmarks/train_step.py --dtype bfloat16     # + torch under autocast(bfloat16)
    python benchmarks/train_step.py --steps 3 --variants all --no-torch   # where aya_jax's step spends time

Model (fixed): Cohere decoder, hidden 512, ffn 1536, 8 layers, 8 heads, vocab 32000; one AdamW step on a
batch of 8 x 512 tokens. Implementations, timed step by step in turn (interleaved, so load from elsewhere hits
all alike):

* aya_jax: the trainer's own step (`aya_jax.training.sft.make_train_step`: fused chunked cross-entropy,
  block-causal attention, nn.scan over layers, AdamW with clipping), compute dtype `--dtype`, fp32 params;
* plain JAX: the same model and math written here as plain functions over a params dict (no flax, no aya_jax
  model code): parallel residual x + Attn(LN(x)) + SwiGLU(LN(x)), mean-centred fp32 LayerNorm, GQA einsum
  attention with a full causal mask, interleaved RoPE, tied embeddings times logit_scale, and a plain
  full-logits cross-entropy; a Python loop over the layers. Same optimizer object (`optimizers.make_optimizer`
  on the base config, as the trainer), same parameters (aya_jax's init mapped onto the dict), same batch. In
  bfloat16 it casts the matrices to bf16 for the matmuls and keeps norms, softmax and loss in fp32, as aya_jax
  does. Before timing, the two initial losses are printed and (fp32) must agree to 1e-4 relative;
* transformers' CohereForCausalLM in torch fp32 and, with `--dtype bfloat16`, under
  `torch.autocast("cpu", dtype=torch.bfloat16)` (own random init, torch AdamW; when installed:
  `pip install -e '.[hf]'`).

`--variants` adds aya_jax steps with one piece swapped, each compiled under a temporary patch of the library
(restored right after tracing) to see where the trainer's step loses time against the plain one:

    trainer             the trainer's step as it is (always run)
    attn-full           layers.CAUSAL_BLOCK = 0: attention over the full [len, len] square, not 128-query blocks
    ce-full             losses.linear_cross_entropy -> full [tokens, vocab] logits + losses.cross_entropy
    unrolled            scan_layers=False (a Python loop over the layers, as the plain step)
    plain-like          attn-full + ce-full + unrolled
    scan-unroll         config.model.scan_unroll = num_layers: stacked params as the trainer's, no loop
    bf16-result         layers.einsum -> jnp.einsum: bf16 x bf16 dots with a bf16 result, which XLA:CPU runs
                        off its fast bf16 path (the library accumulates them in fp32 on CPU instead)
    all                 every variant above

Prints (after `describe()`'s machine line) tokens/s of the median and of the fastest step, model FLOP/s, MFU
against the matmul peak measured in the same run (`metrics.peak_flops_per_device`; in bf16 on CPU also the rate
of XLA:CPU's fast bf16 dot, which that peak does not measure), and the ratios to the plain step and to
transformers. Shared machines are noisy: compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCHMARKS))
sys.path.insert(0, BENCHMARKS)

from machine import describe  # noqa: E402

from aya_jax import losses, metrics, optimizers  # noqa: E402
from aya_jax.models import cohere, layers  # noqa: E402
from aya_jax.training import sft as sft_objective  # noqa: E402
from aya_jax.training import state as ts  # noqa: E402
from configs import common  # noqa: E402

BATCH, SEQ = 8, 512
F32 = jnp.float32


def make_batch(cfg: cohere.CohereConfig, batch: int = BATCH, seq: int = SEQ) -> dict[str, np.ndarray]:
    """One packed-layout batch of random tokens: every row one full sequence, loss on every token."""
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (batch, seq + 1), 0, cfg.vocab_size))
    return {
        "decoder_input_tokens": tokens[:, :-1],
        "decoder_target_tokens": tokens[:, 1:],
        "decoder_loss_weights": np.ones((batch, seq), np.float32),
        "decoder_segment_ids": np.ones((batch, seq), np.int32),
        "decoder_positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
    }


def make_tx():
    """The trainer's optimizer: AdamW + global-norm clipping from the base config (1000 scheduled steps)."""
    tx, schedule = optimizers.make_optimizer(common.base_config().optimizer, 1000)
    return tx, schedule


class Stepper:
    """A compiled step over a state it owns (donated each call): `run()` -> seconds of one step."""

    def __init__(self, step: Callable, state: Any, batch: Any, loss_key: str = "loss"):
        self.step, self.state, self.batch, self.loss_key = step, state, batch, loss_key
        self.last_loss = float("nan")

    def __call__(self) -> float:
        t0 = time.perf_counter()
        self.state, m = self.step(self.state, self.batch)
        jax.block_until_ready(m)
        dt = time.perf_counter() - t0
        self.last_loss = float(m[self.loss_key])
        return dt


# ------------------------------------------------------------------------------------------------------------
# aya_jax: the trainer's step, and variants of it with one library piece swapped
# ------------------------------------------------------------------------------------------------------------


def full_logits_cross_entropy(
    hidden, kernel, targets, weights, *, logit_scale=1.0, z_loss=0.0, chunk_size=None
) -> dict[str, jax.Array]:
    """Stand-in for `losses.linear_cross_entropy` (variant ce-full): full [..., vocab] fp32 logits, then
    `losses.cross_entropy`; returns the same token sums."""
    del chunk_size
    logits = jnp.einsum("...e,ve->...v", hidden, kernel.astype(hidden.dtype), preferred_element_type=F32)
    _, aux = losses.cross_entropy(logits * logit_scale, targets, weights, z_loss)
    return aux


_LINEAR_CE = losses.linear_cross_entropy  # the library's own, restored after every patch
_LAYERS_EINSUM = layers.einsum


@dataclasses.dataclass(frozen=True)
class Variant:
    causal_block: int | None = None  # None: the library's layers.CAUSAL_BLOCK
    full_ce: bool = False
    unrolled: bool = False  # scan_layers=False: separate per-layer params, a Python loop
    scan_unroll: bool = False  # config.model.scan_unroll = num_layers: the stacked params, straight-line code
    bf16_result: bool = False  # the layers' bf16 dots with a bf16 result (plain jnp.einsum)


VARIANTS: dict[str, Variant] = {
    "trainer": Variant(),
    "attn-full": Variant(causal_block=0),
    "ce-full": Variant(full_ce=True),
    "unrolled": Variant(unrolled=True),
    "plain-like": Variant(causal_block=0, full_ce=True, unrolled=True),
    "scan-unroll": Variant(scan_unroll=True),
    "bf16-result": Variant(bf16_result=True),
}


@contextlib.contextmanager
def patched(variant: Variant, num_layers: int) -> Iterator[None]:
    """The library as `variant` wants it, while a step is traced; restored afterwards."""
    if not hasattr(layers, "CAUSAL_BLOCK") or not hasattr(losses, "linear_cross_entropy"):
        raise RuntimeError("aya_jax changed: layers.CAUSAL_BLOCK / losses.linear_cross_entropy are gone")
    saved = layers.CAUSAL_BLOCK
    try:
        if variant.causal_block is not None:
            layers.CAUSAL_BLOCK = variant.causal_block
        if variant.full_ce:
            losses.linear_cross_entropy = full_logits_cross_entropy
        if variant.bf16_result:
            layers.einsum = jnp.einsum
        yield
    finally:
        layers.CAUSAL_BLOCK = saved
        losses.linear_cross_entropy = _LINEAR_CE
        layers.einsum = _LAYERS_EINSUM


def make_model(
    cfg: cohere.CohereConfig, dtype: str, remat: str = "none", scan: bool = True, scan_unroll: int = 1
) -> cohere.CohereLM:
    """As the trainer builds it: compute dtype `dtype`, fp32 parameters."""
    return cohere.CohereLM(
        cfg, dtype=jnp.dtype(dtype), param_dtype=F32, remat=remat, scan_layers=scan, scan_unroll=scan_unroll
    )


def make_jax_step(
    cfg: cohere.CohereConfig,
    dtype: str,
    remat: str,
    scan: bool,
    batch: dict[str, np.ndarray] | None = None,
    variant: Variant = VARIANTS["trainer"],
) -> tuple[Stepper, cohere.CohereLM]:
    """The trainer's own step (fused chunked cross-entropy, AdamW, clipping) on one device, compiled (under
    `variant`'s patch) and run twice to warm up. Returns (the stepper, its model)."""
    batch = make_batch(cfg) if batch is None else batch
    unroll = cfg.num_layers if variant.scan_unroll else 1
    model = make_model(cfg, dtype, remat, scan and not variant.unrolled, unroll)
    seq = batch["decoder_input_tokens"].shape[1]
    tx, schedule = make_tx()
    state = jax.jit(ts.make_init_fn(model, tx, seq))(jax.random.PRNGKey(0))
    batch = jax.device_put(batch)
    step = jax.jit(sft_objective.make_train_step(model, tx, schedule, 0.0, 1), donate_argnums=(0,))
    with patched(variant, cfg.num_layers):
        compiled = step.lower(state, batch).compile()
    run = Stepper(compiled, state, batch)
    run(), run()  # warm caches
    return run, model


def jax_initial_loss(model: cohere.CohereLM, params: Any, batch: dict[str, np.ndarray]) -> float:
    """The trainer's loss (token-weighted mean nll, fused chunked cross-entropy) of `params` on `batch`."""

    def loss(p, b):
        _, sums = sft_objective.forward_loss(model, p, b)
        return sums["nll_sum"] / jnp.maximum(sums["weight_sum"], 1.0)

    return float(jax.jit(loss)(params, batch))


# ------------------------------------------------------------------------------------------------------------
# Plain JAX: the same model as functions over a params dict
# ------------------------------------------------------------------------------------------------------------


def plain_params_from_aya(params: Any, cfg: cohere.CohereConfig) -> dict[str, Any]:
    """aya_jax's param tree (scanned or unrolled layers) -> the plain dict, matrices flattened to 2-D:
    {"embedding": [V, E], "final_norm": {"scale": [E]}, "layers": [{"scale", "wq", "wk", "wv", "wo",
    "w_gate", "w_up", "w_down"}, ...]}. Norm scales keep the key "scale" so the optimizer's weight-decay mask
    treats them as the trainer's (not decayed). Fresh buffers (jitted), so the source may be donated later."""
    e, d = cfg.hidden_size, cfg.dim_per_head
    h, k = cfg.num_heads, cfg.num_kv_heads

    def convert(params):
        if "layers" in params:
            per_layer = [jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(cfg.num_layers)]
        else:
            per_layer = [params[f"layers_{i}"] for i in range(cfg.num_layers)]
        return {
            "embedding": params["embedding"],
            "final_norm": {"scale": params["final_norm"]["scale"]},
            "layers": [
                {
                    "scale": p["input_norm"]["scale"],
                    "wq": p["attn"]["q_proj"].reshape(e, h * d),
                    "wk": p["attn"]["k_proj"].reshape(e, k * d),
                    "wv": p["attn"]["v_proj"].reshape(e, k * d),
                    "wo": p["attn"]["o_proj"].reshape(h * d, e),
                    "w_gate": p["mlp"]["gate_proj"],
                    "w_up": p["mlp"]["up_proj"],
                    "w_down": p["mlp"]["down_proj"],
                }
                for p in per_layer
            ],
        }

    return jax.jit(convert)(params)


def plain_layer_norm(x, scale, eps):
    """Mean-centred LayerNorm, no bias, in fp32; back to x's dtype."""
    xf = x.astype(F32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps) * scale).astype(x.dtype)


def plain_rope(x, cos, sin):
    """Interleaved (GPT-J) RoPE on x [b, t, heads, d]: the pair (x[2i], x[2i+1]) rotates by angle i; fp32."""
    b, t, n, d = x.shape
    xf = x.astype(F32).reshape(b, t, n, d // 2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return jnp.stack([x0 * c - x1 * s, x1 * c + x0 * s], axis=-1).reshape(x.shape).astype(x.dtype)


def plain_loss(params, tokens, targets, weights, cfg: cohere.CohereConfig, dtype) -> jax.Array:
    """Mean next-token cross-entropy of the Cohere decoder over weighted tokens (params fp32, matmuls in
    `dtype`)."""
    b, t = tokens.shape
    d = cfg.dim_per_head
    nh, nk = cfg.num_heads, cfg.num_kv_heads
    g = nh // nk
    embedding = params["embedding"].astype(dtype)
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=F32) / d))
    angles = jnp.arange(t, dtype=F32)[:, None] * inv_freq  # [t, d/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    causal = jnp.tril(jnp.ones((t, t), bool))
    neg = jnp.finfo(F32).min

    x = embedding[tokens]  # [b, t, e]
    for p in params["layers"]:
        w = {name: p[name].astype(dtype) for name in p if name != "scale"}
        hn = plain_layer_norm(x, p["scale"], cfg.layer_norm_eps)
        q = plain_rope((hn @ w["wq"]).reshape(b, t, nh, d), cos, sin).reshape(b, t, nk, g, d)
        k = plain_rope((hn @ w["wk"]).reshape(b, t, nk, d), cos, sin)
        v = (hn @ w["wv"]).reshape(b, t, nk, d)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=F32) * d**-0.5
        probs = jax.nn.softmax(jnp.where(causal, scores, neg), axis=-1).astype(dtype)
        attn = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, t, nh * d) @ w["wo"]
        mlp = (jax.nn.silu(hn @ w["w_gate"]) * (hn @ w["w_up"])) @ w["w_down"]
        x = x + attn + mlp
    hn = plain_layer_norm(x, params["final_norm"]["scale"], cfg.layer_norm_eps)
    logits = jnp.einsum("bte,ve->btv", hn, embedding, preferred_element_type=F32) * cfg.logit_scale
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - target_logits
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_plain_step(
    cfg: cohere.CohereConfig, dtype: str, params: Any, batch: dict[str, np.ndarray]
) -> Stepper:
    """value_and_grad of `plain_loss`, then the trainer's optimizer (same global norm, same non-finite guard
    as TrainState.apply_gradients), jitted with the state donated; warmed up twice."""
    tx, _ = make_tx()
    dt = jnp.dtype(dtype)

    def step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(plain_loss)(
            params,
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            batch["decoder_loss_weights"],
            cfg,
            dt,
        )
        grad_norm = optax.global_norm(grads)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        return (keep(new_params, params), keep(new_opt_state, opt_state)), {
            "loss": loss,
            "grad_norm": grad_norm,
        }

    batch = jax.device_put(batch)
    state = (params, jax.jit(tx.init)(params))
    run = Stepper(jax.jit(step, donate_argnums=(0,)), state, batch)
    run(), run()
    return run


def plain_initial_loss(cfg, dtype: str, params, batch) -> float:
    fn = jax.jit(lambda p, b: plain_loss(p, b["decoder_input_tokens"], b["decoder_target_tokens"],
                                         b["decoder_loss_weights"], cfg, jnp.dtype(dtype)))  # fmt: skip
    return float(fn(params, batch))


# ------------------------------------------------------------------------------------------------------------
# transformers
# ------------------------------------------------------------------------------------------------------------


def make_torch_step(cfg: cohere.CohereConfig, autocast_bf16: bool = False):
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
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast_bf16 else contextlib.nullcontext
    )

    def step():
        with autocast():
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


# ------------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--remat", default="none", choices=["none", "full", "dots_saveable"])
    ap.add_argument("--no-scan", action="store_true", help="unroll the layers instead of nn.scan")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-JAX reference")
    ap.add_argument(
        "--variants",
        default="",
        help=f"comma-separated aya_jax variants besides the trainer's step: {', '.join(list(VARIANTS)[1:])}, all",
    )
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    if "all" in names:
        names = list(VARIANTS)[1:]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)}, all)")
    names = ["trainer"] + [v for v in dict.fromkeys(names) if v != "trainer"]

    print(describe())
    cfg = cohere.PRESETS["cohere-bench"]
    flops_tok = cohere.train_flops_per_token(cfg, SEQ)
    print(
        f"model cohere-bench {cohere.param_count(cfg) / 1e6:.1f} M params; batch {BATCH} x {SEQ}; "
        f"{flops_tok / 1e6:.1f} MFLOP/token; compute {args.dtype}, fp32 params"
    )
    peak, source = metrics.peak_flops_per_device(args.dtype)
    print(f"peak matmul: {peak / 1e9:.1f} GFLOP/s ({source})")
    batch = make_batch(cfg)

    runners: list[tuple[str, Callable[[], float]]] = []
    steppers: dict[str, Stepper] = {}
    scan = not args.no_scan
    for name in names:
        t0 = time.perf_counter()
        run, model = make_jax_step(cfg, args.dtype, args.remat, scan, batch, VARIANTS[name])
        label = f"aya_jax {name} ({args.dtype}, remat={args.remat}, scan={model.scan_layers})"
        print(f"compiled {label} in {time.perf_counter() - t0:.1f} s", flush=True)
        runners.append((label, run))
        steppers[name] = run
        if name == "trainer":
            trainer_model = model
    if not args.no_plain:
        # The same initial params as the trainer's step (its own init, mapped): the losses must agree.
        init = jax.jit(ts.make_init_fn(trainer_model, make_tx()[0], SEQ))(jax.random.PRNGKey(0))
        plain = plain_params_from_aya(init.params, cfg)
        aya_loss = jax_initial_loss(trainer_model, init.params, batch)
        ref_loss = plain_initial_loss(cfg, args.dtype, plain, batch)
        rel = abs(aya_loss - ref_loss) / abs(ref_loss)
        print(
            f"initial loss: aya_jax {aya_loss:.6f}, plain JAX {ref_loss:.6f} (relative difference {rel:.2e})"
        )
        if args.dtype == "float32" and rel > 1e-4:
            raise SystemExit(
                f"plain JAX and aya_jax disagree on the initial loss ({rel:.2e} > 1e-4 relative)"
            )
        del init
        t0 = time.perf_counter()
        plain_run = make_plain_step(cfg, args.dtype, plain, batch)
        print(f"compiled plain JAX in {time.perf_counter() - t0:.1f} s", flush=True)
        runners.append((f"plain JAX ({args.dtype}, unrolled, full attention, full CE)", plain_run))
    torch_labels = []
    if not args.no_torch:
        torch_modes = [False] + ([True] if args.dtype == "bfloat16" else [])
        for bf16 in torch_modes:
            torch_run = make_torch_step(cfg, autocast_bf16=bf16)
            if torch_run is None:
                break
            label = "transformers CohereForCausalLM (torch " + ("autocast bf16)" if bf16 else "fp32)")
            runners.append((label, torch_run))
            torch_labels.append(label)

    # Interleave the implementations step by step so that load from elsewhere hits all alike.
    timings: dict[str, list[float]] = {name: [] for name, _ in runners}
    for _ in range(args.steps):
        for name, run in runners:
            timings[name].append(run())
    peak_after, _ = metrics.peak_flops_per_device(args.dtype)  # cached: same figure

    tps = {name: BATCH * SEQ / statistics.median(times) for name, times in timings.items()}
    best = {name: BATCH * SEQ / min(times) for name, times in timings.items()}
    plain_label = None if args.no_plain else runners[len(names)][0]
    width = max(len(name) for name in timings)
    print(
        f"\n{'implementation':{width}s} {'step s':>8s} {'tokens/s':>10s} {'GFLOP/s':>9s} {'MFU':>6s} "
        f"{'spread':>6s} {'vs plain':>8s} {'best tok/s':>10s} {'vs plain':>8s}"
    )
    for name, times in timings.items():
        vs_plain, vs_plain_best = (
            (f"{tps[name] / tps[plain_label]:8.2f}", f"{best[name] / best[plain_label]:8.2f}")
            if plain_label
            else (f"{'-':>8s}", f"{'-':>8s}")
        )
        print(
            f"{name:{width}s} {statistics.median(times):8.3f} {tps[name]:10.1f} "
            f"{tps[name] * flops_tok / 1e9:9.1f} {100 * tps[name] * flops_tok / peak_after:5.1f}% "
            f"{max(times) / min(times):6.2f} {vs_plain} {best[name]:10.1f} {vs_plain_best}"
        )
    aya = runners[0][0]
    print(
        "\n(step s, tokens/s: median step; best: fastest step, less hit by bursts of load from elsewhere; spread:"
        " max/min step time; vs plain: over the plain-JAX step's, same run)"
    )

    def ratio(label: str) -> str:
        return f"{tps[aya] / tps[label]:.2f}x median, {best[aya] / best[label]:.2f}x best (same run)"

    if plain_label:
        print(f"aya_jax / plain JAX tokens/s ratio: {ratio(plain_label)}")
        last = {name: steppers[name].last_loss for name in names}
        print(
            f"loss after {args.steps + 2} steps: plain JAX {plain_run.last_loss:.6f}; "
            + ", ".join(f"aya_jax {n} {v:.6f}" for n, v in last.items())
        )
    for label in torch_labels:
        print(f"aya_jax / {label} tokens/s ratio: {ratio(label)}")


if __name__ == "__main__":
    main()
