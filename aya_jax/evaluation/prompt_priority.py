"""Prompt prioritisation: which prompts deserve scarce (human) judgments — those on which two models disagree most.

Boubdir et al. 2023 ("Which Prompts Make The Difference? Data Prioritization For Efficient Human LLM
Evaluation", arXiv 2310.14424) rank prompts by how dissimilar two models' token distributions are on them, and
find that annotating the top 20% instead of a random 20% cuts indecisive ("tie") outcomes by up to 54%.

Score of a prompt x for models A and B (the metric-based ranking; our aggregation, stated):

    y_A = A's greedy answer to x, y_B = B's
    KL_A = mean over the tokens t of y_A of KL(p_A(. | x, y_A<t) || p_B(. | x, y_A<t))   (teacher-forced)
    KL_B = mean over the tokens t of y_B of KL(p_B(. | x, y_B<t) || p_A(. | x, y_B<t))
    kl   = (KL_A + KL_B) / 2

and `cross_entropy` the same with H(p, q) = -Σ_v p_v log q_v in place of KL (H(p, q) = H(p) + KL(p || q): it also
rises where the answering model itself is unsure). Each direction is measured on the answer of the model whose
distribution comes first, the text that model would actually produce; the mean over tokens keeps a long answer
from ranking high for its length alone; the two directions are averaged so the score does not depend on which
model is called A. The paper's exact aggregation over tokens is not restated here; this is ours.

`select` keeps the top `fraction` of prompts by score (ties broken by key). `tie_rates` is the paper's measure
with a judge standing in for the annotators: the share of judged games whose verdict is a tie (`[[A=B]]`) among
the selected prompts, against the same share among random subsets of the same size (`draws` seeded draws; their
mean and percentile interval) — and, stricter, the share of prompts whose two games (positions swapped) average
to exactly 0.5 (a tie, or two verdicts that contradict each other).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aya_jax.evaluation import battles, report, stats

METRICS = ("kl", "cross_entropy")


@dataclasses.dataclass(frozen=True)
class PromptScore:
    key: str
    kl: float  # (KL_A + KL_B) / 2
    cross_entropy: float
    kl_a: float  # on A's answer: KL(p_A || p_B)
    kl_b: float  # on B's answer: KL(p_B || p_A)
    tokens_a: int
    tokens_b: int


def prompt_score(key: str, on_a: Sequence[np.ndarray], on_b: Sequence[np.ndarray]) -> PromptScore:
    """`on_a` = (log p_A, KL(p_A || p_B), H(p_A, p_B)) per token of A's answer; `on_b` the same on B's answer with
    the roles swapped (`likelihood.Divergence.token_divergences`)."""
    kl_a, kl_b = float(np.mean(on_a[1])), float(np.mean(on_b[1]))
    ce_a, ce_b = float(np.mean(on_a[2])), float(np.mean(on_b[2]))
    return PromptScore(key, (kl_a + kl_b) / 2, (ce_a + ce_b) / 2, kl_a, kl_b, len(on_a[1]), len(on_b[1]))


def select(scores: Sequence[PromptScore], fraction: float, metric: str = "kl") -> list[str]:
    """The keys of the top `fraction` of prompts by `metric` (at least one), highest first; equal scores in key
    order."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {list(METRICS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ranked = sorted(scores, key=lambda s: (-getattr(s, metric), s.key))
    return [s.key for s in ranked[: max(1, round(fraction * len(ranked)))]]


def _tie_shares(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> tuple[float, float, int]:
    """(share of parsed games with a tie verdict, share of prompts whose parsed games average 0.5, games)."""
    chosen = set(keys)
    ties = games = 0
    by_prompt: dict[str, list[float]] = {}
    for r in records:
        if r["question_id"] not in chosen:
            continue
        verdict = r.get("verdict") or battles.parse_verdict(r.get("judgment"))
        if verdict is None:
            continue
        score, _ = battles.LABELS[verdict]
        games += 1
        ties += verdict == "A=B"
        # A's score in B-first order is 1 - score: put both games on the same side (the first model's).
        first = r["model_a"] == min(r["model_a"], r["model_b"])
        by_prompt.setdefault(r["question_id"], []).append(score if first else 1.0 - score)
    split = [np.mean(v) == 0.5 for v in by_prompt.values()]
    return (ties / games if games else float("nan"), float(np.mean(split)) if split else float("nan"), games)


def tie_rates(
    records: Sequence[Mapping[str, Any]],
    selected: Sequence[str],
    all_keys: Sequence[str],
    *,
    draws: int = 1000,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """The tie rates of the judged games on the `selected` prompts vs random subsets of `all_keys` of the same
    size (module docstring): {"selected": {...}, "random": {...}, "reduction": 1 - selected / random mean}."""
    game_ties, prompt_ties, games = _tie_shares(records, selected)
    rng = np.random.default_rng(seed)
    keys = list(all_keys)
    random_game, random_prompt = [], []
    for _ in range(draws):
        subset = [keys[i] for i in rng.choice(len(keys), size=len(selected), replace=False)]
        g, p, _ = _tie_shares(records, subset)
        random_game.append(g)
        random_prompt.append(p)

    def summary(values: list[float]) -> dict[str, Any]:
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return stats.interval(mean, values, confidence, len(selected)).as_dict()

    out = {
        "selected": {"prompts": len(selected), "games": games, "tie_rate": game_ties, "split_rate": prompt_ties},
        "random": {"prompts": len(selected), "draws": draws, "seed": seed, "confidence": confidence,
                   "tie_rate": summary(random_game),
                   "split_rate": summary(random_prompt)},
    }  # fmt: skip
    for name in ("tie_rate", "split_rate"):
        base = out["random"][name]["mean"]
        chosen = out["selected"][name]
        out[f"{name}_reduction"] = 1.0 - chosen / base if base and np.isfinite(base) else float("nan")
    return out


def markdown(results: Mapping[str, Any]) -> str:
    """The report: the cut, the most divergent prompts, and the tie rates against random subsets."""
    a, b = results["models"]
    metric = results["metric"]
    parts = [
        f"# Prompt prioritisation: {a} vs {b}",
        f"{results['scored']} of {results['prompts']} prompts scored ({len(results['empty_answers'])} with an "
        f"empty answer left out); top {100 * results['fraction']:g}% by {metric}: {len(results['selected'])} "
        f"prompts, {metric} >= {results['cut']:.4g}.",
    ]
    top = sorted(results["scores"], key=lambda s: -s[metric])[:10]
    parts.append(
        report.table(
            ["prompt", "kl", "cross-entropy", f"KL on {a}'s answer", f"KL on {b}'s answer", "tokens"],
            [
                [
                    s["key"],
                    s["kl"],
                    s["cross_entropy"],
                    s["kl_a"],
                    s["kl_b"],
                    f"{s['tokens_a']} / {s['tokens_b']}",
                ]
                for s in top
            ],
        )  # fmt: skip
    )
    ties = results.get("tie_rates")
    if ties:
        level = f"{100 * ties['random']['confidence']:g}%"
        sel, rnd = ties["selected"], ties["random"]

        def cell(d: Mapping[str, Any]) -> str:
            return f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

        parts.append(f"## Judge ({results['judge']}): ties on the selected prompts vs random subsets")
        parts.append(
            report.table(
                ["", "selected", f"random ({rnd['draws']} draws, {level} of draws)", "reduction"],
                [
                    [
                        "tie verdicts / games",
                        sel["tie_rate"],
                        cell(rnd["tie_rate"]),
                        ties["tie_rate_reduction"],
                    ],
                    [
                        "undecided prompts (games average 0.5)",
                        sel["split_rate"],
                        cell(rnd["split_rate"]),
                        ties["split_rate_reduction"],
                    ],
                ],
            )  # fmt: skip
        )
    return "\n\n".join(parts)
