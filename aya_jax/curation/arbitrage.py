"""Multilingual arbitrage (Odumakinde et al. 2024, arXiv 2408.14960): route each prompt to the teacher of a pool
most likely to answer it well.

Strategies (`STRATEGIES`), for prompts p_1..p_n and teachers t_1..t_T:

* `fixed` — a language -> teacher table (the paper's "fixed routing": a teacher per language family, chosen by
  what it was trained on); `*` names the teacher of every language the table lacks, and without it an unlisted
  language is an error naming the prompt.
* `reward` — every teacher answers, a reward model scores the T replies and the best is kept:
  choice(p) = argmax_t r(p, y_t(p)), the lowest-numbered teacher of equal scores (deterministic). Or a pairwise
  judge (aya_jax/evaluation/judges.py) plays a round robin instead: every ordered pair of distinct teachers is
  one game, so each pair is judged in both orders and a judge's preference for the first (or second) answer
  cancels; a game's winner scores 1 and a tie 0.5 each, slight and strong verdicts alike, an unparsed judgment
  nothing; choice(p) = argmax_t points(p, t) with the same tie-break. The paper scores with reward models; the
  round robin is this project's pairwise form of the same argmax (T (T - 1) judgments a prompt).
* `learned` — a router predicts reward routing's choice from the prompt alone, so that only one teacher answers.
  The paper's router is a fine-tuned mT5 classifier; here it is a multinomial logistic regression on a model's
  mean-pooled hidden states of the prompt (the features of aya_jax/evaluation/likelihood.py
  `mean_hidden_states`), fitted on the prompts that were reward-routed: minimise
  mean_i CE(softmax(W x_i + b), y_i) + (l2 / 2) ||W||^2 (b unpenalised), features standardised on the training
  rows, by L-BFGS (optax) to a gradient norm below `tol`. This is scikit-learn's `LogisticRegression` objective
  with C = 1 / (n * l2), which the tests check it against.
* `single` (one teacher answers everything) and `random` (a uniform teacher per prompt, seeded) — the
  paper's baselines.

With reward routing every teacher's reply to every prompt is scored, so what each other strategy *would* have
scored on the same prompts costs nothing more: `strategy_scores` reports it, per strategy, beside the choice
counts per language x teacher (`choice_table`); and the best and worst reply of each prompt are a preference
pair ranked by the scorer (`ranked_pairs`), the offline preference data of the Aya Expanse recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aya_jax.data import languages
from aya_jax.evaluation import battles, judges

STRATEGIES = ("fixed", "reward", "learned", "single", "random")
ANY_LANGUAGE = "*"


def parse_table(entries: Sequence[str], teachers: Sequence[str], field: str) -> dict[str, int]:
    """{language code (as aya_jax/data/languages.py resolves it) or "*": teacher number} from "language=teacher"
    entries."""
    table: dict[str, int] = {}
    for entry in entries:
        language, _, teacher = str(entry).partition("=")
        language, teacher = language.strip(), teacher.strip()
        if not language or teacher not in teachers:
            raise ValueError(
                f"{field}: {entry!r} is not language=teacher with a teacher of the pool ({', '.join(teachers)})"
            )
        if language != ANY_LANGUAGE:
            known = languages.maybe_resolve(language)
            if known is None:
                raise ValueError(f"{field}: {entry!r}: {language!r} is not a known language")
            language = known.code  # "fr", "fra" and "French" are one language
        if language in table:
            raise ValueError(f"{field}: language {language!r} appears twice")
        table[language] = list(teachers).index(teacher)
    if not table:
        raise ValueError(
            f"{field}: fixed routing needs language=teacher entries (and '*=teacher' for the rest)"
        )
    return table


def route_fixed(languages: Sequence[str], table: Mapping[str, int], where: Sequence[str]) -> np.ndarray:
    """The table's teacher for each prompt's language; ValueError naming the first prompt it has none for."""
    out = np.zeros(len(languages), np.int64)
    for i, language in enumerate(languages):
        teacher = table.get(language, table.get(ANY_LANGUAGE))
        if teacher is None:
            raise ValueError(
                f"{where[i]}: language {language!r} has no teacher in the routing table "
                f"(has: {', '.join(sorted(table))}; add '{ANY_LANGUAGE}=<teacher>' for the rest)"
            )
        out[i] = teacher
    return out


def route_random(n: int, teachers: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, teachers, size=n)


def best(scores: np.ndarray) -> np.ndarray:
    """Reward routing: argmax over teachers (axis 1) of each prompt's scores, the first of equals."""
    scores = np.asarray(scores, np.float64)
    if not np.all(np.isfinite(scores)):
        row = int(np.flatnonzero(~np.all(np.isfinite(scores), axis=1))[0])
        raise ValueError(f"reward routing: prompt {row} has a non-finite score {scores[row].tolist()}")
    return np.argmax(scores, axis=1)


def round_robin(
    question_ids: Sequence[str],
    prompts: Sequence[str],
    replies: Sequence[Sequence[str]],
    teachers: Sequence[str],
    languages: Sequence[str] = (),
) -> list[judges.PairwiseItem]:
    """The judged games of pairwise routing: for each prompt (replies[i][t] is teacher t's reply) every ordered
    pair of distinct teachers — game 1 with the lower-numbered teacher first, game 2 the same pair swapped."""
    items = []
    for i, (qid, prompt) in enumerate(zip(question_ids, prompts, strict=True)):
        language = languages[i] if languages else ""
        for a in range(len(teachers)):
            for b in range(a + 1, len(teachers)):
                ya, yb = replies[i][a], replies[i][b]
                items.append(judges.PairwiseItem(qid, prompt, ya, yb, teachers[a], teachers[b], 1, language))
                items.append(judges.PairwiseItem(qid, prompt, yb, ya, teachers[b], teachers[a], 2, language))
    return items


def round_robin_points(
    records: Sequence[Mapping], question_ids: Sequence[str], teachers: Sequence[str]
) -> np.ndarray:
    """[prompts, teachers] round-robin points from judgment records (`judges.judge_pairs`' output): per game
    the winner 1, a tie 0.5 to each, an unparsed judgment nothing."""
    row = {q: i for i, q in enumerate(question_ids)}
    column = {t: j for j, t in enumerate(teachers)}
    points = np.zeros((len(question_ids), len(teachers)))
    played, _ = battles.battles_from_judgments(records)
    for game in played:
        i = row[game.question_id]
        points[i, column[game.model_a]] += game.score_a
        points[i, column[game.model_b]] += 1.0 - game.score_a
    return points


def ranked_pairs(scores: np.ndarray) -> list[tuple[int, int, int]]:
    """(prompt row, best teacher, worst teacher) of every prompt whose best score beats its worst (the first of
    equals on either side): a reward model's (or judge's) ranking of the teachers' replies as preference pairs,
    the offline DPO data of the Aya Expanse recipe."""
    scores = np.asarray(scores, np.float64)
    best, worst = np.argmax(scores, axis=1), np.argmin(scores, axis=1)
    rows = np.arange(len(scores))
    return [(int(i), int(best[i]), int(worst[i])) for i in rows if scores[i, best[i]] > scores[i, worst[i]]]


# ------------------------------------------------------------------------------------------------------------
# The learned router
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Router:
    mean: np.ndarray  # [dim] feature standardisation (of the training rows)
    scale: np.ndarray  # [dim]
    weights: np.ndarray  # [dim, teachers] on standardised features
    bias: np.ndarray  # [teachers]
    iterations: int
    grad_norm: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        return z @ self.weights + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)


def fit_router(
    x: np.ndarray, y: np.ndarray, teachers: int, *, l2: float = 1e-2, max_iter: int = 500, tol: float = 1e-6
) -> Router:
    """The learned router (module docstring) on features x [n, dim] and reward-routing choices y [n]."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"router: features {x.shape} and {y.shape} choices do not match")
    if y.min() < 0 or y.max() >= teachers:
        raise ValueError(f"router: choices outside [0, {teachers})")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = jnp.asarray((x - mean) / scale, jnp.float32)
    onehot = jax.nn.one_hot(jnp.asarray(y), teachers, dtype=jnp.float32)

    def loss(params):
        logits = z @ params["w"] + params["b"]
        ce = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=1))
        return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)

    params = {"w": jnp.zeros((x.shape[1], teachers), jnp.float32), "b": jnp.zeros((teachers,), jnp.float32)}
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(params, updates), state, optax.tree.norm(grad)

    state = solver.init(params)
    iterations, norm = 0, float("inf")
    while iterations < max_iter and norm > tol:
        params, state, grad_norm = step(params, state)
        iterations, norm = iterations + 1, float(grad_norm)
    return Router(mean, scale, np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64),
                  iterations, norm)  # fmt: skip


# ------------------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------------------


def choice_table(
    languages: Sequence[str], choice: np.ndarray, teachers: Sequence[str]
) -> dict[str, dict[str, int]]:
    """{language: {teacher: prompts routed to it}}, every teacher listed."""
    out: dict[str, dict[str, int]] = {}
    for language, t in zip(languages, np.asarray(choice).tolist(), strict=True):
        row = out.setdefault(language, dict.fromkeys(teachers, 0))
        row[teachers[t]] += 1
    return dict(sorted(out.items()))


def strategy_scores(scores: np.ndarray, routes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{strategy: the score of the teacher it picks, per prompt} on a [prompts, teachers] score matrix."""
    scores = np.asarray(scores, np.float64)
    rows = np.arange(len(scores))
    return {name: scores[rows, np.asarray(route)] for name, route in routes.items()}
