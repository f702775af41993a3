"""Non-differentiable attributes of generated text, the targets of active inheritance (arXiv 2407.01490): a
reply is chosen among k candidates to maximise or minimise one of these, or a weighted combination.

Every attribute is a function `(texts, languages) -> float64 array [len(texts)]`, `languages` the ISO 639-3 /
639-1 code of each text's *prompt* (the language the reply is meant to be in). Registered by name in
`ATTRIBUTES`; a classifier of one's own (a toxicity model, say) plugs in as another such function.

- `length`: characters (Unicode code points). Characters, not words or tokens: the same measure in every script
  and for every tokenizer. The paper counts tokens of one model; any monotone measure selects the same reply.
- `mtld`: the Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010, Behavior Research Methods 42:381),
  bidirectional: walking the words, a *factor* ends where the running type/token ratio falls to the threshold
  (0.72, the conventional value) or below, and the count restarts; the last, unfinished stretch adds the partial
  factor (1 − TTR)/(1 − threshold); MTLD = words / factors, the mean of a forward and a backward pass. A text
  whose TTR never falls to the threshold counts one factor (the same as `lexicalrichness` 0.5, the reference the
  tests compare with). Words are runs of letters, marks and digits, lower-cased; in scripts written without
  spaces (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) each character is a word — a whitespace tokenizer would
  make a Chinese sentence a single word. An empty text scores 0.
- `toxicity`: a lexicon score — the fraction of a text's words that belong to an offensive-word list entry
  (LDNOOBW's lists, one file per language, `<code>.txt` with one word or phrase per line). The text's own
  language's list is used where there is one, else every list. Multi-word entries match as word sequences;
  in the no-space scripts an entry matches as a substring and counts its characters. This is a floor, not a
  classifier: it sees words, not intent (the paper used the Perspective API, which cannot be called offline).
- `language`: the probability a language identifier gives the prompt's language for the reply (py3langid, the
  maintained fork of langid.py: 97 languages, normalised probabilities), so a reply that drifts into English
  scores low. A language the identifier does not know is an error naming it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from aya_jax.data import languages as language_table

Attribute = Callable[[Sequence[str], Sequence[str]], np.ndarray]

MTLD_THRESHOLD = 0.72

# Scripts written without spaces between words: each character is a word.
_NO_SPACE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u0f00-\u0fff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]"
)


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"


def words(text: str) -> list[str]:
    """The words MTLD and the lexicon count (module docstring): lower-cased runs of letters, marks and digits;
    each character of a no-space script on its own."""
    out: list[str] = []
    current: list[str] = []
    for ch in text.lower():
        if _NO_SPACE.match(ch):
            if current:
                out.append("".join(current))
                current = []
            out.append(ch)
        elif _is_word_char(ch):
            current.append(ch)
        elif current:
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return out


# ------------------------------------------------------------------------------------------------------------
# Length and lexical diversity
# ------------------------------------------------------------------------------------------------------------


def length(texts: Sequence[str], languages: Sequence[str] = ()) -> np.ndarray:
    del languages
    return np.array([len(t) for t in texts], np.float64)


def _mtld_pass(tokens: Iterable[str], n: int, threshold: float) -> float:
    types: set[str] = set()
    count = 0
    factors = 0.0
    ttr = 1.0
    for token in tokens:
        count += 1
        types.add(token)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1
            types, count = set(), 0
    if count:
        factors += (1 - ttr) / (1 - threshold)
    return n / factors if factors else float(n)  # never fell to the threshold: one factor


def mtld_of_words(tokens: Sequence[str], threshold: float = MTLD_THRESHOLD) -> float:
    """Bidirectional MTLD of a word sequence (module docstring); 0 for no words."""
    if not 0 < threshold < 1:
        raise ValueError(f"mtld threshold: {threshold} is not in (0, 1)")
    n = len(tokens)
    if not n:
        return 0.0
    return (_mtld_pass(tokens, n, threshold) + _mtld_pass(reversed(tokens), n, threshold)) / 2


def mtld(
    texts: Sequence[str], languages: Sequence[str] = (), threshold: float = MTLD_THRESHOLD
) -> np.ndarray:
    del languages
    return np.array([mtld_of_words(words(t), threshold) for t in texts], np.float64)


# ------------------------------------------------------------------------------------------------------------
# Toxicity (lexicon)
# ------------------------------------------------------------------------------------------------------------


class Lexicon:
    """Offensive-word lists per language from a folder of `<code>.txt` files (LDNOOBW's layout: a file per
    language, one entry per line; a file name's subtags after `-` are ignored, and a code the language table
    does not know, such as `tlh`, is kept as it is). `score(texts, languages)` is the `toxicity` attribute
    (module docstring)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise ValueError(f"toxicity lexicon: no <language>.txt files in {folder}")
        entries: dict[str, set[tuple[str, ...]]] = {}
        for path in files:
            code = path.stem.split("-")[0]
            known = language_table.maybe_lookup(code)
            for line in path.read_text(encoding="utf-8-sig").splitlines():
                entry = tuple(words(line))
                if entry:
                    entries.setdefault(known.code if known else code, set()).add(entry)
        self.languages = sorted(entries)
        self._index = {code: _by_first_word(e) for code, e in entries.items()}
        self._everything = _by_first_word(set().union(*entries.values()))

    def flagged(self, text: str, language: str = "") -> int:
        """How many of the text's words lie inside a match of an entry (each word counted once)."""
        known = language_table.maybe_lookup(language) if language else None
        index = self._index.get(known.code, self._everything) if known else self._everything
        tokens = words(text)
        hit = np.zeros(len(tokens), bool)
        for i, token in enumerate(tokens):
            for entry in index.get(token, ()):
                if tuple(tokens[i : i + len(entry)]) == entry:
                    hit[i : i + len(entry)] = True
                    break  # the longest entry starting here
        return int(hit.sum())

    def score(self, texts: Sequence[str], languages: Sequence[str] = ()) -> np.ndarray:
        languages = list(languages) or [""] * len(texts)
        if len(languages) != len(texts):
            raise ValueError(f"toxicity: {len(texts)} texts but {len(languages)} languages")
        out = np.zeros(len(texts), np.float64)
        for i, (text, language) in enumerate(zip(texts, languages, strict=True)):
            n = len(words(text))
            out[i] = self.flagged(text, language) / n if n else 0.0
        return out


def _by_first_word(entries: Iterable[tuple[str, ...]]) -> dict[str, list[tuple[str, ...]]]:
    index: dict[str, list[tuple[str, ...]]] = {}
    for entry in sorted(entries, key=lambda e: (-len(e), e)):  # longest first
        index.setdefault(entry[0], []).append(entry)
    return index


# ------------------------------------------------------------------------------------------------------------
# Language fidelity
# ------------------------------------------------------------------------------------------------------------


class LanguageFidelity:
    """P(prompt's language | reply) from py3langid's normalised probabilities (module docstring)."""

    def __init__(self):
        try:
            from py3langid import langid  # the `curation` extra: only this attribute needs it
        except ImportError as e:
            raise ImportError("the `language` attribute needs py3langid: pip install -e '.[curation]'") from e
        self.identifier = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
        self.labels = set(self.identifier.nb_classes)

    def label(self, code: str) -> str:
        lang = language_table.maybe_lookup(code)
        for candidate in (lang.iso639_1, lang.iso639_3) if lang else (code,):
            if candidate in self.labels:
                return candidate
        raise ValueError(f"language fidelity: the language identifier (py3langid) does not know {code!r}")

    def score(self, texts: Sequence[str], languages: Sequence[str]) -> np.ndarray:
        if len(languages) != len(texts):
            raise ValueError(f"language fidelity: {len(texts)} texts but {len(languages)} languages")
        out = np.zeros(len(texts), np.float64)
        for i, (text, code) in enumerate(zip(texts, languages, strict=True)):
            want = self.label(code)
            if text.strip():
                out[i] = dict(self.identifier.rank(text)).get(want, 0.0)
        return out


# ------------------------------------------------------------------------------------------------------------
# Registry and selection
# ------------------------------------------------------------------------------------------------------------


def build(names: Iterable[str], *, lexicon_dir: str | Path | None = None) -> dict[str, Attribute]:
    """The named attributes as functions; `toxicity` needs `lexicon_dir` (LDNOOBW's folder)."""
    out: dict[str, Attribute] = {}
    for name in names:
        if name == "length":
            out[name] = length
        elif name == "mtld":
            out[name] = mtld
        elif name == "toxicity":
            if not lexicon_dir:
                raise ValueError("attribute toxicity: needs a lexicon folder (<language>.txt files)")
            out[name] = Lexicon(lexicon_dir).score
        elif name == "language":
            out[name] = LanguageFidelity().score
        else:
            raise ValueError(f"attribute {name!r}: unknown (known: {', '.join(NAMES)})")
    return out


NAMES = ("length", "mtld", "toxicity", "language")


def objective(values: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The quantity best-of-k maximises over one prompt's k candidates: Σ_a w_a · z_a, z_a the attribute
    standardised over those k candidates (mean 0, sd 1; 0 where all k are equal). Standardising within the
    prompt puts attributes of different units (characters, MTLD, fractions) on one scale, so a weight says how
    much an attribute counts; its sign says maximise (+) or minimise (−). With one attribute this selects the
    same candidate as the raw values."""
    total = None
    for name, weight in weights.items():
        x = np.asarray(values[name], np.float64)
        sd = x.std()
        z = (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
        total = weight * z if total is None else total + weight * z
    if total is None:
        raise ValueError("attribute weights: none given")
    return total


def best(values: dict[str, np.ndarray], weights: dict[str, float]) -> int:
    """Index of the chosen candidate: the highest objective, the first of equals (deterministic)."""
    return int(np.argmax(objective(values, weights)))
