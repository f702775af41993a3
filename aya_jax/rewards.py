"""Verifiable rewards for online preference training: Python functions of the completion text, by name.

    @register_reward("my_reward")
    def my_reward(completion: str, prompt: PromptInfo) -> float: ...
    get_reward("script")("Привет", PromptInfo(text="Say hi in Russian.", language_code="rus"))   # 1.0

A reward function takes the decoded completion (special tokens and the EOS removed) and what is known about its
prompt (`PromptInfo`: the prompt text, the ISO 639-3 code of the language the answer should be in, and the
reference answer when the data has one) and returns a float. Whether the completion ended with an EOS is the
trainer's business (RLOO's missing-EOS penalty), not the reward function's.

Verifiable rewards for the embedded default data (aya_jax/data/default_data.py: English instructions asking
for an answer in a named language, and dialogues written in the language itself), each checkable by hand:

* `script` — the fraction of the completion's letters (Unicode categories L and M, inherited combining marks
  left out) written in a script of the answer language, as listed in aya_jax/data/languages.py (Japanese:
  Han, Hiragana and Katakana; Korean: Hangul and Han). 0 for a completion without letters.
* `chrf` — chrF (Popović 2015: character n-gram F-score, n = 1..6, β = 2, whitespace removed) of the
  completion against the reference answer, in [0, 1]: sacrebleu's sentence-level chrF / 100.
* `script_chrf` — their mean: the right script, and characters from the right answer.
* `exact_match` — 1 if the completion equals the reference after Unicode NFKC, case folding and whitespace
  collapsing, else 0.

A trained reward model scores completions too (the `reward` job; aya_jax/training/scoring.py applies either
kind to rollouts, on one host or many).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
import unicodedata
from collections.abc import Callable

import jax

from aya_jax.data import languages

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PromptInfo:
    text: str  # the prompt as the model saw it (before any chat template)
    language_code: str  # ISO 639-3 code of the language the answer should be written in ("" = unknown)
    reference: str | None = None  # a reference answer, when the data has one


RewardFn = Callable[[str, PromptInfo], float]
_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make `fn` available as `get_reward(name)` (config.rloo.reward = name)."""

    def add(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered (to {_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = fn
        return fn

    return add


def get_reward(name: str) -> RewardFn:
    if name not in _REGISTRY:
        raise ValueError(f"unknown reward function {name!r} (registered: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def registered_rewards() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


# ============================================================================================================
# Scripts
# ============================================================================================================

# The first word of a character's Unicode name -> its ISO 15924 script, for the scripts of languages.py.
_NAME_TO_SCRIPT = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "ARABIC": "Arab", "ARMENIAN": "Armn", "BENGALI": "Beng",
    "CHEROKEE": "Cher", "DEVANAGARI": "Deva", "ETHIOPIC": "Ethi", "GEORGIAN": "Geor", "GREEK": "Grek",
    "GUJARATI": "Gujr", "GURMUKHI": "Guru", "HEBREW": "Hebr", "KHMER": "Khmr", "KANNADA": "Knda", "LAO": "Laoo",
    "MALAYALAM": "Mlym", "MYANMAR": "Mymr", "ORIYA": "Orya", "SINHALA": "Sinh", "TAMIL": "Taml",
    "TELUGU": "Telu", "THAI": "Thai", "CJK": "Hani", "HIRAGANA": "Hira", "KATAKANA": "Kana", "HANGUL": "Hang",
    "KATAKANA-HIRAGANA": "Kana",  # the prolonged sound mark ー
}  # fmt: skip
# ISO 15924 codes that name a writing system made of several of the scripts above.
_COMPOSITE_SCRIPTS = {
    "Hans": ("Hani",),
    "Hant": ("Hani",),
    "Jpan": ("Hani", "Hira", "Kana"),
    "Kore": ("Hang", "Hani"),
}


@functools.lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    """ISO 15924 script of a letter or mark, "" for one in a script not tabled here, None for anything else
    (digits, punctuation, spaces, inherited combining marks)."""
    if not unicodedata.category(ch).startswith(("L", "M")):
        return None
    name = unicodedata.name(ch, "")
    if not name or name.startswith("COMBINING"):
        return None
    if name.startswith("HALFWIDTH KATAKANA"):
        return "Kana"
    if name.startswith(("HALFWIDTH HANGUL", "FULLWIDTH LATIN")):
        return "Hang" if "HANGUL" in name else "Latn"
    return _NAME_TO_SCRIPT.get(name.split(" ", 1)[0], "")


@functools.lru_cache(maxsize=1024)
def language_scripts(language_code: str) -> frozenset[str]:
    """The scripts (char_script values) a language is written in, from aya_jax/data/languages.py."""
    lang = languages.maybe_lookup(language_code) if language_code else None
    if lang is None:
        raise ValueError(f"language_code: unknown language {language_code!r}")
    return frozenset(s for code in lang.scripts for s in _COMPOSITE_SCRIPTS.get(code, (code,)))


def script_fraction(text: str, scripts: frozenset[str]) -> float:
    """Fraction of the letters of `text` in one of `scripts`; 0 when it has none."""
    found = [s for s in map(char_script, text) if s is not None]
    return sum(s in scripts for s in found) / len(found) if found else 0.0


# ============================================================================================================
# chrF
# ============================================================================================================


def _char_ngrams(text: str, n: int) -> collections.Counter[str]:
    return collections.Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(hypothesis: str, reference: str, max_order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF in [0, 1] (sacrebleu's default chrF / 100): per n, character n-gram precision and recall
    with whitespace removed; averaged over the orders that both strings have n-grams of (sacrebleu's
    effective order); F_beta of the averages."""
    hyp, ref = re.sub(r"\s+", "", hypothesis), re.sub(r"\s+", "", reference)
    precisions, recalls = [], []
    for n in range(1, max_order + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        if not h or not r:
            continue
        overlap = sum((h & r).values())
        precisions.append(overlap / sum(h.values()))
        recalls.append(overlap / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r)


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _require_reference(prompt: PromptInfo, name: str) -> str:
    if prompt.reference is None:
        raise ValueError(
            f"reward {name!r} needs a reference answer, and the prompt has none: {prompt.text!r}"
        )
    return prompt.reference


# ============================================================================================================
# The registered rewards
# ============================================================================================================


@register_reward("script")
def script_reward(completion: str, prompt: PromptInfo) -> float:
    return script_fraction(completion, language_scripts(prompt.language_code))


@register_reward("chrf")
def chrf_reward(completion: str, prompt: PromptInfo) -> float:
    return chrf(completion, _require_reference(prompt, "chrf"))


@register_reward("script_chrf")
def script_chrf_reward(completion: str, prompt: PromptInfo) -> float:
    return 0.5 * (script_reward(completion, prompt) + chrf_reward(completion, prompt))


@register_reward("exact_match")
def exact_match_reward(completion: str, prompt: PromptInfo) -> float:
    return float(_normalise(completion) == _normalise(_require_reference(prompt, "exact_match")))
