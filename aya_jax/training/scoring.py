"""Scores of rollouts (aya_jax/training/rollouts.py) for online preference training — from a registered reward
function of the completion text (aya_jax/rewards.py) or a trained reward model — on one host or many.

    scorer = Scorer(run, codec, eos_ids, reward_fn=rewards.get_reward("script"))      # or reward_model=...
    scores = scorer(ro, infos, k)        # [n] float32, a global array sharded like the rollout rows

A reward function runs in Python on the host. Each host decodes and scores only the rows its own devices hold
(`Run.local_rows`: row i continues prompt i // k, so it knows each row's `PromptInfo`), and the scores are
assembled into one global array sharded like the rows (`Run.from_local_rows`): the advantages and the choice of
best / worst completion then see every row, whatever the host count, and no host decodes another's rows.

A reward model (the `reward` job's; aya_jax/models/reward.py) reads the same rows on the mesh: the final state of
each row's last real token (the EOS when there is one), in one jitted call on the policy's mesh and rules. Its
vocabulary must be the policy's — it would read the policy's token ids as other words otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aya_jax import pretrained, rewards
from aya_jax.training import loop


def completion_texts(
    codec: Any, tokens: np.ndarray, lengths: np.ndarray, eos_ids: Sequence[int]
) -> list[str]:
    """Decoded completions [rows] of host completion tokens [rows, L] (EOS and padding removed)."""
    eos = set(eos_ids)
    return [
        codec.decode([int(t) for t in tokens[i, : lengths[i]] if int(t) not in eos])
        for i in range(len(tokens))
    ]


@dataclasses.dataclass
class RewardModelScorer:
    """A trained reward model applied to rollout rows (left-padded prompt, completion, right padding, segment
    ids 0 on padding) on the policy's mesh; call under the run's mesh and rules context."""

    loaded: pretrained.LoadedRewardModel
    path: str

    def __post_init__(self) -> None:
        model = self.loaded.model
        self._score = jax.jit(
            lambda params, tokens, positions, segment_ids: model.apply(
                {"params": params}, tokens, positions, segment_ids
            )
        )

    @property
    def step(self) -> int:
        return self.loaded.step

    def __call__(self, rollouts: Any) -> jax.Array:
        return self._score(self.loaded.params, rollouts.tokens, rollouts.positions, rollouts.segment_ids)


def reward_model_scorer(
    path: str,
    mesh: Any,
    rules: Any,
    *,
    vocab_size: int,
    dtype: Any = jnp.float32,
    field: str = "reward_model",
) -> RewardModelScorer:
    """The reward model trained by the `reward` job at `path` (its workdir or checkpoints/), on `mesh` with the
    policy's `rules`; its vocabulary must be the policy's (`vocab_size`)."""
    loaded = pretrained.load_reward_model(path, mesh, rules, dtype=dtype)
    if loaded.model.cfg.vocab_size != vocab_size:
        raise ValueError(
            f"{field}: {path} has vocab_size {loaded.model.cfg.vocab_size}, the policy {vocab_size}; train the "
            "reward model from the same SFT run as the policy"
        )
    return RewardModelScorer(loaded, str(path))


class Scorer:
    """Scores [n] of rollout rows from `reward_fn` (per host, on its rows) or `reward_model` (on the mesh)."""

    def __init__(
        self,
        run: loop.Run,
        codec: Any,
        eos_ids: Sequence[int],
        *,
        reward_fn: rewards.RewardFn | None = None,
        reward_model: RewardModelScorer | None = None,
    ):
        if (reward_fn is None) == (reward_model is None):
            raise ValueError("Scorer: give exactly one of reward_fn and reward_model")
        self.run, self.codec, self.eos_ids = run, codec, tuple(eos_ids)
        self.reward_fn, self.reward_model = reward_fn, reward_model

    def texts(self, ro: Any) -> tuple[range, list[str]]:
        """(this host's rows, their decoded completions)."""
        n = ro.tokens.shape[0]
        comp = self.run.local_rows(ro.completion_tokens)
        lengths = self.run.local_rows(ro.lengths)
        return self.run.host_rows(n), completion_texts(self.codec, comp, lengths, self.eos_ids)

    def __call__(self, ro: Any, infos: Sequence[rewards.PromptInfo], k: int) -> jax.Array:
        """Scores [n] float32 of rows i = sample i % k of prompt `infos[i // k]`, sharded like the rows."""
        if self.reward_model is not None:
            return self.reward_model(ro).astype(jnp.float32)
        return self.of_texts(*self.texts(ro), infos, k)

    def of_texts(self, rows: range, texts: list[str], infos: Sequence[rewards.PromptInfo], k: int,
                 fn: rewards.RewardFn | None = None) -> jax.Array:  # fmt: skip
        """`fn` (default: the reward function) on this host's decoded rows -> the global scores array."""
        fn = fn or self.reward_fn
        local = np.asarray([fn(t, infos[r // k]) for r, t in zip(rows, texts, strict=True)], np.float32)
        return self.run.from_local_rows(local, len(infos) * k)
