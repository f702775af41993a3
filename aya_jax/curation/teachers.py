"""A pool of teachers that write synthetic replies (multilingual arbitrage, arXiv 2408.14960; active inheritance,
arXiv 2407.01490), and the append-only log that makes generating from them resumable.

A teacher is one config entry, `"name=source[;option=value...]"`:

* `source` a path — an aya_jax run (workdir, checkpoints/, a step directory), a merge's output or a Hugging Face
  directory — generated in this process on the mesh. The caller loads such teachers one at a time and frees each
  before the next, so a pool of several large models never needs more than one of them in memory.
* `source` an `http://` / `https://` URL — an OpenAI-compatible chat-completions endpoint (the `serve` job, vLLM,
  a hosted API) called with the official `openai` client; `model=` names the served model and `api_key_env=` the
  *name* of the environment variable holding its key (never the key itself). Requests run `concurrency` at a
  time; 429, 5xx, connection errors and timeouts are retried with backoff (aya_jax/evaluation/judges.py
  `endpoint_request`), any other failure stops with one line naming the teacher and the prompt. On several
  hosts, process 0 alone sends the requests and shares the replies with the others (`sharding.on_first_process`):
  an endpoint is asked once per prompt however many hosts run the job.

Options, each defaulting to the section's own field: `template` (how a prompt reaches a local model: auto |
cohere | none), `system` (a system turn), `temperature`, `top_k`, `top_p`, `max_new_tokens`; local teachers also
`tokenizer` (a tokenizer.json, as the sections' `tokenizer` fields); endpoints also `model`, `api_key_env`,
`concurrency`.

`fill` asks a teacher for k samples of every prompt its log lacks. The prompts are cut into fixed chunks (by
their order in the pool), and each sample's random stream is keyed by (prompt number, sample number): a rerun
after a kill regenerates only chunks with a missing record (a local teacher is asked for the whole chunk, so
that every row meets the batch it met in an uninterrupted run; an endpoint only for the missing prompts), draws
the same samples, and appends only what is missing. Each chunk is appended (flushed, fsynced) before the next
starts, and the prompts an endpoint did answer in a chunk where another failed are appended before the error
stops the run: a failing endpoint loses none of the generations already made.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from aya_jax import sharding
from aya_jax.evaluation import judges, rows

log = logging.getLogger(__name__)

TEMPLATES = ("auto", "cohere", "none")
OPTIONS = ("template", "system", "temperature", "top_k", "top_p", "max_new_tokens", "tokenizer", "model",
           "api_key_env", "concurrency")  # fmt: skip


class TeacherError(ValueError):
    """A teacher could not be loaded or could not answer (the message names it)."""


class PartlyAnswered(TeacherError):
    """Some prompts of a call failed: `samples` holds the others' replies (None where it failed), so that
    nothing already generated is lost."""

    def __init__(self, error: TeacherError, samples: list[list[str] | None]):
        super().__init__(str(error))
        self.samples = samples


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    name: str
    source: str
    template: str = "auto"
    system: str = ""
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    tokenizer: str = ""  # local teachers: a tokenizer.json overriding the checkpoint's own
    model: str = ""  # endpoints: the served model's name
    api_key_env: str = ""
    concurrency: int = 8

    @property
    def is_endpoint(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    def sampling(self) -> dict[str, Any]:
        """The options a sample depends on (what a log's records were made with)."""
        return {
            "source": self.source, "template": self.template, "system": self.system,
            "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens, "tokenizer": self.tokenizer, "model": self.model,
        }  # fmt: skip


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TeacherSpec)}


def parse(entries: Sequence[str], field: str, **defaults: Any) -> list[TeacherSpec]:
    """The teacher entries of `field` (module docstring) with `defaults` for the options they omit; ValueError
    naming the field and the entry otherwise."""
    out: list[TeacherSpec] = []
    for entry in entries:
        head, *options = str(entry).split(";")
        name, _, source = head.partition("=")
        name, source = name.strip(), source.strip()
        if not name or not source:
            raise ValueError(f"{field}: {entry!r} is not name=source[;option=value...]")
        if not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ValueError(f"{field}: teacher name {name!r}: use letters, digits, '-', '_' or '.'")
        values: dict[str, Any] = {k: v for k, v in defaults.items() if k in OPTIONS}
        for option in options:
            key, eq, value = option.partition("=")
            key = key.strip()
            if not eq or key not in OPTIONS:
                raise ValueError(
                    f"{field}: teacher {name}: unknown option {option!r} (known: {', '.join(OPTIONS)})"
                )
            kind = type(_DEFAULTS[key])
            try:
                values[key] = kind(value.strip())
            except ValueError:
                raise ValueError(
                    f"{field}: teacher {name}: {key}={value!r} is not a {kind.__name__}"
                ) from None
        spec = TeacherSpec(name=name, source=source, **values)
        _check(spec, field)
        out.append(spec)
    names = [t.name for t in out]
    if len(set(names)) < len(names):
        raise ValueError(f"{field}: teacher names repeat: {names}")
    return out


def _check(t: TeacherSpec, field: str) -> None:
    where = f"{field}: teacher {t.name}"
    if t.template not in TEMPLATES:
        raise ValueError(f"{where}: template {t.template!r} is none of {', '.join(TEMPLATES)}")
    if t.temperature < 0 or not math.isfinite(t.temperature):
        raise ValueError(f"{where}: temperature {t.temperature} must be >= 0")
    if t.top_k < 0 or not 0 < t.top_p <= 1:
        raise ValueError(f"{where}: top_k {t.top_k} must be >= 0 and top_p {t.top_p} in (0, 1]")
    if t.max_new_tokens < 1 or t.concurrency < 1:
        raise ValueError(f"{where}: max_new_tokens and concurrency must be >= 1")
    if t.is_endpoint and not t.model:
        raise ValueError(f"{where}: an endpoint needs model=<the served model's name>")
    if not t.is_endpoint and not os.path.exists(t.source):
        raise ValueError(f"{where}: no checkpoint at {t.source} (a path, or an http(s):// endpoint)")


# A teacher as the curation code sees it: (prompts, their row ids, k) -> k replies per prompt.
Generate = Callable[[Sequence[str], Sequence[int], int], list[list[str]]]


class EndpointTeacher:
    """k chat-completion samples per prompt from an OpenAI-compatible endpoint (`n=k`, `seed` = the prompt's row
    id, so that a server which honours seeds answers a rerun alike)."""

    def __init__(
        self, spec: TeacherSpec, *, timeout_s: float = 300.0, max_retries: int = 5, backoff_s: float = 1.0
    ):
        import openai  # the `eval` extra: only endpoint teachers need it

        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise TeacherError(
                f"teacher {spec.name}: the environment variable {spec.api_key_env!r} is not set"
            )
        key = os.environ[spec.api_key_env] if spec.api_key_env else "EMPTY"
        self.spec, self.openai = spec, openai
        self.client = openai.OpenAI(base_url=spec.source, api_key=key, timeout=timeout_s, max_retries=0)
        self.max_retries, self.backoff_s = int(max_retries), float(backoff_s)
        self.new_tokens = 0

    def _one(self, prompt: str, row_id: int, k: int, where: str) -> tuple[list[str], int]:
        s = self.spec
        messages = ([{"role": "system", "content": s.system}] if s.system else []) + [
            {"role": "user", "content": prompt}
        ]
        options: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p}
        if s.top_k:
            options["extra_body"] = {"top_k": s.top_k}
        response = judges.endpoint_request(
            self.openai,
            lambda: self.client.chat.completions.create(
                model=s.model, messages=messages, n=k, seed=int(row_id), max_tokens=s.max_new_tokens, **options
            ),
            f"teacher {s.name} ({s.source}): prompt {where}",
            max_retries=self.max_retries, backoff_s=self.backoff_s, max_backoff_s=60.0, error=TeacherError,
        )  # fmt: skip
        if len(response.choices) != k:
            raise TeacherError(f"teacher {s.name}: prompt {where}: {len(response.choices)} choices for n={k}")
        tokens = int(response.usage.completion_tokens or 0) if response.usage is not None else 0
        return [c.message.content or "" for c in sorted(response.choices, key=lambda c: c.index)], tokens

    def __call__(
        self, prompts: Sequence[str], row_ids: Sequence[int], k: int, where: Sequence[str] = ()
    ) -> list[list[str]]:
        where = list(where) or [str(r) for r in row_ids]
        got = sharding.on_first_process(lambda: self._ask(prompts, row_ids, k, where))
        self.new_tokens += got["tokens"]
        if got["error"] is not None:
            raise PartlyAnswered(TeacherError(got["error"]), got["samples"])
        return got["samples"]

    def _ask(self, prompts: Sequence[str], row_ids: Sequence[int], k: int, where: Sequence[str]) -> dict:
        """The replies (None where a prompt failed), their tokens and the first failure, as one JSON value."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            futures = [
                pool.submit(self._one, p, r, k, w) for p, r, w in zip(prompts, row_ids, where, strict=True)
            ]
        out: list[list[str] | None] = []
        failed, tokens = None, 0
        for future in futures:  # counted here, in one thread
            try:
                samples, n = future.result()
                out.append(samples)
                tokens += n
            except TeacherError as e:
                out.append(None)
                failed = failed or str(e)
        return {"samples": out, "tokens": tokens, "error": failed}


def chat_samples(
    chat: Any, prompts: Sequence[str], row_ids: Sequence[int], k: int, system: str = ""
) -> list[list[str]]:
    """k samples per prompt from an in-process `pretrained.ChatModel`: each prompt repeated k times, sample j of
    the prompt numbered r keyed by r * k + j (the same sample in whatever batch it is drawn)."""
    head = [{"role": "system", "content": system}] if system else []
    conversations = [[*head, {"role": "user", "content": p}] for p in prompts for _ in range(k)]
    keys = [int(r) * k + j for r in row_ids for j in range(k)]
    replies = chat(conversations, row_ids=keys)
    return [replies[i * k : (i + 1) * k] for i in range(len(prompts))]


def missing(log_: rows.KeyedLog, keys: Sequence[str]) -> int:
    return sum(key not in log_ for key in keys)


def fill(
    log_: rows.KeyedLog,
    teacher: str,
    keys: Sequence[str],
    prompts: Sequence[str],
    row_ids: Sequence[int],
    k: int,
    generate: Callable[[Sequence[str], Sequence[int], Sequence[str]], list[list[str]]],
    *,
    chunk: int,
    whole_chunks: bool = True,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Ask `generate(prompts, row_ids, keys)` for k samples of each prompt whose key `log_` lacks, `chunk`
    prompts at a time (fixed chunks of the given order: module docstring); returns how many prompts were
    generated now. Records: {key, teacher, samples}. `whole_chunks`: a chunk with a missing prompt is asked
    whole (a local model: a row's numerics then match its batch's in an uninterrupted run); False (an endpoint,
    whose requests are independent): only the missing prompts. A call that fails part-way (`PartlyAnswered`)
    keeps the replies it got before the error goes on."""
    made = 0
    for start in range(0, len(keys), chunk):
        part = list(range(start, min(start + chunk, len(keys))))
        todo = [i for i in part if keys[i] not in log_]
        if not todo:
            continue
        asked = part if whole_chunks else todo
        try:
            samples = generate(
                [prompts[i] for i in asked], [row_ids[i] for i in asked], [keys[i] for i in asked]
            )
        except PartlyAnswered as e:
            done = [(i, s) for i, s in zip(asked, e.samples, strict=True) if s is not None and i in todo]
            log_.append([{"key": keys[i], "teacher": teacher, "samples": s} for i, s in done])
            raise
        if len(samples) != len(asked) or any(len(s) != k for s in samples):
            raise TeacherError(
                f"teacher {teacher}: {len(samples)} sample lists for {len(asked)} prompts (k={k})"
            )
        by_index = dict(zip(asked, samples, strict=True))
        log_.append([{"key": keys[i], "teacher": teacher, "samples": by_index[i]} for i in todo])
        made += len(todo)
        if progress is not None:
            progress(len(todo))
    return made
