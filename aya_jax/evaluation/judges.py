"""Pairwise judges for win rates (aya_jax/evaluation/battles.py): which of two answers to a prompt is better.

A judge is a callable `judge(items) -> list[str]` with a `name` and a `batch_size`: for each `PairwiseItem` (a
prompt, answer A, answer B) the judgment text, which should end in a verdict label `[[A>>B]]` ... `[[B>>A]]`
(`battles.LABELS`); a text without one is counted as unparsed by `battles.battles_from_judgments`.

* `EndpointJudge` — an LLM behind any OpenAI-compatible chat-completions endpoint (the `serve` job, vLLM, a
  hosted API), called with the official `openai` client: base URL, model, and the *name* of the environment
  variable holding the API key. The key is read from the environment when the judge is made; it is never
  logged, printed, written, or shown in the judge's repr. A batch's requests run concurrently (`batch_size` at
  a time); HTTP 429, 5xx, connection errors and timeouts are retried with exponential backoff (base x 2^attempt,
  capped, times a jitter in [0.5, 1)), any other error status fails at once with its code and the item named.
  On several hosts process 0 alone sends the requests and shares the judgments (`sharding.on_first_process`).
  The prompt follows Arena-Hard-Auto's pairwise judge (Li et al. 2024, arXiv 2406.11939) in our own words: the
  judge first answers the prompt itself, then weighs both answers against its own for correctness,
  helpfulness, relevance and concision, then ends with exactly one label. Temperature 0. With
  `messages=choice_messages` it asks instead for `[[A]]` or `[[B]]` (`parse_choice`): the generative-judge form
  of reward benchmarks (aya_jax/evaluation/m_rewardbench.py `evaluate_with_judge`).
* `ModelJudge` — an LLM in this process (any checkpoint the project reads, through a `chat` callable), with
  the same prompt; no server needed.
* `RewardJudge` — a reward model's scores (`reward(prompts, completions) -> scores`, the callables of
  aya_jax/evaluation/reward_scores.py) turned into verdicts by the difference d = r(A) - r(B):
  |d| < tie -> [[A=B]]; tie <= |d| < strong -> [[A>B]] / [[B>A]]; |d| >= strong -> [[A>>B]] / [[B>>A]].
  Defaults tie = 0.1 and strong = 1.0, in reward units: for a Bradley–Terry reward model (the `reward` job) d is
  the log-odds that A is preferred, so a tie is P(A preferred) within [0.475, 0.525] and a strong verdict beyond
  0.731 (or below 0.269). A cheap judge of the models' own kind, useful where no strong LLM judge is at hand —
  and as biased as its reward model.

`judge_pairs` keeps every judgment in a `rows.KeyedLog` (JSONL, appended, flushed and fsynced as each batch
arrives), keyed by (judge, question id, game, model A, model B), and asks the judge only for what the log
lacks, so an interrupted run resumes and a rerun requests nothing it already has. A torn last line (a kill
mid-write) is cut off on load and that judgment requested again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from aya_jax import sharding
from aya_jax.evaluation import rows

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PairwiseItem:
    """One game: `prompt` with `answer_a` (by `model_a`) shown first and `answer_b` (by `model_b`) second."""

    question_id: str
    prompt: str
    answer_a: str
    answer_b: str
    model_a: str
    model_b: str
    game: int = 1
    language: str = ""

    def key(self, judge: str) -> str:
        return json.dumps([judge, self.question_id, self.game, self.model_a, self.model_b])


class JudgeError(RuntimeError):
    """A judgment could not be obtained (after the retries a failure allows)."""


# ------------------------------------------------------------------------------------------------------------
# The judge prompt
# ------------------------------------------------------------------------------------------------------------

SYSTEM_PROMPT = """\
You are an impartial judge comparing two AI assistants' answers to the user prompt shown below.

First write your own answer to the prompt. Then compare both assistants' answers with yours: point out and \
correct any mistakes or inaccurate information, and judge whether each answer is helpful (it does what the \
prompt asks; where the prompt is ambiguous, asking for clarification is better than guessing), relevant (every \
part of it concerns the prompt) and concise (clear, not verbose). Consider creativity where it matters and \
note important information an answer leaves out. The answers may be in any language: judge them in the \
language of the prompt. Do not let the order of the answers, their length or the assistants' names sway you.

End with exactly one final verdict label, the last thing you write:
1. Assistant A is significantly better: [[A>>B]]
2. Assistant A is slightly better: [[A>B]]
3. Tie, relatively the same: [[A=B]]
4. Assistant B is slightly better: [[B>A]]
5. Assistant B is significantly better: [[B>>A]]

Example output: "My final verdict is: [[A>B]]"."""


def judge_messages(item: PairwiseItem) -> list[dict[str, str]]:
    """The chat messages asking for `item`'s verdict."""
    user = (
        f"<|User Prompt|>\n{item.prompt}\n\n"
        f"<|The Start of Assistant A's Answer|>\n{item.answer_a}\n<|The End of Assistant A's Answer|>\n\n"
        f"<|The Start of Assistant B's Answer|>\n{item.answer_b}\n<|The End of Assistant B's Answer|>"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


CHOICE_PROMPT = """\
You are an impartial judge. Below are a user's question and the responses of two AI assistants, A and B. \
Decide which response is better: the one that follows the user's instructions and answers the question more \
helpfully, accurately, harmlessly and to the point. The question and responses may be in any language; judge \
them in the language of the question. Do not let the order of the responses, their length or the assistants' \
names sway you.

Explain your reasoning briefly, then give your verdict as the last thing you write: exactly "[[A]]" if \
assistant A is better, or "[[B]]" if assistant B is better."""

_CHOICE = re.compile(r"\[\[\s*([AB])\s*\]\]")


def choice_messages(item: PairwiseItem) -> list[dict[str, str]]:
    """The chat messages asking which of `item`'s two responses is better, answered with [[A]] or [[B]] (the
    generative-judge form of reward benchmarks, e.g. M-RewardBench)."""
    user = (
        f"[User Question]\n{item.prompt}\n\n"
        f"[The Start of Assistant A's Answer]\n{item.answer_a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{item.answer_b}\n[The End of Assistant B's Answer]"
    )
    return [{"role": "system", "content": CHOICE_PROMPT}, {"role": "user", "content": user}]


def parse_choice(judgment: str | None) -> str | None:
    """ "A" or "B": the last [[A]] / [[B]] in a judgment, or None when it has neither."""
    found = _CHOICE.findall(judgment or "")
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------------------------
# Judges
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EndpointJudge:
    """An LLM judge behind an OpenAI-compatible endpoint (module docstring)."""

    base_url: str
    model: str
    api_key_env: str = ""  # the NAME of the variable holding the key; "" for endpoints that need none
    batch_size: int = 8  # concurrent requests
    max_tokens: int = 2048
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    name: str = ""
    # item -> chat messages: judge_messages (the five Arena-Hard labels) or choice_messages ([[A]] / [[B]])
    messages: Callable[[PairwiseItem], list[dict[str, str]]] = dataclasses.field(default=None, repr=False)
    _client: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        import openai  # the `eval` extra: only endpoint judges need it

        if self.batch_size < 1:
            raise ValueError(f"judge batch_size must be >= 1, got {self.batch_size}")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"the environment variable {self.api_key_env!r} is not set")
        key = os.environ[self.api_key_env] if self.api_key_env else "EMPTY"
        self.name = self.name or f"{self.model}@{self.base_url}"
        self.messages = self.messages or judge_messages
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=0
        )

    def __call__(self, items: Sequence[PairwiseItem]) -> list[str]:
        got = sharding.on_first_process(lambda: self._ask(items))  # one request per item, whatever the hosts
        if got["error"] is not None:
            raise JudgeError(got["error"])
        return got["judgments"]

    def _ask(self, items: Sequence[PairwiseItem]) -> dict[str, Any]:
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.batch_size) as pool:
                return {"judgments": list(pool.map(self._judge_one, items)), "error": None}
        except JudgeError as e:
            return {"judgments": None, "error": str(e)}

    def _judge_one(self, item: PairwiseItem) -> str:
        response = endpoint_request(
            self._openai,
            lambda: self._client.chat.completions.create(
                model=self.model, messages=self.messages(item), temperature=0.0, max_tokens=self.max_tokens
            ),
            f"judge {self.name}: question {item.question_id} game {item.game}",
            max_retries=self.max_retries, backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s,
        )  # fmt: skip
        return response.choices[0].message.content or ""


def endpoint_request(
    openai: Any,
    call: Callable[[], Any],
    what: str,
    *,
    max_retries: int,
    backoff_s: float,
    max_backoff_s: float,
    error: type[Exception] | None = None,
) -> Any:
    """`call()` (one request of the `openai` client), retried on HTTP 429, 5xx, connection errors and timeouts
    with exponential backoff (backoff_s x 2^attempt, capped at max_backoff_s, times a jitter in [0.5, 1)); any
    other error status fails at once. Failures raise `error` (JudgeError) as one line starting with `what`."""
    error = error or JudgeError
    transient = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)  # + timeouts
    for attempt in range(max_retries + 1):
        try:
            return call()
        except transient as e:
            if attempt == max_retries:
                raise error(f"{what}: {type(e).__name__} after {attempt + 1} attempts") from None
            delay = min(max_backoff_s, backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            log.info("%s: %s, retrying in %.1f s", what, type(e).__name__, delay)
            time.sleep(delay)
        except openai.APIStatusError as e:
            body = e.body.get("message", "") if isinstance(e.body, dict) else ""
            raise error(f"{what}: HTTP {e.status_code}" + (f" ({body})" if body else "")) from None
    raise AssertionError("unreachable")


@dataclasses.dataclass
class ModelJudge:
    """An LLM judge in this process: `chat(conversations) -> replies` (e.g. `pretrained.ChatModel`, an aya_jax or
    Hugging Face checkpoint on the mesh, greedy), asked the same prompt as an endpoint judge."""

    chat: Callable[[Sequence[list[dict[str, str]]]], list[str]] = dataclasses.field(repr=False)
    name: str = "model"
    batch_size: int = 16  # items per call of `chat` (its own batching runs inside)
    messages: Callable[[PairwiseItem], list[dict[str, str]]] = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.messages = self.messages or judge_messages

    def __call__(self, items: Sequence[PairwiseItem]) -> list[str]:
        return list(self.chat([self.messages(it) for it in items]))


@dataclasses.dataclass
class RewardJudge:
    """Verdicts from a reward model's score difference (module docstring)."""

    reward: Callable[[Sequence[str], Sequence[str]], np.ndarray]
    tie: float = 0.1
    strong: float = 1.0
    batch_size: int = 32
    name: str = "reward-model"

    def __post_init__(self) -> None:
        if not 0.0 <= self.tie < self.strong:
            raise ValueError(
                f"reward judge thresholds: need 0 <= tie < strong, got tie {self.tie}, strong {self.strong}"
            )

    def __call__(self, items: Sequence[PairwiseItem]) -> list[str]:
        prompts = [it.prompt for it in items]
        a = np.asarray(self.reward(prompts, [it.answer_a for it in items]), dtype=np.float64)
        b = np.asarray(self.reward(prompts, [it.answer_b for it in items]), dtype=np.float64)
        return [
            f"reward A {x:.6g}, B {y:.6g}: [[{verdict_of_difference(x - y, self.tie, self.strong)}]]"
            for x, y in zip(a, b, strict=True)
        ]


def verdict_of_difference(d: float, tie: float, strong: float) -> str:
    """The label for a score difference d = score(A) - score(B) (RewardJudge's thresholds)."""
    if not np.isfinite(d):
        raise ValueError(f"reward judge: non-finite score difference {d}")
    if abs(d) < tie:
        return "A=B"
    side = "A>B" if d > 0 else "B>A"
    return side.replace(">", ">>") if abs(d) >= strong else side


# ------------------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------------------


def _batches(items: Sequence[PairwiseItem], size: int) -> Iterator[Sequence[PairwiseItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def judge_pairs(
    items: Sequence[PairwiseItem],
    judge: Callable[[Sequence[PairwiseItem]], list[str]],
    cache: rows.KeyedLog,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """(a judgment record per item, in order; how many the judge was asked for now). Records carry the item's
    identity (question_id, game, language, model_a, model_b), the judge's name and its `judgment` text — the
    input of `battles.battles_from_judgments`."""
    name = judge.name
    todo = [it for it in items if it.key(name) not in cache]
    if len(todo) < len(items):
        log.info(
            "judge %s: %d of %d judgments cached, %d to request",
            name,
            len(items) - len(todo),
            len(items),
            len(todo),
        )
    for batch in _batches(todo, max(1, int(judge.batch_size))):
        texts = judge(batch)
        cache.append(
            [
                {
                    "key": it.key(name),
                    "judge": name,
                    "question_id": it.question_id,
                    "game": it.game,
                    "language": it.language,
                    "model_a": it.model_a,
                    "model_b": it.model_b,
                    "judgment": text,
                }
                for it, text in zip(batch, texts, strict=True)
            ]
        )
        if progress is not None:
            progress(len(batch))
    return [cache.records[it.key(name)] for it in items], len(todo)


def two_games(
    question_id: str,
    prompt: str,
    model: str,
    answer: str,
    baseline: str,
    baseline_answer: str,
    language: str = "",
) -> list[PairwiseItem]:
    """The Arena-Hard protocol's two games for one question: the baseline as A in game 1, as B in game 2."""
    return [
        PairwiseItem(question_id, prompt, baseline_answer, answer, baseline, model, 1, language),
        PairwiseItem(question_id, prompt, answer, baseline_answer, model, baseline, 2, language),
    ]
