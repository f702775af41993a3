"""Reward functions on real models for reward benchmarks (M-RewardBench, aya_jax/evaluation/m_rewardbench.py):
callables `reward(prompts, completions) -> np.ndarray [n]`, the scalar score of each (prompt, completion).

* `ClassifierReward` — a reward model trained by the `reward` job (aya_jax/models/reward.py, loaded with
  `pretrained.load_reward_model`): the scalar head on the state of the row's last real token.
* `ImplicitReward` — the DPO implicit reward of a policy against its reference (Rafailov et al. 2023, arXiv
  2305.18290, eq. 5 up to the prompt-only β log Z(x), which cancels between two answers to one prompt):

      r(x, y) = β (log π(y | x) - log π_ref(y | x))        log π(y | x) = Σ over the completion's tokens

  M-RewardBench (Gureja et al., arXiv 2410.15522) evaluates DPO-trained models as such "implicit RMs", with
  RewardBench's code (allenai/reward-bench `rewardbench/dpo.py`, `DPOInference.inference_step`), which scores
  Σ log π - Σ log π_ref over the response tokens without β — the same ranking, β > 0 only rescales.

Text formatting and truncation are those of the training jobs' preference pipeline, token for token, so that the
score of a pair here is the score the reward job's held-out evaluation gave it (and the implicit reward the one
the DPO loss saw): a model is only calibrated on what it was trained on.

* Chat format (`chat=True`, `config.data.format = "chat"`, the default): the prompt becomes
  `chat_template.prompt_text(prompt)` (BOS, user turn with the stripped text, generation prompt) and the
  completion `chat_template.completion_text(c)` (stripped, then the end-of-turn marker); no EOS
  (aya_jax/data/tasks.py `_chat_preprocessor`, `output_features`).
* Raw format (`chat=False`): the texts as they are, the completion followed by the vocabulary's EOS — after
  seqio's `append_eos_after_trim` first cuts it to `seq_len - 1` tokens.
* Tokenised with the vocabulary's plain encoding (no special tokens added: seqio's `tokenize`; the chat
  markers are pieces of the text). `codec_for(path)` builds the codec from a reward run's `vocab_path`.
* `PreferencePairFeatureConverter` (aya_jax/data/prompt_converters.py): the prompt keeps its LAST `prompt_len`
  tokens (P), the completion is cut from the right to `seq_len - len(prompt)` (L), and prompt ++ completion is
  one row. The reward model reads the row right-padded to L with positions 0.. and segment ids 1 on real tokens
  (`training.reward.pair_scores` on `*_target_tokens`); DPO sums the log-probs of the completion tokens, each
  given everything before it in the row (`training.dpo.pair_log_probs`: the row's first token is never
  predicted). Give the training run's `config.reward.prompt_len` / `config.dpo.prompt_len` and
  `config.data.seq_len`.

Batching: the classifier scores `batch_size` rows at a time (rounded up to a multiple of the mesh's
data-parallel size), padded to L — the training rows' shape, one compilation —, rows sharded over the mesh's
batch axes, scores gathered to every host. The implicit reward runs two `likelihood.Scorer`s (policy and
reference; their mesh, batch size and dtype) over the same (prompt ids, completion ids) requests, longest first,
one scorer batch of requests at a time through both. `progress(n)` is called with the number of
(prompt, completion) pairs each batch finished, as `likelihood.Scorer.token_log_probs` does.

Departures: RewardBench formats with the model's own chat template and cuts at 128 prompt / 2048 total tokens
(keep-end); here the training run's template and lengths rule, which is the point. The Scorer reads rows
left-padded where DPO's step reads them right-padded, and sums log-probs in float64 — float rounding only. With
`seq_len=0` (the implicit reward's default) nothing is cut but the Scorer's own `max_length` (keeping the
row's last tokens), which a DPO run's rows never reach. A completion cut to nothing (possible only in the raw
format with an empty prompt, which the data's schema refuses) scores 0 in the implicit reward, as DPO's sum
over no token.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from aya_jax import pretrained, sharding
from aya_jax.data import chat_template, vocab
from aya_jax.evaluation import likelihood
from aya_jax.training import scoring

Progress = Callable[[int], Any]
TOKENIZER_JSON = (".json", ".json.gz")


def codec_for(vocab_path: str | pathlib.Path) -> Any:
    """The codec of a vocabulary file (`LoadedRewardModel.vocab_path`): a tokenizer.json[.gz] through
    `tokenizers`, anything else a SentencePiece model through seqio (as `vocab.vocabulary` loads them)."""
    path = str(vocab_path)
    if path.endswith(TOKENIZER_JSON):
        return vocab.HfTokenizerCodec(pathlib.Path(path))
    return vocab.SeqioCodec(vocab.SentencePieceVocabulary(path))


def task_eos_id(codec: Any) -> int:
    """The EOS seqio appends to a raw-format completion: the task vocabulary's `eos_id` (a SeqioCodec's
    vocabulary; for a tokenizer.json, its end-of-turn or <EOS_TOKEN>, the first one `HfTokenizerVocabulary`
    takes as EOS)."""
    seqio_vocab = getattr(codec, "vocab", None)
    if seqio_vocab is not None and seqio_vocab.eos_id is not None:
        return int(seqio_vocab.eos_id)
    if not codec.eos_ids:
        raise ValueError(f"{codec}: the vocabulary has no EOS to end a raw-format completion with")
    return int(codec.eos_ids[0])


@dataclasses.dataclass(frozen=True)
class PairFormat:
    """How the preference pipeline turns (prompt, completion) text into token ids (module docstring)."""

    chat: bool = True
    prompt_len: int = 0  # P: the prompt keeps its last P tokens (0: all)
    seq_len: int = 0  # L: the completion is cut to L - len(prompt) tokens (0: no cut)

    def __post_init__(self) -> None:
        if self.prompt_len < 0 or self.seq_len < 0:
            raise ValueError(f"prompt_len={self.prompt_len}, seq_len={self.seq_len}: expected >= 0")
        if self.seq_len and not 0 < self.prompt_len < self.seq_len:
            raise ValueError(
                f"prompt_len={self.prompt_len} must be in [1, seq_len={self.seq_len}) (the pair converter's rule)"
            )

    def texts(self, prompt: str, completion: str) -> tuple[str, str]:
        if self.chat:
            return chat_template.prompt_text(prompt), chat_template.completion_text(completion)
        return prompt, completion

    def ids(
        self, codec: Any, prompts: Sequence[str], completions: Sequence[str]
    ) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, completion ids) per pair, truncated as the converter does; each prompt encoded once."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        prompt_ids: dict[str, list[int]] = {}
        eos = None if self.chat else task_eos_id(codec)
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            prompt_text, completion_text = self.texts(prompt, completion)
            if prompt_text not in prompt_ids:
                p = list(codec.encode(prompt_text, False))
                prompt_ids[prompt_text] = p[-self.prompt_len :] if self.prompt_len else p
            p = prompt_ids[prompt_text]
            c = list(codec.encode(completion_text, False))
            if eos is not None:  # append_eos_after_trim: cut to seq_len - 1, then EOS
                c = (c[: self.seq_len - 1] if self.seq_len else c) + [eos]
            elif self.seq_len:
                c = c[: self.seq_len]  # the task's own trim (the converter's cut below is shorter)
            if self.seq_len:
                c = c[: max(self.seq_len - len(p), 0)]
            out.append((p, c))
        return out


def pair_rows(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], length: int, rows: int = 0
) -> dict[str, np.ndarray]:
    """The converter's `*_target_tokens`, `*_positions`, `*_segment_ids` of (prompt ids, completion ids) pairs:
    prompt ++ completion right-padded to `length`, [max(rows, len(pairs)), length] int32 (extra rows: padding)."""
    n = max(rows, len(pairs))
    out = {name: np.zeros((n, length), np.int32) for name in ("target_tokens", "positions", "segment_ids")}
    for i, (p, c) in enumerate(pairs):
        seq = [*p, *c]
        if len(seq) > length:
            raise ValueError(f"pair {i}: {len(seq)} tokens do not fit a row of {length}")
        out["target_tokens"][i, : len(seq)] = seq
        out["positions"][i, : len(seq)] = np.arange(len(seq))
        out["segment_ids"][i, : len(seq)] = 1
    return out


@dataclasses.dataclass(frozen=True)
class _Rows:
    """What `scoring.RewardModelScorer` reads of a batch of rows."""

    tokens: jax.Array
    positions: jax.Array
    segment_ids: jax.Array


def _check_ids(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], vocab_size: int, what: str) -> None:
    top = max((max([*p, *c], default=0) for p, c in pairs), default=0)
    if top >= vocab_size:
        raise ValueError(f"token id {top} is outside {what}'s vocabulary of {vocab_size}: wrong tokenizer?")


class ClassifierReward:
    """A trained reward model's score of each (prompt, completion) (module docstring)."""

    def __init__(
        self,
        loaded: pretrained.LoadedRewardModel,
        codec: Any = None,
        *,
        mesh: Any,
        rules: Any,
        prompt_len: int,
        seq_len: int,
        chat: bool = True,
        batch_size: int = 32,
        progress: Progress | None = None,
    ):
        if seq_len <= 0:
            raise ValueError(f"seq_len={seq_len}: give the reward run's config.data.seq_len")
        self.format = PairFormat(bool(chat), int(prompt_len), int(seq_len))
        self.codec = codec if codec is not None else codec_for(loaded.vocab_path)
        self.mesh = mesh
        self.rules = sharding.normalize_rules(rules, mesh) if mesh is not None else ()
        multiple = sharding.data_parallel_size(mesh, self.rules) if mesh is not None else 1
        self.batch_size = -(-max(1, int(batch_size)) // multiple) * multiple
        self.vocab_size = int(loaded.model.cfg.vocab_size)
        self.scorer = scoring.RewardModelScorer(loaded, "")  # its jitted forward; the path is only a label
        self.progress = progress

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], progress: Progress | None = None
    ) -> np.ndarray:
        """Scores [n] float32, in order."""
        progress = progress if progress is not None else self.progress
        pairs = self.format.ids(self.codec, prompts, completions)
        _check_ids(pairs, self.vocab_size, "the reward model")
        scores = np.zeros((len(pairs),), np.float32)
        for begin in range(0, len(pairs), self.batch_size):
            chunk = pairs[begin : begin + self.batch_size]
            rows = pair_rows(chunk, self.format.seq_len, self.batch_size)
            with sharding.rules_context(self.mesh, self.rules):
                placed = _Rows(*(sharding.put_rows(rows[k], self.mesh, self.rules) for k in
                                 ("target_tokens", "positions", "segment_ids")))  # fmt: skip
                scores[begin : begin + len(chunk)] = sharding.to_host(self.scorer(placed))[: len(chunk)]
            if progress is not None:
                progress(len(chunk))
        return scores


def classifier_reward_of_run(
    path: str,
    field: str,
    *,
    mesh: Any,
    rules: Any,
    prompt_len: int,
    seq_len: int,
    chat: bool,
    batch_size: int,
) -> ClassifierReward:
    """The ClassifierReward of a `reward` run's workdir; a bad path is one line starting with `field`."""
    try:
        loaded = pretrained.load_reward_model(str(path), mesh, rules)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{field}: {err}") from None
    return ClassifierReward(loaded, mesh=mesh, rules=rules, prompt_len=prompt_len, seq_len=seq_len, chat=chat,
                            batch_size=batch_size)  # fmt: skip


class ImplicitReward:
    """β (log π(y|x) - log π_ref(y|x)) of each (prompt x, completion y) (module docstring)."""

    def __init__(
        self,
        policy: likelihood.Scorer,
        reference: likelihood.Scorer,
        codec: Any,
        *,
        beta: float,
        chat: bool = True,
        prompt_len: int = 0,
        seq_len: int = 0,
        progress: Progress | None = None,
    ):
        if policy.family.encoder_decoder or reference.family.encoder_decoder:
            raise ValueError("ImplicitReward: DPO's implicit reward is defined here for decoder-only models")
        if not beta > 0:
            raise ValueError(f"beta={beta}: expected > 0 (the DPO run's config.dpo.beta)")
        self.policy, self.reference, self.codec = policy, reference, codec
        self.beta = float(beta)
        self.format = PairFormat(bool(chat), int(prompt_len), int(seq_len))
        longest = min(policy.max_length, reference.max_length) + 1
        if self.format.seq_len > longest:
            raise ValueError(f"seq_len={seq_len} exceeds what the scorers read whole ({longest} tokens)")
        self.vocab_size = min(int(policy.model.cfg.vocab_size), int(reference.model.cfg.vocab_size))
        self.progress = progress

    def requests(self, prompts: Sequence[str], completions: Sequence[str]) -> list[likelihood.TokenPair]:
        """(context, continuation) per pair: prompt ids and completion ids; with an empty prompt the row's
        first token is context (DPO never predicts a row's first token), and the continuation may be empty."""
        pairs = self.format.ids(self.codec, prompts, completions)
        _check_ids(pairs, self.vocab_size, "the policy or reference")
        return [(p, c) if p else (c[:1], c[1:]) for p, c in pairs]

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], progress: Progress | None = None
    ) -> np.ndarray:
        """Implicit rewards [n] float64, in order."""
        progress = progress if progress is not None else self.progress
        requests = self.requests(prompts, completions)
        rewards = np.zeros((len(requests),), np.float64)
        scored = [i for i, (_, continuation) in enumerate(requests) if continuation]
        scored.sort(key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
        step = self.policy.batch_size
        for begin in range(0, len(scored), step):
            chunk = scored[begin : begin + step]
            batch = [requests[i] for i in chunk]
            pi = self.policy.loglikelihood(batch)
            ref = self.reference.loglikelihood(batch)
            for i, (lp, _), (lr, _) in zip(chunk, pi, ref, strict=True):
                rewards[i] = self.beta * (lp - lr)
            if progress is not None:
                progress(len(chunk))
        if progress is not None and len(scored) < len(requests):
            progress(len(requests) - len(scored))  # nothing to score: reward 0
        return rewards
