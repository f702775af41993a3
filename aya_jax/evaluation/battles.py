"""Pairwise battles: judge verdicts -> win rates, Bradley–Terry ratings and Elo, and how reliable they are.

Protocol (Arena-Hard-Auto, Li et al. 2024, arXiv 2406.11939; m-ArenaHard in Aya Expanse, arXiv 2412.04261):
every question is judged in two games with the answers' positions swapped (game 1: the baseline is
assistant A and the model B; game 2 the reverse). A judgment ends in one of five labels

    [[A>>B]]  [[A>B]]  [[A=B]]  [[B>A]]  [[B>>A]]

and the label that counts is the *last* well-formed one in the text (judges often restate the format before
answering). Each parsed game is one battle between the two models with A's score 1 (A better), 0.5 (tie) or 0
(B better) and weight 3 for a strong verdict (>>), else 1.

Scores:
- **win rate** of a model against a baseline: the weighted mean of the model's scores over its battles with the
  baseline (ties 0.5), per language and overall, with the weighted wins / ties / losses beside it;
- **Bradley–Terry**: P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)), fitted by maximum likelihood — Newton's
  method on the weighted log-likelihood, where a tie counts half a win for each side (what Chatbot Arena's
  duplication of tied battles amounts to) — with one model anchored at 1000 (the baseline, as arena-hard-auto
  anchors its baseline) or, without an anchor, the mean rating at 1000. Its predicted win rate against the
  anchor is arena-hard-auto's headline score. *Style control* adds per-battle feature differences (e.g. answer
  length and markdown counts of A minus B, each column scaled to unit root mean square) as covariates of the
  same logistic regression, so the ratings compare models at equal style;
- **Elo**: the online update R_a += K (s_a - E_a), R_b -= K (s_a - E_a) over the battles in order (a battle of
  weight w is w unit battles). Its dependence on the order and on K is what "Elo Uncovered" (Boubdir et al.
  2023, arXiv 2311.17295) measures: over N random permutations of the battles, each rating's mean and standard
  deviation, how often the whole ranking equals the most common one, over a sweep of K; and transitivity:
  model triples whose head-to-head majorities form a cycle, and model pairs whose mean-Elo order contradicts
  their head-to-head majority.

Intervals are percentile bootstraps (aya_jax/evaluation/stats.py), always seeded, resampling *questions*: both
games of a question stay together, since they share the prompt and the answers and are not independent draws.

Departures from arena-hard-auto's scorer, on purpose:
- a game whose judgment has no verdict is counted (`unparsed`) and only that game is left out; arena-hard-auto
  drops the whole question when either game lacks a verdict, discarding a valid judgment and biasing the score
  toward questions the judge formatted well;
- style control takes any set of features, one alone included (each is one column of the design); arena-hard-
  auto's only works with length and markdown together;
- every bootstrap is seeded (`numpy.random.default_rng(seed)`), so a rerun reproduces its intervals
  (arena-hard-auto's is not); and it resamples questions rather than single battles (above).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from aya_jax.evaluation import report, rows, stats

# label -> (score of A, weight)
LABELS: dict[str, tuple[float, float]] = {
    "A>>B": (1.0, 3.0),
    "A>B": (1.0, 1.0),
    "A=B": (0.5, 1.0),
    "B>A": (0.0, 1.0),
    "B>>A": (0.0, 3.0),
}
_LABEL = re.compile(r"\[\[\s*([AB])\s*(>>|>|=)\s*([AB])\s*\]\]")

ELO_SCALE, ELO_BASE, ELO_INIT = 400.0, 10.0, 1000.0
_NATURAL_TO_ELO = ELO_SCALE / math.log(ELO_BASE)  # a rating difference of 1 in log-odds is ~173.7 Elo


def parse_verdict(judgment: str | None) -> str | None:
    """The verdict label of a judge's text (a key of LABELS): the last well-formed `[[X op Y]]` in it, or None.
    `[[B=A]]` reads as a tie; labels naming one side twice (`[[A>A]]`) are not verdicts."""
    found = None
    for first, op, second in _LABEL.findall(judgment or ""):
        if first != second:
            found = "A=B" if op == "=" else f"{first}{op}{second}"
    return found


@dataclasses.dataclass(frozen=True)
class Battle:
    """One judged game: `score_a` is A's result (1 / 0.5 / 0), `weight` 3 for a strong verdict, else 1."""

    question_id: str
    model_a: str
    model_b: str
    score_a: float
    weight: float = 1.0
    language: str = ""
    game: int = 1

    def score_of(self, model: str) -> float:
        return self.score_a if model == self.model_a else 1.0 - self.score_a


@dataclasses.dataclass(frozen=True)
class Unparsed:
    """A judged game without a verdict: counted and reported, never silently dropped."""

    question_id: str
    model_a: str
    model_b: str
    language: str = ""
    game: int = 1


def battles_from_judgments(judgments: Iterable[Mapping[str, Any]]) -> tuple[list[Battle], list[Unparsed]]:
    """Judgment records -> (battles, unparsed games). A record has `question_id`, `model_a`, `model_b`, and
    either `verdict` (a label) or `judgment` (the judge's text, parsed here); optional `language`, `game`."""
    battles, unparsed = [], []
    for i, j in enumerate(judgments):
        missing = [k for k in ("question_id", "model_a", "model_b") if k not in j]
        if missing:
            raise ValueError(f"judgment {i}: missing field(s) {missing}")
        verdict = j.get("verdict") or parse_verdict(j.get("judgment"))
        if verdict is not None and verdict not in LABELS:
            raise ValueError(f"judgment {i}: verdict {verdict!r} is not one of {list(LABELS)}")
        common = {
            "question_id": str(j["question_id"]),
            "model_a": str(j["model_a"]),
            "model_b": str(j["model_b"]),
            "language": str(j.get("language", "")),
            "game": int(j.get("game", 1)),
        }
        if verdict is None:
            unparsed.append(Unparsed(**common))
        else:
            score, weight = LABELS[verdict]
            battles.append(Battle(score_a=score, weight=weight, **common))
    return battles, unparsed


# ------------------------------------------------------------------------------------------------------------
# Win rate against a baseline
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WinRate:
    model: str
    baseline: str
    win_rate: stats.Interval  # n = questions with at least one parsed game
    wins: float  # weighted: a strong verdict counts 3
    ties: float
    losses: float
    games: int  # parsed games
    unparsed: int  # games without a verdict

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["win_rate"] = self.win_rate.as_dict()
        return out


def win_rate(
    battles: Sequence[Battle],
    model: str,
    baseline: str,
    *,
    unparsed: Sequence[Unparsed] = (),
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> WinRate:
    """`model`'s weighted win rate over its battles with `baseline` (module docstring), its question-level
    bootstrap interval and the weighted win / tie / loss counts."""
    pair = {model, baseline}
    num: dict[str, float] = collections.defaultdict(float)
    den: dict[str, float] = collections.defaultdict(float)
    tally = {1.0: 0.0, 0.5: 0.0, 0.0: 0.0}
    games = 0
    for b in battles:
        if {b.model_a, b.model_b} != pair:
            continue
        s = b.score_of(model)
        num[b.question_id] += b.weight * s
        den[b.question_id] += b.weight
        tally[s] += b.weight
        games += 1
    questions = sorted(num)
    interval = stats.bootstrap_ratio(
        [num[q] for q in questions],
        [den[q] for q in questions],
        rounds=rounds,
        confidence=confidence,
        seed=seed,
    )
    lost = sum(1 for u in unparsed if {u.model_a, u.model_b} == pair)
    return WinRate(model, baseline, interval, tally[1.0], tally[0.5], tally[0.0], games, lost)


def win_rates_by_language(
    battles: Sequence[Battle], model: str, baseline: str, *, unparsed: Sequence[Unparsed] = (), **options: Any
) -> dict[str, WinRate]:
    """{language: WinRate} for every language of the battles, plus "overall" (all questions pooled);
    `options`: win_rate's rounds, confidence, seed."""
    out = {}
    for language in sorted({b.language for b in battles}):
        out[language] = win_rate(
            [b for b in battles if b.language == language],
            model,
            baseline,
            unparsed=[u for u in unparsed if u.language == language],
            **options,
        )
    out["overall"] = win_rate(battles, model, baseline, unparsed=unparsed, **options)
    return out


# ------------------------------------------------------------------------------------------------------------
# Bradley–Terry
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BradleyTerry:
    ratings: dict[str, float]  # Elo scale, anchored (module docstring)
    style: dict[str, float]  # coefficient per style feature (log-odds per root-mean-square difference)
    anchor: str | None

    def win_probability(self, model: str, opponent: str) -> float:
        return 1.0 / (1.0 + ELO_BASE ** ((self.ratings[opponent] - self.ratings[model]) / ELO_SCALE))


def bradley_terry(
    battles: Sequence[Battle],
    *,
    anchor: str | None = None,
    style: Mapping[str, Sequence[float]] | None = None,
    l2: float = 0.0,
    max_iterations: int = 100,
) -> BradleyTerry:
    """Maximum-likelihood Bradley–Terry ratings of the models in `battles` (module docstring).

    `style`: {feature name: one value per battle, A's feature minus B's}; each column is scaled to unit root
    mean square (not centred) before the fit. `l2` adds l2 / 2 * |θ|² (θ in log-odds) to the negative
    log-likelihood: 0 is the plain MLE, which does not exist when a model wins (or loses) every battle — that
    case raises, naming the model, unless l2 > 0. Models that never meet (directly or through others) have no
    common scale and raise too."""
    if not battles:
        raise ValueError("bradley_terry: no battles")
    models = sorted({m for b in battles for m in (b.model_a, b.model_b)})
    if anchor is not None and anchor not in models:
        raise ValueError(f"bradley_terry: anchor {anchor!r} is in no battle (models: {models})")
    index = {m: i for i, m in enumerate(models)}
    n = len(battles)
    x = np.zeros((n, len(models)))
    each = np.arange(n)
    x[each, [index[b.model_a] for b in battles]] += 1.0
    x[each, [index[b.model_b] for b in battles]] -= 1.0
    y = np.array([b.score_a for b in battles], dtype=np.float64)
    w = np.array([b.weight for b in battles], dtype=np.float64)
    names = list(style or {})
    if names:
        z = np.column_stack([np.asarray(style[k], dtype=np.float64) for k in names])
        if z.shape[0] != n:
            raise ValueError(f"bradley_terry: style features have {z.shape[0]} rows for {n} battles")
        # Scaled to unit root-mean-square but not centred: a zero difference must stay "equal style", and the
        # fit must stay symmetric under swapping A and B (d -> -d, score -> 1 - score).
        rms = np.sqrt((z**2).mean(axis=0))
        if np.any(rms == 0):
            zero = [k for k, r in zip(names, rms, strict=True) if r == 0]
            raise ValueError(f"bradley_terry: style feature(s) {zero} are zero in every battle")
        x = np.hstack([x, z / rms])
    # One rating is fixed (the anchor, or the first model; shifted to the mean afterwards): the likelihood only
    # sees differences, so the free parameters are the other ratings and the style coefficients.
    components = _components(battles)
    if len(components) > 1:
        raise ValueError(
            f"bradley_terry: the battles leave the models in separate groups {components} (no common scale)"
        )
    fixed = index[anchor] if anchor is not None else 0
    free = [c for c in range(x.shape[1]) if c != fixed]
    theta = _newton_logistic(x[:, free], y, w, l2, max_iterations)
    if theta is None:
        raise ValueError(
            "bradley_terry: no finite maximum-likelihood ratings (a model wins or loses every battle: "
            f"{_undefeated_or_winless(battles) or 'a group of models does'}); pass l2 > 0"
        )
    full = np.zeros(x.shape[1])
    full[free] = theta
    ratings = full[: len(models)]
    ratings = ratings - (ratings[fixed] if anchor is not None else ratings.mean())
    return BradleyTerry(
        {m: float(ELO_INIT + _NATURAL_TO_ELO * ratings[index[m]]) for m in models},
        {k: float(full[len(models) + i]) for i, k in enumerate(names)},
        anchor,
    )


def _newton_logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, max_iterations: int
) -> np.ndarray | None:
    """argmin over θ of -Σ w [y log σ(xθ) + (1-y) log(1-σ(xθ))] + l2/2 |θ|², by Newton's method (the
    objective is convex; it converges in a handful of iterations here). None when there is no finite minimiser."""
    theta = np.zeros(x.shape[1])
    for _ in range(max_iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (w * (p - y)) + l2 * theta
        hess = (x * (w * p * (1.0 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return None
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            return theta
    return None


def _components(battles: Sequence[Battle]) -> list[list[str]]:
    """The connected components of the graph whose edges are the pairs that met."""
    parent: dict[str, str] = {}

    def root(m: str) -> str:
        while parent.setdefault(m, m) != m:
            m = parent[m]
        return m

    for b in battles:
        parent[root(b.model_a)] = root(b.model_b)
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for m in sorted(parent):
        groups[root(m)].append(m)
    return sorted(groups.values())


def _undefeated_or_winless(battles: Sequence[Battle]) -> list[str]:
    scores: dict[str, set[float]] = collections.defaultdict(set)
    for b in battles:
        scores[b.model_a].add(b.score_a)
        scores[b.model_b].add(1.0 - b.score_a)
    return sorted(m for m, s in scores.items() if s in ({1.0}, {0.0}))


def bootstrap_bradley_terry(
    battles: Sequence[Battle],
    *,
    anchor: str | None = None,
    style: Mapping[str, Sequence[float]] | None = None,
    l2: float = 0.0,
    rounds: int = 100,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """{model: {"rating": Interval, "win_rate_vs_anchor": Interval (with an anchor)}}: the fit on all battles
    and the percentile intervals of `rounds` refits on questions resampled with replacement (a replicate whose
    fit has no finite ratings is skipped and counted in "failed_rounds")."""
    point = bradley_terry(battles, anchor=anchor, style=style, l2=l2)
    by_question: dict[str, list[int]] = collections.defaultdict(list)
    for i, b in enumerate(battles):
        by_question[b.question_id].append(i)
    questions = sorted(by_question)
    rng = np.random.default_rng(seed)
    replicates: list[BradleyTerry] = []
    failed = 0
    for _ in range(rounds):
        picked = [
            i for q in rng.integers(0, len(questions), len(questions)) for i in by_question[questions[q]]
        ]
        sample = [battles[i] for i in picked]
        sample_style = {k: [style[k][i] for i in picked] for k in style} if style else None
        try:
            replicates.append(bradley_terry(sample, anchor=anchor, style=sample_style, l2=l2))
        except ValueError:
            failed += 1
    out: dict[str, dict[str, Any]] = {}
    for m, rating in point.ratings.items():
        reps = [r.ratings.get(m, math.nan) for r in replicates]
        entry: dict[str, Any] = {"rating": stats.interval(rating, reps, confidence, len(questions))}
        if anchor is not None:
            entry["win_rate_vs_anchor"] = stats.interval(
                point.win_probability(m, anchor),
                [r.win_probability(m, anchor) if m in r.ratings else math.nan for r in replicates],
                confidence,
                len(questions),
            )
        out[m] = entry
    out["failed_rounds"] = {"count": failed, "rounds": rounds}
    return out


# ------------------------------------------------------------------------------------------------------------
# Elo and its reliability
# ------------------------------------------------------------------------------------------------------------


def _unit_battles(battles: Sequence[Battle]) -> list[tuple[str, str, float]]:
    """(A, B, A's score), a battle of integer weight w repeated w times (weights must be whole numbers)."""
    out = []
    for b in battles:
        if b.weight != int(b.weight) or b.weight < 1:
            raise ValueError(
                f"elo: battle weights must be whole numbers >= 1, got {b.weight} ({b.question_id})"
            )
        out.extend([(b.model_a, b.model_b, b.score_a)] * int(b.weight))
    return out


def elo(battles: Sequence[tuple[str, str, float]], k: float, init: float = ELO_INIT) -> dict[str, float]:
    """Online Elo over unit battles (A, B, A's score) in the given order."""
    ratings: dict[str, float] = collections.defaultdict(lambda: init)
    for a, b, s in battles:
        expected = 1.0 / (1.0 + ELO_BASE ** ((ratings[b] - ratings[a]) / ELO_SCALE))
        ratings[a] += k * (s - expected)
        ratings[b] -= k * (s - expected)
    return dict(ratings)


def head_to_head(battles: Sequence[Battle]) -> dict[tuple[str, str], float]:
    """{(i, j): i's weighted score against j} over their battles, for every pair that met (both orders)."""
    num: dict[tuple[str, str], float] = collections.defaultdict(float)
    den: dict[tuple[str, str], float] = collections.defaultdict(float)
    for b in battles:
        for i, j in ((b.model_a, b.model_b), (b.model_b, b.model_a)):
            num[i, j] += b.weight * b.score_of(i)
            den[i, j] += b.weight
    return {pair: num[pair] / den[pair] for pair in den}


def transitivity(battles: Sequence[Battle], ratings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Cycles among model triples whose three pairs all met and all have a strict head-to-head majority
    (i beats j beats k beats i), and — given `ratings` — pairs whose rating order contradicts their strict
    head-to-head majority."""
    h2h = head_to_head(battles)
    models = sorted({m for pair in h2h for m in pair})

    def beats(i: str, j: str) -> bool | None:
        s = h2h.get((i, j))
        return None if s is None or s == 0.5 else s > 0.5

    triples = cycles = 0
    for i, j, k in itertools.combinations(models, 3):
        edges = [beats(i, j), beats(j, k), beats(k, i)]
        if None in edges:
            continue
        triples += 1
        cycles += edges[0] == edges[1] == edges[2]  # all one way round: a cycle
    out: dict[str, Any] = {"triples": triples, "cyclic_triples": cycles}
    if ratings is not None:
        pairs = [(i, j) for i, j in itertools.combinations(models, 2) if beats(i, j) is not None]
        wrong = [
            [i, j]
            for i, j in pairs
            if i in ratings and j in ratings and beats(i, j) != (ratings[i] > ratings[j])
        ]
        out |= {"decided_pairs": len(pairs), "rating_order_violations": len(wrong), "violating_pairs": wrong}
    return out


def elo_reliability(
    battles: Sequence[Battle],
    *,
    ks: Sequence[float] = (1, 2, 4, 8, 16, 32, 64),
    permutations: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Elo over `permutations` random orders of the (unit) battles for each K (module docstring): per K and
    model the mean and sd of the rating and of the rank, the share of permutations whose full ranking is the
    most common one, and the transitivity of the mean ratings; plus the order-free Bradley–Terry ranking for
    reference (l2 = 1e-6, so that a model that wins every battle still gets a rating)."""
    if permutations < 1:
        raise ValueError(f"elo_reliability: permutations must be >= 1, got {permutations}")
    units = _unit_battles(battles)
    models = sorted({m for a, b, _ in units for m in (a, b)})
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(units)) for _ in range(permutations)]  # the same orders for every K
    per_k = {}
    for k in ks:
        table = np.array(
            [[elo([units[i] for i in order], k).get(m, ELO_INIT) for m in models] for order in orders]
        )
        ranks = (-table).argsort(axis=1).argsort(axis=1) + 1  # 1 = best
        rankings = collections.Counter(tuple(np.argsort(-row)) for row in table)
        mean = dict(zip(models, table.mean(axis=0).tolist(), strict=True))
        per_k[f"{float(k):g}"] = {
            "rating_mean": mean,
            "rating_sd": dict(zip(models, table.std(axis=0).tolist(), strict=True)),
            "rank_mean": dict(zip(models, ranks.mean(axis=0).tolist(), strict=True)),
            "rank_sd": dict(zip(models, ranks.std(axis=0).tolist(), strict=True)),
            "modal_ranking": [models[i] for i in rankings.most_common(1)[0][0]],
            "modal_ranking_share": rankings.most_common(1)[0][1] / permutations,
            "transitivity": transitivity(battles, mean),
        }
    bt = bradley_terry(battles, l2=1e-6)
    return {
        "models": models,
        "unit_battles": len(units),
        "permutations": permutations,
        "seed": seed,
        "by_k": per_k,
        "bradley_terry": bt.ratings,
        "bradley_terry_ranking": sorted(models, key=lambda m: -bt.ratings[m]),
    }


# ------------------------------------------------------------------------------------------------------------
# A battle log -> one report
# ------------------------------------------------------------------------------------------------------------


def read_judgments(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """Judgment records from a JSONL file (what `judges.judge_pairs` writes, or any log with question_id,
    model_a, model_b and verdict or judgment per line); a bad line is an error naming file:line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no judgments file at {path}")
    records = []
    for number, record in rows.read_rows(path):
        try:
            battles_from_judgments([record])
        except ValueError as e:
            raise ValueError(f"{path}:{number}: {str(e).removeprefix('judgment 0: ')}") from None
        records.append(record)
    return records


def evaluate(
    records: Sequence[Mapping[str, Any]],
    *,
    baseline: str = "",
    ks: Sequence[float] = (1, 2, 4, 8, 16, 32, 64),
    permutations: int = 100,
    bt_rounds: int = 100,
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    style: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Everything this module measures on one battle log: per model against `baseline` (when given) the win
    rate per language and overall; Bradley–Terry ratings with bootstrap intervals (anchored at the baseline, or
    mean-centred) and, anchored, the predicted win rate against it; Elo reliability over `ks`; the unparsed
    games per model pair. `style` ({feature: one value per record}) adds style-controlled Bradley–Terry ratings
    and the features' coefficients ("bradley_terry_style")."""
    battles, unparsed = battles_from_judgments(records)
    if not battles:
        raise ValueError(f"no judgment with a verdict among {len(records)} ({len(unparsed)} unparsed)")
    models = sorted({m for b in battles for m in (b.model_a, b.model_b)})
    if baseline and baseline not in models:
        raise ValueError(f"baseline {baseline!r} is in no battle (models: {models})")
    results: dict[str, Any] = {
        "models": models,
        "baseline": baseline,
        "games": len(battles) + len(unparsed),
        "parsed": len(battles),
        "unparsed": len(unparsed),
        "unparsed_by_pair": dict(
            collections.Counter(" vs ".join(sorted((u.model_a, u.model_b))) for u in unparsed)
        ),
        "confidence": confidence,
        "rounds": rounds,
        "seed": seed,
    }
    if baseline:
        results["win_rates"] = {
            m: {
                lang: wr.as_dict()
                for lang, wr in win_rates_by_language(
                    battles, m, baseline, unparsed=unparsed, rounds=rounds, confidence=confidence, seed=seed
                ).items()
            }
            for m in models
            if m != baseline
        }
    try:
        bt = bootstrap_bradley_terry(
            battles, anchor=baseline or None, rounds=bt_rounds, confidence=confidence, seed=seed, l2=1e-6
        )
        failed = bt.pop("failed_rounds")
        results["bradley_terry"] = {
            "ratings": {m: {k: v.as_dict() for k, v in entry.items()} for m, entry in bt.items()},
            "rounds": bt_rounds,
            "failed_rounds": failed["count"],
            "l2": 1e-6,
        }
    except ValueError as e:  # e.g. models that never meet: reported, the rest of the report stands
        results["bradley_terry"] = {"error": str(e)}
    if style:
        results["bradley_terry_style"] = _style_controlled(
            records,
            battles,
            style,
            anchor=baseline or None,
            rounds=bt_rounds,
            confidence=confidence,
            seed=seed,
        )
    if all(b.weight == int(b.weight) for b in battles):
        results["elo"] = elo_reliability(battles, ks=ks, permutations=permutations, seed=seed)
    return results


def _style_controlled(
    records: Sequence[Mapping[str, Any]],
    battles: Sequence[Battle],
    style: Mapping[str, Sequence[float]],
    **options: Any,
) -> dict[str, Any]:
    """Bradley–Terry with the style features as covariates, over the records that have a verdict."""
    parsed = [i for i, r in enumerate(records) if r.get("verdict") or parse_verdict(r.get("judgment"))]
    for name, values in style.items():
        if len(values) != len(records):
            raise ValueError(f"style feature {name!r} has {len(values)} values for {len(records)} records")
    columns = {name: [float(values[i]) for i in parsed] for name, values in style.items()}
    try:
        point = bradley_terry(battles, anchor=options["anchor"], style=columns, l2=1e-6)
        bt = bootstrap_bradley_terry(battles, style=columns, l2=1e-6, **options)
    except ValueError as e:
        return {"error": str(e)}
    failed = bt.pop("failed_rounds")
    return {
        "features": list(columns),
        "coefficients": point.style,
        "ratings": {m: {k: v.as_dict() for k, v in entry.items()} for m, entry in bt.items()},
        "rounds": options["rounds"],
        "failed_rounds": failed["count"],
        "l2": 1e-6,
    }


def _ratings_table(ratings: Mapping[str, Any], anchored: bool, level: str, cell: Any) -> str:
    """Models by rating, best first: the rating with its interval and, anchored, the win rate it predicts."""
    rows_ = []
    for m in sorted(ratings, key=lambda m: -ratings[m]["rating"]["mean"]):
        r = ratings[m]["rating"]
        row = [m, f"{r['mean']:.1f} [{r['low']:.1f}, {r['high']:.1f}]"]
        if anchored:
            row.append(cell(ratings[m]["win_rate_vs_anchor"]))
        rows_.append(row)
    return report.table(
        ["model", f"rating ({level})"] + (["win rate vs baseline"] if anchored else []), rows_
    )


def markdown(results: Mapping[str, Any]) -> str:
    """The report a person reads: win rates per language, Bradley–Terry ratings, Elo stability per K."""
    level = f"{100 * results['confidence']:g}%"
    parts = [
        f"# Pairwise battles: {len(results['models'])} models, {results['games']} judged games "
        f"({results['unparsed']} without a verdict)",
    ]

    def cell(d: Mapping[str, Any]) -> str:
        return "—" if not d.get("n") else f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    for model, by_language in results.get("win_rates", {}).items():
        table_rows = [
            [
                lang,
                cell(w["win_rate"]),
                f"{w['wins']:g}",
                f"{w['ties']:g}",
                f"{w['losses']:g}",
                w["games"],
                w["unparsed"],
            ]
            for lang, w in by_language.items()
        ]
        parts.append(f"## {model} vs {results['baseline']}: win rate ({level} bootstrap over questions)")
        parts.append(
            report.table(["language", "win rate", "wins", "ties", "losses", "games", "unparsed"], table_rows)
        )
    for key, title in (
        ("bradley_terry", "Bradley–Terry"),
        ("bradley_terry_style", "Bradley–Terry, style-controlled"),
    ):
        fit = results.get(key, {})
        if "error" in fit:
            parts.append(f"## {title}\n\nno ratings: {fit['error']}")
        elif fit:
            note = f"{fit['rounds']} bootstrap rounds, {fit['failed_rounds']} without a fit"
            if "coefficients" in fit:
                note += "; style coefficients per unit rms difference: " + ", ".join(
                    f"{k} {v:+.3f}" for k, v in fit["coefficients"].items()
                )
            parts.append(f"## {title} ({note})")
            parts.append(_ratings_table(fit["ratings"], bool(results["baseline"]), level, cell))
    if "elo" in results:
        elo_results = results["elo"]
        table_rows = []
        for k, r in elo_results["by_k"].items():
            sd = np.mean(list(r["rating_sd"].values()))
            t = r["transitivity"]
            table_rows.append(
                [k, " > ".join(r["modal_ranking"]), r["modal_ranking_share"], float(sd), t["cyclic_triples"],
                 t.get("rating_order_violations", 0)]
            )  # fmt: skip
        parts.append(
            f"## Elo over {elo_results['permutations']} random orders of {elo_results['unit_battles']} battles\n\n"
            f"Bradley–Terry (order-free) ranking: {' > '.join(elo_results['bradley_terry_ranking'])}"
        )
        parts.append(
            report.table(
                ["K", "most common ranking", "share", "mean rating sd", "cyclic triples", "order violations"],
                table_rows,
            )
        )
    return "\n\n".join(parts)
