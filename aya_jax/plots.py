"""The PNG plots of training runs, drawn from their metrics.jsonl (one object per line: `step`, `kind` —
"train", "eval", "online" — and the metrics) or from one evaluation's results. matplotlib with the Agg
backend, so no display is needed; only process 0 draws."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, no display

import matplotlib.pyplot as plt  # noqa: E402

from aya_jax import metrics  # noqa: E402

Rows = Sequence[dict[str, Any]]


def series(rows: Rows, kind: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in the rows of `kind`, by step (a step logged twice keeps its last value)."""
    points = sorted({r["step"]: r[key] for r in rows if r.get("kind") == kind and key in r}.items())
    return [p[0] for p in points], [p[1] for p in points]


def _save(fig: Any, png_path: str | os.PathLike) -> pathlib.Path:
    fig.tight_layout()
    png_path = pathlib.Path(png_path)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def loss_curve(jsonl_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "") -> pathlib.Path:
    """Train loss per step, and eval loss where logged."""
    rows = metrics.read_jsonl(jsonl_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for kind, style, label in (("train", "-", "train loss"), ("eval", "o-", "eval loss")):
        steps, values = series(rows, kind, "loss")
        if steps:
            ax.plot(steps, values, style, label=label, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, png_path)


def language_bars(
    values: Mapping[str, float],
    png_path: str | os.PathLike,
    *,
    overall: float,
    xlabel: str,
    title: str,
    counts: Mapping[str, float] | None = None,
    chance: float | None = None,
    xlim: tuple[float, float] | None = None,
) -> pathlib.Path:
    """One horizontal bar per language (ISO code -> value), the overall value marked; with `counts`, ordered
    by count (shown in brackets), else by value, largest at the top."""
    if counts is not None:
        order = sorted(values, key=lambda c: (-counts[c], c))
        labels = [f"{c} ({int(counts[c])})" for c in order]
    else:
        order = sorted(values, key=lambda c: -values[c])
        labels = list(order)
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.16 * len(order)), dpi=110)
    ax.barh(
        range(len(order)), [values[c] for c in order], color="tab:green" if chance is not None else "tab:blue"
    )
    if chance is not None:
        ax.axvline(chance, color="gray", lw=1, ls="--", label=f"chance {chance}")
    ax.axvline(overall, color="tab:orange", lw=1.2, label=f"all languages {overall:.3f}")
    ax.set_yticks(range(len(order)), labels, fontsize=7)
    ax.set_ylim(len(order) - 0.5, -0.5)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, png_path)


def eval_loss_by_language(jsonl_path: str | os.PathLike, png_path: str | os.PathLike) -> pathlib.Path | None:
    """The latest eval loss per language (`loss/<code>` keys); None if no evaluation logged any."""
    evals = [r for r in metrics.read_jsonl(jsonl_path) if r.get("kind") == "eval"]
    per_language = {
        k[len("loss/") :]: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("loss/")
    }
    if not per_language:
        return None
    last = evals[-1]
    return language_bars(
        per_language, png_path, overall=last["loss"], xlabel="eval cross-entropy (nats/token)",
        title=f"eval loss per language at step {last['step']}",
    )  # fmt: skip


def reward_curves(jsonl_path: str | os.PathLike, png_path: str | os.PathLike, preset: str) -> pathlib.Path:
    """The Bradley–Terry loss and the pairwise accuracy, train (per logged step) and held-out (per evaluation)."""
    rows = metrics.read_jsonl(jsonl_path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for ax, key, label in (
        (axes[0], "loss", "Bradley–Terry loss -log σ(r_c - r_r)"),
        (axes[1], "accuracy", "pairwise accuracy"),
    ):
        for kind, style, name in (("train", "-", "train"), ("eval", "o-", "held-out")):
            steps, values = series(rows, kind, key)
            if steps:
                ax.plot(steps, values, style, lw=1.2, label=name)
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].axhline(0.5, color="gray", lw=1, ls="--")
    fig.suptitle(f"reward model ({preset})", fontsize=10)
    return _save(fig, png_path)


def dpo_progress(
    jsonl_path: str | os.PathLike, png_path: str | os.PathLike, verifiable_name: str, labels: Sequence[str]
) -> pathlib.Path:
    """Four panels: the held-out mean RM score (and verifiable reward) per evaluation point (`labels`); DPO
    loss and implicit-reward accuracy per step; chosen / rejected log-probs and the margin per step; KL to the
    SFT policy and completion length per evaluation point."""
    rows = metrics.read_jsonl(jsonl_path)
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=110)
    x = range(len(evals))

    ax = axes[0, 0]
    ax.plot(x, [r["score"] for r in evals], "o-", color="tab:blue", label="mean RM score")
    ax.set_xticks(list(x), list(labels), fontsize=8)
    ax.set_ylabel("reward-model score", color="tab:blue")
    ax.set_title("held-out prompts: policy samples", fontsize=9)
    if evals and "verifiable" in evals[0]:
        twin = ax.twinx()
        twin.plot(x, [r.get("verifiable", float("nan")) for r in evals], "s--", color="tab:green")
        twin.set_ylabel(f"verifiable reward ({verifiable_name})", color="tab:green")

    ax = axes[0, 1]
    ax.plot(steps, [r["loss"] for r in train], lw=1.0, label="DPO loss")
    ax.plot(steps, [r["rewards/accuracy"] for r in train], lw=1.0, label="implicit reward accuracy")
    ax.set_xlabel("optimiser step")
    ax.set_title("training pairs", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    ax.plot(steps, [r["logps/chosen"] for r in train], lw=1.0, label="log π(chosen)")
    ax.plot(steps, [r["logps/rejected"] for r in train], lw=1.0, label="log π(rejected)")
    twin = ax.twinx()
    twin.plot(steps, [r["rewards/margin"] for r in train], lw=1.0, color="tab:red", label="margin")
    twin.set_ylabel("implicit reward margin", color="tab:red")
    ax.set_xlabel("optimiser step")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    ax.plot(x, [r["kl"] for r in evals], "o-", label="KL(π || π_SFT) per completion")
    ax.plot(x, [r["completion_length"] for r in evals], "s--", label="completion length")
    ax.set_xticks(list(x), list(labels), fontsize=8)
    ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    return _save(fig, png_path)


def rloo_curves(jsonl_path: str | os.PathLike, png_path: str | os.PathLike, reward_name: str) -> pathlib.Path:
    """Reward (train, held-out sampled and greedy), KL, entropy and completion length per iteration."""
    rows = metrics.read_jsonl(jsonl_path)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=110)
    ax = axes[0, 0]
    ax.plot(*series(rows, "train", "reward"), label="train (sampled)", lw=1.0, alpha=0.7)
    ax.plot(*series(rows, "train", "reward_minus_kl"), label="train minus β·KL", lw=1.0, alpha=0.7)
    ax.plot(*series(rows, "eval", "reward"), "o-", label="held-out (sampled)", lw=1.5)
    ax.plot(*series(rows, "eval", "reward_greedy"), "s--", label="held-out (greedy)", lw=1.2)
    ax.set_title(f"reward: {reward_name}", fontsize=9)
    ax.legend(fontsize=7)
    for ax, key, title in (
        (axes[0, 1], "kl", "KL(π || π_ref) per completion (nats)"),
        (axes[1, 0], "entropy", "policy entropy (nats / token)"),
        (axes[1, 1], "completion_length", "completion length (tokens)"),
    ):
        ax.plot(*series(rows, "train", key), lw=1.2)
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xlabel("RLOO step")
        ax.grid(alpha=0.3)
    return _save(fig, png_path)
