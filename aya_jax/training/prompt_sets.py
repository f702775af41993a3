"""Prompts for online training (RLOO, online DPO): text, answer language and reference, tokenised once.

    train = load_prompt_set(config.data, "", "train", codec, max_tokens=32)       # the embedded default data
    held_out = load_prompt_set(config.data, "", "validation", codec, max_tokens=32)
    tokens, start = train.batch(indices)                                          # left-padded [B, P], [B]

Sources: a JSONL file (one object per line: `prompt`, `language_code` (ISO 639-1/3, or `language`), optional
`reference`) or, when no file is given, the embedded default data's split (aya_jax/data/default_data.py: its
`inputs` are the prompts, `targets` the references, `language_code` the answer language). Rows whose language is
unknown to aya_jax/data/languages.py are an error naming the file and line. A prompt longer than `max_tokens`
keeps its last `max_tokens` tokens (the question is at the end), and every batch is padded to exactly
`max_tokens` columns, so one compiled sampler serves the whole run.

`order(position, count, seed)` is the data stream: prompt indices for stream positions [position,
position + count), epoch by epoch, each epoch a fresh permutation drawn from (seed, epoch). It depends on
nothing but its arguments, so a resumed run reads exactly the prompts the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from aya_jax import rewards, sampling
from aya_jax.data import default_data, languages


@dataclasses.dataclass
class PromptSet:
    infos: list[rewards.PromptInfo]
    tokens: list[list[int]]  # each at most max_tokens long
    max_tokens: int
    pad_id: int
    source: str

    def __len__(self) -> int:
        return len(self.infos)

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded prompt tokens [B, max_tokens] int32 and the first real slot of each row [B]."""
        tokens = np.full((len(indices), self.max_tokens), self.pad_id, np.int32)
        start = np.zeros((len(indices),), np.int32)
        for row, i in enumerate(indices):
            t = self.tokens[int(i)]
            tokens[row, self.max_tokens - len(t) :] = t
            start[row] = self.max_tokens - len(t)
        return tokens, start

    def held_out(self, count: int, seed: int, multiple: int) -> np.ndarray:
        """A fixed random choice of `count` prompts (fewer if the set is smaller), rounded down to a multiple of
        `multiple` (the data-parallel size), for evaluations that must see the same prompts every time."""
        n = min(count, len(self)) // multiple * multiple
        return np.random.default_rng([seed, 1]).permutation(len(self))[:n]

    def order(self, position: int, count: int, seed: int) -> np.ndarray:
        """Prompt indices of stream positions [position, position + count) (see the module docstring)."""
        n = len(self)
        out = np.empty((count,), np.int64)
        perms: dict[int, np.ndarray] = {}
        for j, pos in enumerate(range(position, position + count)):
            epoch = pos // n
            if epoch not in perms:
                perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
            out[j] = perms[epoch][pos % n]
        return out


def _rows_from_jsonl(path: pathlib.Path) -> list[tuple[str, str, str | None, str]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not JSON ({e.msg})") from None
        code = row.get("language_code", row.get("language"))
        if not isinstance(row.get("prompt"), str) or not isinstance(code, str):
            raise ValueError(
                f"{path}:{line_no}: needs string fields 'prompt' and 'language_code' (or 'language')"
            )
        reference = row.get("reference")
        rows.append(
            (row["prompt"], code, reference if isinstance(reference, str) else None, f"{path}:{line_no}")
        )
    return rows


def _rows_from_default_data(data_config: Any, split: str) -> list[tuple[str, str, str | None, str]]:
    paths = default_data.split_paths(data_config)
    if split not in paths:
        raise ValueError(f"split {split!r}: the embedded default data has splits {sorted(paths)}")
    rows = []
    with open(paths[split], encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                r = json.loads(line)
                rows.append((r["inputs"], r["language_code"], r["targets"], f"{paths[split]}:{line_no}"))
    return rows


def load_prompt_set(
    data_config: Any,
    path: str,
    split: str,
    codec: Any,
    *,
    max_tokens: int,
    chat: bool = False,
    field: str = "config.rloo.prompts_file",
) -> PromptSet:
    """Prompts from the JSONL `path`, or from the embedded default data's `split` when `path` is empty.
    `chat`: wrap each as one user turn of the Cohere chat template, ready for the reply."""
    if path:
        file = pathlib.Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{field}: no file at {path}")
        rows, source = _rows_from_jsonl(file), str(file)
    else:
        rows, source = _rows_from_default_data(data_config, split), f"embedded default data ({split})"
    infos, tokens = [], []
    for text, code, reference, where in rows:
        lang = languages.maybe_lookup(code)
        if lang is None:
            raise ValueError(f"{where}: unknown language code {code!r}")
        if chat:
            ids = codec.encode(sampling.cohere_chat_prompt(text), False)[-max_tokens:]
        else:
            ids = codec.encode(text, True)[-max_tokens:]
        if ids:
            infos.append(rewards.PromptInfo(text=text, language_code=lang.code, reference=reference))
            tokens.append([int(t) for t in ids])
    if not infos:
        raise ValueError(f"{field}: {source} holds no prompt")
    return PromptSet(infos, tokens, int(max_tokens), int(codec.pad_id), source)
