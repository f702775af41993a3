"""The SFT objective: next-token cross-entropy on the answer tokens of packed rows.

    loss = Σ_tokens w_t · (-log p(y_t | y_<t, x)) / Σ_tokens w_t        (w_t = 1 on answer tokens, 0 on the prompt)
           [+ z_loss · Σ_t w_t · log² Z_t / Σ_t w_t]                    (optional; PaLM's z-loss)

averaged over the weighted tokens of the whole global batch: with gradient accumulation the token sums of all
microbatches are added before dividing (training/accumulate.py), so accumulating A microbatches equals one big
batch. The output projection is fused into a chunked cross-entropy (`losses.linear_cross_entropy`), so the
[batch, len, vocab] logits never exist — needed at Aya's 256k vocabulary. Both model families train through the
same functions: the family record (models/families.py) gives the forward pass to hidden states, the output
kernel and its scale.

`make_eval_step` sums the same loss per language id (eval loss per language, also used by the merge job's
before/after report). `Sft` is the objective in the one loop (training/loop.py): a packed batch per step,
evaluation every `config.train.eval_every` steps on `config.train.eval_batches` held-out batches, tokens/s and
MFU (model FLOPs: 6 x matmul parameters + attention, PaLM-style), the loss curve and per-language eval loss.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from aya_jax import losses, plots, sampling
from aya_jax.data import languages
from aya_jax.models import families
from aya_jax.training import accumulate, loop
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

_SUMS = ("loss_sum", "nll_sum", "z_loss_sum", "correct_sum", "weight_sum")


def forward_loss(model: nn.Module, params: Any, batch: dict[str, jax.Array], z_loss: float = 0.0):
    """(token-summed loss, token sums: loss_sum, nll_sum, z_loss_sum, correct_sum, weight_sum)."""
    family = families.family_of(model)
    out = losses.linear_cross_entropy(
        family.hidden_states(model, params, batch),
        family.output_kernel(params).astype(model.dtype),
        batch["decoder_target_tokens"],
        batch["decoder_loss_weights"],
        logit_scale=family.logit_scale(model.cfg),
        z_loss=z_loss,
    )
    return out["loss_sum"], {k: out[k] for k in _SUMS}


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation, schedule: Any, z_loss: float, accum: int
):
    """(state, batch) -> (state, metrics): gradients of the token-summed loss, divided by the token count."""
    grad_fn = accumulate.accumulate(
        jax.value_and_grad(lambda p, b: forward_loss(model, p, b, z_loss), has_aux=True), accum
    )

    def step(state: ts.TrainState, batch: dict[str, jax.Array]):
        (_, sums), grads = grad_fn(state.params, batch)
        denom = jnp.maximum(sums["weight_sum"], 1.0)
        new_state, grad_norm = state.apply_gradients(jax.tree.map(lambda g: g / denom, grads), tx)
        return new_state, {
            "loss": sums["nll_sum"] / denom,
            "z_loss": sums["z_loss_sum"] / denom,
            "accuracy": sums["correct_sum"] / denom,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step),
            "target_tokens": sums["weight_sum"],
        }

    return step


def make_eval_step(model: nn.Module, num_languages: int):
    """(params, batch) -> token sums overall and per language id (for per-language loss)."""

    def step(params: Any, batch: dict[str, jax.Array]):
        w = batch["decoder_loss_weights"].astype(jnp.float32)
        family = families.family_of(model)
        out = losses.linear_cross_entropy(
            family.hidden_states(model, params, batch),
            family.output_kernel(params).astype(model.dtype),
            batch["decoder_target_tokens"],
            w,
            logit_scale=family.logit_scale(model.cfg),
        )
        lang_loss, lang_weight = losses.per_group_sums(
            out["nll"], w, batch["decoder_language_ids"], num_languages
        )
        return {
            "nll_sum": out["nll_sum"],
            "correct_sum": out["correct_sum"],
            "weight_sum": out["weight_sum"],
            "lang_nll_sum": lang_loss,
            "lang_weight_sum": lang_weight,
        }

    return step


# ============================================================================================================
# The objective in the loop
# ============================================================================================================


SAMPLE_NEW_TOKENS = 48  # the summary's greedy replies: long enough to read, short enough for a CPU run's end


def greedy_replies(
    run: loop.Run,
    model: nn.Module,
    params: Any,
    *,
    codec: Any,
    prompts: Any,
    count: int,
    eos_ids: tuple[int, ...],
    encoder_eos: int | None = None,
) -> list[tuple[str, str, str]]:
    """(language, prompt, greedy reply) for `count` held-out prompts (a PromptSet), each in another language (a
    fixed choice: the same prompts after every run). `encoder_eos` ends an encoder-decoder's prompts, as its
    training rows' encoder inputs end."""
    chosen, languages_seen = [], set()
    for i in prompts.held_out(len(prompts), seed=0, multiple=1):
        language = prompts.infos[int(i)].language_code
        if language not in languages_seen:
            chosen.append(int(i))
            languages_seen.add(language)
        if len(chosen) == count:
            break
    sampler = sampling.Sampler(
        model, params, mesh=run.mesh, rules=run.rules, pad_id=codec.pad_id, prompt_bucket=16
    )
    params_ = sampling.SamplingParams(max_new_tokens=SAMPLE_NEW_TOKENS, eos_ids=eos_ids)
    suffix = [encoder_eos] if encoder_eos is not None else []
    out = sampler.generate([prompts.tokens[i] + suffix for i in chosen], params_)
    replies = []
    for row, i in enumerate(chosen):
        tokens = [int(t) for t in out.tokens[row, : int(out.lengths[row])] if int(t) not in eos_ids]
        info = prompts.infos[i]
        replies.append((info.language_code, info.text, codec.decode(tokens)))
    return replies


class Sft(loop.Objective):
    """SFT in the one loop: a packed batch per step; per-language held-out loss every eval_every steps; at the
    end, the trained model's greedy replies to a few held-out prompts (`replies(params)`)."""

    title = "SFT"

    def __init__(self, run: loop.Run, *, train_step, eval_step, train_iter, eval_batches, identity: dict[str, Any],
                 throughput: loop.Throughput, plot_title: str, replies=None):  # fmt: skip
        self.run, self.config = run, run.config
        self.total = int(self.config.train.steps)
        self.train_step, self.eval_step = train_step, eval_step
        self.train_iter, self.eval_batches = train_iter, eval_batches  # eval_batches(): host batches, cached
        self.identity, self.throughput, self.plot_title = identity, throughput, plot_title
        self.replies = replies

    def step(self, state, iteration):
        state, m = self.train_step(state, self.run.global_batch(next(self.train_iter)))
        return state, loop.Step({**m, "data_position": self.train_iter.position})

    def should_evaluate(self, iteration, config):
        return int(config.train.eval_batches) > 0 and iteration % int(config.train.eval_every) == 0

    def evaluate(self, state, iteration):
        if int(self.config.train.eval_batches) <= 0:
            return None
        sums = None
        for host_batch in self.eval_batches():
            out = self.eval_step(state.params, self.run.global_batch(host_batch))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        sums = self.run.to_host(sums)
        denom = max(float(sums["weight_sum"]), 1.0)
        result = {"loss": float(sums["nll_sum"]) / denom, "accuracy": float(sums["correct_sum"]) / denom}
        for lid in np.nonzero(sums["lang_weight_sum"])[0]:
            code = languages.language_code(int(lid))
            result[f"loss/{code}"] = float(sums["lang_nll_sum"][lid] / sums["lang_weight_sum"][lid])
        highest = sorted(((v, k[5:]) for k, v in result.items() if k.startswith("loss/")), reverse=True)[:3]
        log.info(
            "eval step %d: loss %.4f acc %.3f (%d languages; highest: %s)", iteration, result["loss"],
            result["accuracy"], len([k for k in result if k.startswith("loss/")]),
            ", ".join(f"{c} {v:.3f}" for v, c in highest),
        )  # fmt: skip
        return result

    def checkpoint_state(self, iteration):
        return {**self.identity, "process_count": jax.process_count(), "position": self.train_iter.position}

    def postfix(self, m):
        return {"loss": f"{m['loss']:.3f}", "tok_s": f"{m.get('tokens_per_second', 0):.0f}"}

    def finish(self, run, state, summary):
        if self.replies is not None and summary.end_step > summary.start_step:
            replies = self.replies(state.params)
            summary.lines.append("  greedy replies to held-out prompts:")
            for language, prompt, reply in replies:
                log.info("held-out prompt (%s): %s\n  -> %s", language, prompt, reply or "<empty reply>")
                summary.lines.append(f"    [{language}] {_clip(prompt)} -> {_clip(reply) or '<empty reply>'}")
            summary.results["replies"] = replies
        if summary.first:
            summary.lines.append(f"  loss          {summary.first['loss']:.4f} -> {summary.last['loss']:.4f}")
        if summary.tokens_per_second:
            summary.lines.append(
                f"  throughput    {summary.tokens_per_second:,.0f} tokens/s   MFU {100 * (summary.mfu or 0):.1f}%"
            )
        jsonl = run.writer.jsonl_path
        if run.is_writer and bool(self.config.train.plot) and jsonl.exists():
            out = run.workdir.absolute()
            summary.outputs["loss curve"] = str(
                plots.loss_curve(jsonl, out / "loss_curve.png", self.plot_title)
            )
            per_language = plots.eval_loss_by_language(jsonl, out / "eval_loss_by_language.png")
            if per_language:
                summary.outputs["per language"] = str(per_language)


def _clip(text: str, width: int = 50) -> str:
    """One line of at most `width` characters, for the summary box."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
