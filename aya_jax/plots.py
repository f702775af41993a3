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
import numpy as np  # noqa: E402

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


# ------------------------------------------------------------------------------------------------------------
# Evaluations (aya_jax/evaluation/): one section per evaluator
# ------------------------------------------------------------------------------------------------------------

# --- Global-MMLU ---


def global_mmlu_cs_ca(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path:
    """Culturally sensitive (CS) vs agnostic (CA) accuracy per language from `global_mmlu.evaluate`'s
    results: grouped bars with their bootstrap intervals as error bars; a language without items of a kind
    gets no bar."""
    per_language = results["per_language"]
    order = list(per_language)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.35 * len(order)), 4), dpi=110)
    width = 0.4
    for k, (kind, color) in enumerate((("CS", "tab:red"), ("CA", "tab:blue"))):
        figures = [per_language[lang][kind] for lang in order]
        # NaN / None (no items of this kind) draw nothing rather than a zero bar that reads as 0% accuracy
        mean = [f["mean"] if f.get("n") and f["mean"] is not None else float("nan") for f in figures]
        low = [max(0.0, m - f["low"]) if m == m else 0.0 for m, f in zip(mean, figures, strict=True)]
        high = [max(0.0, f["high"] - m) if m == m else 0.0 for m, f in zip(mean, figures, strict=True)]
        macro = results["overall"]["macro"][kind]
        label = kind if not macro.get("n") else f"{kind} (macro {macro['mean']:.3f})"
        x = [i + (k - 0.5) * width for i in range(len(order))]
        ax.bar(x, mean, width, yerr=[low, high], capsize=2, color=color, alpha=0.8, label=label)
    ax.axhline(0.25, color="gray", lw=1, ls="--", label="chance 0.25")
    ax.set_xticks(range(len(order)), order, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    level = f"{100 * results['confidence']:g}%"
    ax.set_title(f"Global-MMLU {results['num_fewshot']}-shot: CS vs CA per language ({level} intervals)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, png_path)


# --- M-RewardBench ---


def m_rewardbench_heatmap(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path:
    """Accuracy per language (rows, the multilingual average last) x category (and the language score), each
    cell annotated; a category a language lacks is left blank. `results` from m_rewardbench.evaluate."""
    categories = ("Chat", "Chat-Hard", "Safety", "Reasoning")
    languages = list(results["languages"])
    grid = [
        [r["categories"][c]["accuracy"] if c in r["categories"] else float("nan") for c in categories]
        + [r["score"]["mean"]]
        for r in (results["languages"][name] for name in languages)
    ]
    average = results["average"]
    if average["languages"]:  # the average row: per category, the mean over the averaged languages having it
        cells = []
        for c in categories:
            values = [
                results["languages"][name]["categories"][c]["accuracy"]
                for name in average["languages"]
                if c in results["languages"][name]["categories"]
            ]
            cells.append(sum(values) / len(values) if values else float("nan"))
        grid.append(cells + [average["mean"]])
        languages.append("average")
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.3 * len(languages)), dpi=110)
    image = ax.imshow(grid, cmap="YlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(categories) + 1), [*categories, "score"], fontsize=8)
    ax.set_yticks(range(len(languages)), languages, fontsize=7)
    ax.xaxis.tick_top()
    if average["languages"]:
        ax.axhline(len(languages) - 1.5, color="black", lw=0.8)
    fig.colorbar(image, ax=ax, label="accuracy (chosen > rejected)")
    ax.set_title("M-RewardBench", fontsize=9, pad=18)
    return _save(fig, png_path)


# --- perplexity ---


def _interval_errors(cells: Sequence[Mapping[str, float]]) -> list[list[float]]:
    """matplotlib's [[below], [above]] error lengths of {mean, low, high} cells (0 where a bound is NaN)."""
    below = [c["mean"] - c["low"] if c["low"] == c["low"] else 0.0 for c in cells]
    above = [c["high"] - c["mean"] if c["high"] == c["high"] else 0.0 for c in cells]
    return [below, above]


def perplexity_by_language(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path:
    """One checkpoint (aya_jax/evaluation/perplexity.py `perplexity`): perplexity per language with its
    bootstrap interval, highest at the top; the token-weighted overall perplexity marked."""
    languages = results["languages"]
    order = sorted(languages, key=lambda c: (-languages[c]["perplexity"]["mean"], c))
    cells = [languages[c]["perplexity"] for c in order]
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.16 * len(order)), dpi=110)
    ax.barh(range(len(order)), [c["mean"] for c in cells], xerr=_interval_errors(cells), color="tab:blue",
            error_kw={"lw": 0.8, "capsize": 2})  # fmt: skip
    overall = results["overall"]["micro"]["perplexity"]["mean"]
    ax.axvline(overall, color="tab:orange", lw=1.2, label=f"all languages {overall:.2f}")
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel(f"perplexity per token ({100 * results['confidence']:g}% interval over texts)")
    ax.set_title("held-out perplexity per language")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, png_path)


def perplexity_change(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path:
    """Two checkpoints (`compare`): perplexity before and after per language, ordered by the change (largest
    rise at the top); and the top tokens' share of the loss rise in the language that rose most (all
    languages pooled when none rose)."""
    before, after = results["before"]["languages"], results["after"]["languages"]
    change = results["languages"]
    order = sorted(change, key=lambda c: (-change[c]["nll_change"]["mean"], c))
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.8 + 0.2 * max(len(order), results["top"])), dpi=110)
    ax = axes[0]
    y = list(range(len(order)))
    ax.barh([i - 0.2 for i in y], [before[c]["perplexity"]["mean"] for c in order], height=0.4,
            color="tab:blue", label="before")  # fmt: skip
    ax.barh([i + 0.2 for i in y], [after[c]["perplexity"]["mean"] for c in order], height=0.4,
            color="tab:red", label="after")  # fmt: skip
    ax.set_yticks(y, [f"{c} (×{change[c]['perplexity_ratio']['mean']:.3f})" for c in order], fontsize=7)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel("perplexity per token")
    ax.set_title("before and after (ratio after / before)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)

    ax = axes[1]
    lang = results.get("largest_rise")
    rows = change[lang]["top_tokens"] if lang else results["overall"]["micro"]["top_tokens"]
    # repr shows a token's leading space or newline, which a bare label would hide
    labels = [f"{r['id']}: {r['text']!r} ({r['count']})" for r in rows]
    ax.barh(range(len(rows)), [r["share"] for r in rows], color="tab:red")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("share of the total loss rise (sum Δloss / Σ positive sums)")
    ax.set_title(f"tokens whose loss rose most: {lang or 'all languages'}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, png_path)


# --- pairwise battles (aya_jax/evaluation/battles.py) ---


def win_rate_forest(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path | None:
    """A forest plot: each model's win rate against the baseline per language (and overall, last) with its
    bootstrap interval; 0.5 marked. None when the log had no baseline."""
    win_rates = results.get("win_rates")
    if not win_rates:
        return None
    models = list(win_rates)
    languages = [lang for lang in next(iter(win_rates.values())) if lang != "overall"] + ["overall"]
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.3 * len(languages) * max(1, len(models) / 2)), dpi=110)
    step = 0.8 / len(models)
    for k, model in enumerate(models):
        cells = [win_rates[model].get(lang, {}).get("win_rate", {}) for lang in languages]
        keep = [i for i, c in enumerate(cells) if c.get("n")]
        y = [i + (k - (len(models) - 1) / 2) * step for i in keep]
        shown = [cells[i] for i in keep]
        ax.errorbar([c["mean"] for c in shown], y, xerr=_interval_errors(shown), fmt="o", ms=4, capsize=2,
                    label=model)  # fmt: skip
    ax.axvline(0.5, color="gray", lw=1, ls="--")
    ax.set_yticks(range(len(languages)), languages, fontsize=8)
    ax.set_ylim(len(languages) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel(
        f"win rate vs {results['baseline']} ({100 * results['confidence']:g}% interval over questions)"
    )
    ax.set_title("win rate per language (ties count 0.5, strong verdicts 3)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, png_path)


def elo_spread(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path | None:
    """Elo ratings over random battle orders: per K (x, log scale) each model's mean rating with ± one standard
    deviation across the permutations; the Bradley–Terry (order-free) rating as a dotted line per model."""
    elo = results.get("elo")
    if not elo:
        return None
    ks = list(elo["by_k"])
    x = [float(k) for k in ks]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for model in elo["models"]:
        mean = [elo["by_k"][k]["rating_mean"][model] for k in ks]
        sd = [elo["by_k"][k]["rating_sd"][model] for k in ks]
        line = ax.errorbar(x, mean, yerr=sd, fmt="-o", ms=3, capsize=2, label=model)
        ax.axhline(elo["bradley_terry"][model], color=line[0].get_color(), lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, ks)
    ax.set_xlabel("K-factor")
    ax.set_ylabel(f"Elo (mean ± sd over {elo['permutations']} orders)")
    ax.set_title("Elo ratings by K; dotted: Bradley–Terry")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, png_path)


def prompt_priority(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path:
    """Left: the prompts' divergence scores, the selected ones above the cut; right: the judge's tie rate on the
    selected prompts against random subsets of the same size (mean and interval over the draws)."""
    scores = [s[results["metric"]] for s in results["scores"]]
    cut = results["cut"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    left.hist(scores, bins=min(40, max(5, len(scores) // 3)), color="tab:blue", alpha=0.8)
    left.axvline(cut, color="tab:red", ls="--", lw=1, label=f"top {100 * results['fraction']:g}% from here")
    left.set_xlabel(f"{results['metric']} (mean of both directions, per token)")
    left.set_ylabel("prompts")
    left.legend(fontsize=8)
    ties = results.get("tie_rates")
    if ties:
        names = ["tie_rate", "split_rate"]
        x = range(len(names))
        chosen = [ties["selected"][n] for n in names]
        rand = [ties["random"][n] for n in names]
        right.bar([i - 0.2 for i in x], chosen, width=0.4, label="selected (top)", color="tab:red")
        right.bar([i + 0.2 for i in x], [r["mean"] for r in rand], width=0.4, yerr=_interval_errors(rand),
                  capsize=3, label=f"random ({ties['random']['draws']} draws)", color="tab:gray")  # fmt: skip
        right.set_xticks(list(x), ["tie verdicts (games)", "undecided prompts"], fontsize=8)
        right.set_ylabel("share")
        right.legend(fontsize=8)
        right.set_title(f"judge: {results.get('judge', '')}", fontsize=8)
    else:
        right.axis("off")
    return _save(fig, png_path)


def cluster_selection(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path:
    """Left: every cluster's pool size (largest first) and how many of its rows were selected — a uniform
    budget flattens the distribution; right: each language's share of the pool and of the selection."""
    sizes = results["cluster_size"]
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    x = range(len(order))
    left.bar(x, [sizes[i] for i in order], width=1.0, color="tab:gray", alpha=0.6, label="pool")
    left.bar(
        x, [results["cluster_selected"][i] for i in order], width=1.0, color="tab:blue", label="selected"
    )
    left.set_xlabel(f"cluster (largest first, {len(sizes)})")
    left.set_ylabel("rows")
    left.set_yscale("log")
    left.legend(fontsize=8)
    langs = sorted(results["per_language"], key=lambda g: -results["per_language"][g]["pool"])
    pool_total = max(1, results["pool_rows"])
    chosen_total = max(1, results["selected"])
    y = range(len(langs))
    right.barh([i + 0.2 for i in y], [results["per_language"][g]["pool"] / pool_total for g in langs],
               height=0.4, color="tab:gray", label="pool")  # fmt: skip
    right.barh([i - 0.2 for i in y], [results["per_language"][g]["selected"] / chosen_total for g in langs],
               height=0.4, color="tab:blue", label="selected")  # fmt: skip
    right.set_yticks(list(y), langs, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("share of rows")
    right.legend(fontsize=8)
    return _save(fig, png_path)


def arbitrage(
    results: Mapping[str, Any], strategy_scores: Mapping[str, Any], png_path: str | os.PathLike
) -> pathlib.Path:
    """Left: the share of each language's prompts routed to each teacher; right (when every teacher's reply was
    scored): the score each strategy's picks get — the reward model's, or the judge's round-robin points when
    results["scorer"] names a judge — as box plots."""
    names = list(results["teachers"])
    langs = list(results["choices"])
    counts = np.array([[results["choices"][g][t] for t in names] for g in langs], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.3 * len(langs) + 2.5), dpi=110)
    image = left.imshow(share, aspect="auto", cmap="Blues", vmin=0, vmax=1)
    left.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    left.set_yticks(range(len(langs)), langs, fontsize=7)
    for (r, col), v in np.ndenumerate(counts):
        left.text(
            col,
            r,
            f"{int(v)}",
            ha="center",
            va="center",
            fontsize=6,
            color="black" if share[r, col] < 0.6 else "white",
        )
    left.set_title(f"prompts routed per language ({results['routing']})", fontsize=9)
    fig.colorbar(image, ax=left, fraction=0.04, label="share of the language")
    if strategy_scores:
        labels = list(strategy_scores)
        right.boxplot([np.asarray(strategy_scores[s]) for s in labels], vert=False, showmeans=True)
        right.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        judged = str(results.get("scorer", "")).startswith("judge")
        right.set_xlabel(
            "judge's round-robin points of the picked reply"
            if judged
            else "reward-model score of the picked reply"
        )
        right.set_title("the same prompts, by routing strategy", fontsize=9)
    else:
        right.axis("off")
    return _save(fig, png_path)


def attribute_shift(
    values: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], weights: Mapping[str, float],
    png_path: str | os.PathLike,
) -> pathlib.Path:  # fmt: skip
    """One panel per attribute: the distribution over every candidate, over a random pick per prompt and over
    the selected replies (active inheritance moves the last one in the direction of the weight's sign)."""
    fig, axes = plt.subplots(1, len(values), figsize=(4.2 * len(values), 3.4), dpi=110, squeeze=False)
    for ax, (name, (every, random_pick, selected)) in zip(axes[0], values.items(), strict=True):
        bins = np.histogram_bin_edges(every, bins=30)
        for data, label, color in ((every, "all candidates", "tab:gray"), (random_pick, "random pick", "tab:orange"),
                                   (selected, "selected", "tab:blue")):  # fmt: skip
            ax.hist(data, bins=bins, density=True, histtype="step", linewidth=1.5, label=label, color=color)
            ax.axvline(float(np.mean(data)), color=color, linestyle="--", linewidth=1)
        ax.set_title(f"{name} ({'maximised' if weights[name] > 0 else 'minimised'})", fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, png_path)


def recipe_stages(results: Mapping[str, Any], png_path: str | os.PathLike) -> pathlib.Path | None:
    """The recipe's models (aya_jax/jobs/recipe.py) in stage order: held-out loss with its interval; win rate
    against the baseline and against the previous stage with their intervals; loss per language."""
    models = {n: m for n, m in results["models"].items() if m.get("loss")}
    if not models:
        return None
    names = list(models)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4), dpi=110)

    def bars(ax, values, offset, label):
        present = [(i, v) for i, v in enumerate(values) if v and v.get("n")]
        if not present:
            return
        x = np.array([i for i, _ in present]) + offset
        mean = np.array([v["mean"] for _, v in present])
        low = np.array([v["low"] for _, v in present])
        high = np.array([v["high"] for _, v in present])
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o", capsize=3, label=label)

    bars(left, [models[n]["loss"]["nll"] for n in names], 0.0, "held-out loss")
    left.set_ylabel("held-out loss (nats/token)")
    left.set_title("each stage's model, 95% interval", fontsize=9)
    wins = [models[n].get("win_rate", {}) for n in names]
    bars(middle, [w.get("vs_baseline", {}).get("win_rate") for w in wins], -0.1,
         f"vs {results.get('baseline', 'baseline')}")  # fmt: skip
    bars(middle, [w.get("vs_previous", {}).get("win_rate") for w in wins], 0.1, "vs the previous stage")
    middle.axhline(0.5, color="grey", lw=0.8, ls="--")
    middle.set_ylabel("win rate (judge, both orders)")
    middle.set_title("win rates, 95% interval", fontsize=9)
    if middle.get_legend_handles_labels()[0]:
        middle.legend(fontsize=7)
    for ax in (left, middle):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    langs = sorted({g for m in models.values() for g in m["loss"]["languages"]})
    for n in names:
        right.plot(range(len(langs)), [models[n]["loss"]["languages"].get(g, {}).get("mean", np.nan) for g in langs],
                   marker=".", label=n)  # fmt: skip
    right.set_xticks(range(len(langs)), langs, rotation=90, fontsize=7)
    right.set_ylabel("held-out loss (nats/token)")
    right.set_title("per language", fontsize=9)
    right.legend(fontsize=7)
    return _save(fig, png_path)
