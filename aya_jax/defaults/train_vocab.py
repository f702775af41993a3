"""config.train_vocab: a language-balanced SentencePiece vocabulary (jobs/train_vocab.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    v = ml_collections.ConfigDict()
    v.size = 8000
    v.max_rows = 100_000  # rows sampled in all, shared out between languages
    # Language shares p(L) ∝ n_L^(1/T): 1 = as the data is, larger = flatter (mT5: 1/0.3).
    v.temperature = 1 / 0.3
    return v


def validate(v: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(v, "train_vocab")
    s.at_least("size", 1)
    s.at_least("max_rows", 1)
    s.greater("temperature", 0.0)
