"""Per-language perplexity of held-out text, and where a change of checkpoint moved it, token by token.

Continued training (on new languages, on instructions, on preferences) can raise a model's perplexity on text
it used to model well, and the rise is often carried by a handful of tokens that say little — punctuation,
whitespace pieces, a script's joiner marks — rather than spread over the content (the general observation of
the forgetting literature on continued pre-training and of token-level loss analyses; nothing here follows a
single paper's recipe). This module measures both: `perplexity` for one checkpoint, `compare` for two (before
and after), and `markdown` for the tables. It is pure analysis: it takes callables and texts, never a model.

Inputs
------
* `token_scores(texts) -> list[TokenScores]` — for each text its token ids and the log-probability (natural
  log) of each token given all before it; the first token is conditioned on a prefix (BOS) token. On a real
  checkpoint this is `aya_jax/evaluation/likelihood.py` `TextModel.token_scores`, which scores long texts in
  rolling windows with lm-evaluation-harness's `loglikelihood_rolling` semantics: disjoint windows of at most
  `max_length` predicted tokens, each with the maximal context that fits. Any deterministic callable will do
  (the tests use table-driven ones).
* `decode_token(id) -> str` — the text of one token, for the tables (only the reported tokens are decoded).
* Held-out text per language, `{language: [text, ...]}`, read by
  - `read_parallel(path)` from the NTREX-128 subset layout (`ntrex128_first300_40langs.jsonl`: one JSON object
    per sentence with `line`, `doc_id` and one string field per language code, e.g. `"fra"`, `"zho-CN"`;
    `LANGUAGES.tsv` beside it maps codes to names, read by `language_names`), or
  - `read_jsonl(path, text_field="text", language_field="language_code")` from one row per text (the Aya
    Dataset's rows: `text_field="targets"`).
  Both keep a language's texts in file order, `max_per_language` of them (0: all). A malformed row raises
  `DataError("<path>:<line>: ...")` naming the field; an unknown requested language raises `DataError`
  naming it and listing those present.

Definitions (per language; "tokens" are all scored tokens of its texts, first ones included)
--------------------------------------------------------------------------------------------
* NLL = −Σ log p / number of tokens: the mean negative log-likelihood per token, in nats, pooled over the
  language's tokens (so a long text weighs by its length).
* perplexity = exp(NLL).
* bits per byte = −Σ log p / ln 2 / Σ UTF-8 bytes of the texts: the tokenizer-independent figure (two
  tokenizers' perplexities are not comparable; their bits per byte are).
* The interval of NLL is a percentile bootstrap over TEXTS, not tokens (tokens of one text are not
  independent): `rounds` resamples of the language's texts with replacement, each giving the ratio
  Σ NLL / Σ tokens of the resampled texts; the perplexity interval is exp of the NLL interval (exp is
  monotone, so the percentile interval maps exactly). This is the ratio estimator itself, resampled — not the
  mean of per-text mean NLLs, which would weigh a 3-token text like a 300-token one and estimate a different
  quantity. `aya_jax/evaluation/stats.py` bootstraps means of item values; a ratio of two sums needs the joint
  resampling, so it is done here with NumPy, with the same generator (`numpy.random.default_rng(seed)`),
  draw shape and percentile rule. Each language's interval uses a fresh generator seeded with `seed`, so it
  does not depend on which other languages are in the run.
* Overall: micro = the token-weighted figures over all languages' tokens (Σ NLL / Σ tokens; bits per byte
  over all bytes); macro = the unweighted mean over languages of their NLL (its perplexity, exp of that, is
  the geometric mean of the languages' perplexities) and of their bits per byte. Both intervals come from
  one stratified bootstrap: each language's texts resampled within the language, languages drawn in sorted
  order from one generator seeded with `seed`.
* compare: Δloss of one token occurrence = −log p_after + log p_before (positive: the loss rose). Per
  language, the NLL change = NLL_after − NLL_before (paired: the same tokens; bootstrap over texts of
  Σ Δloss / Σ tokens) and the perplexity ratio = perplexity_after / perplexity_before = exp(NLL change).
  Per token id: count of occurrences, mean Δloss, sum Δloss, and share = sum Δloss of the token / total rise,
  where total rise = Σ over token ids of max(sum Δloss, 0) — the rise the tokens whose loss rose account for,
  before the falls of others offset it. Shares of rising tokens are in (0, 1] and sum to 1; a falling token's
  share is negative; with no rising token every share is NaN. The `top` tokens are those with the largest
  positive sum Δloss (ties: smaller id first) — a frequent token with a small mean rise can outrank a rare
  one with a large mean rise, which is the point: it is the sum that moves perplexity. The same figures
  across all languages pool every language's occurrences.

Departures from lm-evaluation-harness: it reports word perplexity, byte perplexity and bits per byte of
`loglikelihood_rolling` sums; here perplexity is per token (of the model's own tokenizer) plus bits per byte
(the harness's definition), and no word perplexity (word splitting is script-dependent). The harness gives
no intervals; the texts bootstrap here is this project's addition.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from aya_jax.data.sources import DataError
from aya_jax.evaluation import report, rows, stats
from aya_jax.evaluation.likelihood import TokenScores

__all__ = [
    "TokenDeltas",
    "TokenScores",
    "compare",
    "language_names",
    "markdown",
    "perplexity",
    "read_jsonl",
    "read_parallel",
    "token_deltas",
]

TokenScorer = Callable[[list[str]], Sequence[TokenScores]]
Progress = Callable[[int], None]
PARALLEL_METADATA = ("line", "doc_id")  # the NTREX subset's non-language fields
KIND = "perplexity"
COMPARE_KIND = "perplexity_compare"
LN2 = math.log(2.0)


# ============================================================================================================
# Reading held-out text
# ============================================================================================================


def _text(row: dict[str, Any], field: str, where: str) -> str:
    if field not in row:
        raise DataError(f"{where}: no field {field!r} (fields: {', '.join(map(str, row))})")
    value = row[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} is {type(value).__name__}, not a string")
    if not value.strip():
        # a blank text has no bytes and scores nothing: it would only distort the text counts
        raise DataError(f"{where}: field {field!r} is blank")
    return value


def _check_known(path: pathlib.Path, requested: Sequence[str], present: Iterable[str]) -> None:
    present = list(present)
    unknown = [lang for lang in requested if lang not in present]
    if unknown:
        raise DataError(
            f"{path}: language {unknown[0]!r} not found (present: {', '.join(sorted(present)) or 'none'})"
        )


def _check_max(max_per_language: int) -> None:
    if max_per_language < 0:
        raise ValueError(f"max_per_language must be >= 0 (0: all), got {max_per_language}")


def read_parallel(
    path: str | pathlib.Path, languages: Sequence[str] = (), max_per_language: int = 0
) -> dict[str, list[str]]:
    """{language code: its sentences in file order} from an NTREX-128-subset jsonl (module docstring).
    The languages are the first row's fields other than `line` and `doc_id` (all of them, in field order,
    unless `languages` names some); every row must carry a non-blank string for each language read."""
    path = pathlib.Path(path)
    _check_max(max_per_language)
    out: dict[str, list[str]] | None = None
    for number, row in rows.read_rows(path):
        if out is None:
            present = [k for k in row if k not in PARALLEL_METADATA]
            _check_known(path, languages, present)
            out = {lang: [] for lang in (languages or present)}
        if max_per_language and all(len(v) >= max_per_language for v in out.values()):
            break
        for lang, texts in out.items():
            if not max_per_language or len(texts) < max_per_language:
                texts.append(_text(row, lang, f"{path}:{number}"))
    if out is None:
        raise DataError(f"{path}: no rows")
    return out


def read_jsonl(
    path: str | pathlib.Path,
    text_field: str = "text",
    language_field: str = "language_code",
    languages: Sequence[str] = (),
    max_per_language: int = 0,
) -> dict[str, list[str]]:
    """{language: its texts in file order} from a jsonl of one text per row (module docstring); languages in
    the order requested, else in order of first appearance."""
    path = pathlib.Path(path)
    _check_max(max_per_language)
    wanted = set(languages)
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    seen: set[str] = set()
    for number, row in rows.read_rows(path):
        where = f"{path}:{number}"
        lang = _text(row, language_field, where)
        seen.add(lang)
        if wanted and lang not in wanted:
            continue
        texts = out.setdefault(lang, [])
        if not max_per_language or len(texts) < max_per_language:
            texts.append(_text(row, text_field, where))
        # every requested language full: the rest of the file cannot change the result
        if wanted and max_per_language and all(len(out[k]) >= max_per_language for k in wanted):
            break
    _check_known(path, languages, seen)
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def language_names(path: str | pathlib.Path) -> dict[str, str]:
    """{code: name} from an NTREX `LANGUAGES.tsv` (code, whitespace, name per line), given the file itself or
    the jsonl beside it; {} when there is none (the names only label tables)."""
    path = pathlib.Path(path)
    if path.suffix != ".tsv":
        path = path.with_name("LANGUAGES.tsv")
    if not path.is_file():
        return {}
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].strip()
    return names


# ============================================================================================================
# Scoring
# ============================================================================================================


def _score(
    texts_by_language: Mapping[str, Sequence[str]],
    token_scores: TokenScorer,
    batch: int,
    progress: Progress | None,
) -> dict[str, list[TokenScores]]:
    """Each language's texts through `token_scores`, `batch` texts a call (0: a language's texts in one call);
    `progress(n)` after each call with the n texts it scored. The outputs are checked: a scorer bug must not
    become a plausible-looking perplexity."""
    if batch < 0:
        raise ValueError(f"batch must be >= 0 (0: a language at a time), got {batch}")
    out: dict[str, list[TokenScores]] = {}
    for lang, texts in texts_by_language.items():
        texts = list(texts)
        step = batch or max(1, len(texts))
        scored: list[TokenScores] = []
        for begin in range(0, len(texts), step):
            chunk = texts[begin : begin + step]
            result = list(token_scores(chunk))
            if len(result) != len(chunk):
                raise ValueError(
                    f"{lang!r}: token_scores returned {len(result)} results for {len(chunk)} texts"
                )
            for i, s in enumerate(result, begin):
                ids, logp = np.asarray(s.ids), np.asarray(s.log_probs, np.float64)
                if ids.ndim != 1 or logp.shape != ids.shape:
                    raise ValueError(
                        f"text {i} of {lang!r}: {ids.shape} token ids but {logp.shape} log-probs (want equal, 1-D)"
                    )
                if np.isnan(logp).any() or (logp > 1e-6).any():
                    raise ValueError(f"text {i} of {lang!r}: log-probs must be <= 0 and not NaN")
                scored.append(TokenScores(ids.astype(np.int64), logp))
            if progress is not None:
                progress(len(chunk))
        out[lang] = scored
    return out


# ============================================================================================================
# Bootstrap of a ratio over texts
# ============================================================================================================


def _check_bootstrap(rounds: int, confidence: float) -> None:
    if rounds < 1:
        raise ValueError(f"bootstrap rounds must be >= 1, got {rounds}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap confidence must be in (0, 1), got {confidence}")


def _draw(
    numerators: np.ndarray, tokens: np.ndarray, rng: np.random.Generator, rounds: int
) -> tuple[np.ndarray, np.ndarray]:
    """[rounds] sums of the numerators and of the token counts over resampled texts (as stats.py draws)."""
    if numerators.size == 0:
        return np.zeros((rounds,)), np.zeros((rounds,))
    index = rng.integers(0, numerators.size, size=(rounds, numerators.size))
    return numerators[index].sum(axis=1), tokens[index].sum(axis=1)


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(num, np.float64) / np.asarray(den, np.float64)


def _interval(point: float, replicates: np.ndarray, confidence: float, n: int) -> stats.Interval:
    finite = replicates[np.isfinite(replicates)]  # a replicate of only token-less texts has no ratio
    if finite.size == 0 or not math.isfinite(point):
        return stats.Interval(float(point), float("nan"), float("nan"), n)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return stats.Interval(float(point), float(low), float(high), n)


def _exp(interval: stats.Interval) -> dict[str, float | int]:
    with np.errstate(over="ignore"):  # a huge NLL is an infinite perplexity, not an OverflowError
        mean, low, high = np.exp([interval.mean, interval.low, interval.high])
    return {"mean": float(mean), "low": float(low), "high": float(high), "n": interval.n}


def _per_text(scored: Sequence[TokenScores]) -> tuple[np.ndarray, np.ndarray]:
    """(Σ NLL, token count) per text."""
    nll = np.asarray([-float(np.sum(s.log_probs)) for s in scored], np.float64)
    return nll, np.asarray([s.ids.size for s in scored], np.float64)


def _ratio_intervals(
    per_text: Mapping[str, tuple[np.ndarray, np.ndarray]], rounds: int, confidence: float, seed: int
) -> tuple[dict[str, stats.Interval], stats.Interval, stats.Interval]:
    """Σ numerator / Σ tokens with its bootstrap interval over texts: per language (a fresh generator each, so
    a language's interval ignores which others are in the run), and over all languages token-weighted (micro)
    and as the unweighted mean of the languages' ratios (macro), both from one stratified resampling: each
    language's texts within the language, languages in sorted order from one generator."""
    per_language = {}
    for lang, (num, tokens) in per_text.items():
        s, t = _draw(num, tokens, np.random.default_rng(seed), rounds)
        point = float(_ratio(num.sum(), tokens.sum()))
        per_language[lang] = _interval(point, _ratio(s, t), confidence, int(num.size))
    rng = np.random.default_rng(seed)
    sums, counts, ratios = np.zeros((rounds,)), np.zeros((rounds,)), []
    for lang in sorted(per_text):
        s, t = _draw(*per_text[lang], rng, rounds)
        sums, counts = sums + s, counts + t
        ratios.append(_ratio(s, t))
    n_texts = sum(int(v[0].size) for v in per_text.values())
    total = sum(float(v[0].sum()) for v in per_text.values())
    tokens = sum(float(v[1].sum()) for v in per_text.values())
    micro = _interval(float(_ratio(total, tokens)), _ratio(sums, counts), confidence, n_texts)
    if not per_text:
        return per_language, micro, micro
    macro_point = float(np.mean([per_language[k].mean for k in sorted(per_language)]))
    macro = _interval(macro_point, np.mean(ratios, axis=0), confidence, n_texts)
    return per_language, micro, macro


# ============================================================================================================
# One checkpoint
# ============================================================================================================


def _summaries(
    texts_by_language: Mapping[str, Sequence[str]],
    scored: Mapping[str, Sequence[TokenScores]],
    rounds: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    per_text = {lang: _per_text(scored[lang]) for lang in texts_by_language}
    byte_counts = {lang: sum(len(t.encode("utf-8")) for t in v) for lang, v in texts_by_language.items()}
    intervals, micro, macro = _ratio_intervals(per_text, rounds, confidence, seed)
    languages = {
        lang: {
            "texts": int(nll.size),
            "tokens": int(tokens.sum()),
            "bytes": int(byte_counts[lang]),
            "nll": intervals[lang].as_dict(),
            "perplexity": _exp(intervals[lang]),
            "bits_per_byte": float(_ratio(nll.sum() / LN2, byte_counts[lang])),
        }
        for lang, (nll, tokens) in per_text.items()
    }
    total_nll = sum(float(v[0].sum()) for v in per_text.values())
    total_bytes = sum(byte_counts.values())
    overall = {
        "micro": {
            "texts": micro.n,
            "tokens": sum(v["tokens"] for v in languages.values()),
            "bytes": int(total_bytes),
            "nll": micro.as_dict(),
            "perplexity": _exp(micro),
            "bits_per_byte": float(_ratio(total_nll / LN2, total_bytes)),
        },
        "macro": {
            "nll": macro.as_dict(),
            "perplexity": _exp(macro),
            "bits_per_byte": float(np.mean([v["bits_per_byte"] for v in languages.values()]))
            if languages
            else math.nan,
        },
    }
    return {"kind": KIND, "rounds": rounds, "confidence": confidence, "seed": seed, "languages": languages,
            "overall": overall}  # fmt: skip


def perplexity(
    texts_by_language: Mapping[str, Sequence[str]],
    token_scores: TokenScorer,
    *,
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    batch: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Per-language and overall NLL, perplexity (with bootstrap intervals over texts) and bits per byte of one
    checkpoint (module docstring). `batch` texts per `token_scores` call (0: a language per call);
    `progress(n)` after each call with the texts it scored.

    Returns {"kind": "perplexity", "rounds", "confidence", "seed", "languages": {lang: {"texts", "tokens",
    "bytes", "nll": {mean, low, high, n}, "perplexity": {mean, low, high, n}, "bits_per_byte"}},
    "overall": {"micro": {same fields}, "macro": {"nll", "perplexity", "bits_per_byte"}}} — plain JSON values
    (`report.write` writes it as is)."""
    _check_bootstrap(rounds, confidence)
    scored = _score(texts_by_language, token_scores, batch, progress)
    return _summaries(texts_by_language, scored, rounds, confidence, seed)


# ============================================================================================================
# Two checkpoints
# ============================================================================================================


class TokenDeltas:
    """Δloss (−log p_after + log p_before) summed per token id over occurrences (module docstring)."""

    def __init__(self, ids: np.ndarray, deltas: np.ndarray):
        ids = np.asarray(ids, np.int64).reshape(-1)
        deltas = np.asarray(deltas, np.float64).reshape(-1)
        if ids.shape != deltas.shape:
            raise ValueError(f"{ids.size} token ids but {deltas.size} deltas")
        self.ids, inverse = np.unique(ids, return_inverse=True)  # ascending ids
        self.counts = np.bincount(inverse, minlength=self.ids.size).astype(np.int64)
        self.sums = np.bincount(inverse, weights=deltas, minlength=self.ids.size)

    @property
    def total_rise(self) -> float:
        """Σ over token ids of max(sum Δloss, 0)."""
        return float(np.sum(np.maximum(self.sums, 0.0)))

    @property
    def shares(self) -> np.ndarray:
        """sum Δloss per id / total rise (NaN when nothing rose)."""
        total = self.total_rise
        return self.sums / total if total > 0 else np.full(self.sums.shape, np.nan)

    def top(self, n: int, decode_token: Callable[[int], str]) -> list[dict[str, Any]]:
        """The `n` ids with the largest positive sum Δloss (ties: smaller id first), as table rows."""
        order = np.lexsort((self.ids, -self.sums))  # last key primary: sum descending, then id ascending
        order = [i for i in order[:n] if self.sums[i] > 0]
        shares = self.shares
        return [
            {
                "id": int(self.ids[i]),
                "text": decode_token(int(self.ids[i])),
                "count": int(self.counts[i]),
                "mean_delta": float(self.sums[i] / self.counts[i]),
                "sum_delta": float(self.sums[i]),
                "share": float(shares[i]),
            }
            for i in order
        ]


def token_deltas(before: Sequence[TokenScores], after: Sequence[TokenScores]) -> TokenDeltas:
    """Per-token Δloss of paired scores of the same texts (already checked to share their ids)."""
    if not before:
        return TokenDeltas(np.zeros((0,), np.int64), np.zeros((0,)))
    ids = np.concatenate([b.ids for b in before])
    deltas = np.concatenate([b.log_probs - a.log_probs for b, a in zip(before, after, strict=True)])
    return TokenDeltas(ids, deltas)


def _check_same_tokens(lang: str, before: Sequence[TokenScores], after: Sequence[TokenScores]) -> None:
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        if not np.array_equal(b.ids, a.ids):
            raise DataError(
                f"the two checkpoints tokenise text {i} of {lang!r} differently; compare needs one tokenizer"
            )


def compare(
    texts_by_language: Mapping[str, Sequence[str]],
    before: TokenScorer,
    after: TokenScorer,
    decode_token: Callable[[int], str],
    *,
    top: int = 20,
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    batch: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Perplexity before and after (e.g. continued training), its change per language, and the tokens whose
    loss rose most, per language and across all (module docstring). Every text is scored by `before`, then
    by `after` (`progress` counts both passes); the two must give each text the same token ids (DataError).

    Returns {"kind": "perplexity_compare", "top", "rounds", "confidence", "seed", "before": perplexity
    results, "after": perplexity results, "languages": {lang: {"texts", "tokens", "nll_change": {mean, low,
    high, n}, "perplexity_ratio": {mean, low, high, n}, "total_rise", "top_tokens": [{"id", "text", "count",
    "mean_delta", "sum_delta", "share"}]}}, "overall": {"micro": {same as a language}, "macro": {"nll_change",
    "perplexity_ratio"}}, "largest_rise": the language with the largest NLL change if it is > 0, else None}."""
    _check_bootstrap(rounds, confidence)
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    scored_before = _score(texts_by_language, before, batch, progress)
    scored_after = _score(texts_by_language, after, batch, progress)
    for lang in texts_by_language:
        _check_same_tokens(lang, scored_before[lang], scored_after[lang])

    per_text = {}
    for lang in texts_by_language:
        b, a = scored_before[lang], scored_after[lang]
        # Σ Δloss per text, paired: the change's interval is of the difference, not of two separate NLLs
        delta = np.asarray([float(np.sum(x.log_probs - y.log_probs)) for x, y in zip(b, a, strict=True)])
        per_text[lang] = (delta, np.asarray([x.ids.size for x in b], np.float64))
    intervals, micro, macro = _ratio_intervals(per_text, rounds, confidence, seed)
    languages = {}
    for lang, (delta, tokens) in per_text.items():
        deltas = token_deltas(scored_before[lang], scored_after[lang])
        languages[lang] = {
            "texts": int(delta.size),
            "tokens": int(tokens.sum()),
            "nll_change": intervals[lang].as_dict(),
            "perplexity_ratio": _exp(intervals[lang]),
            "total_rise": deltas.total_rise,
            "top_tokens": deltas.top(top, decode_token),
        }
    everything = token_deltas(
        [x for lang in texts_by_language for x in scored_before[lang]],
        [y for lang in texts_by_language for y in scored_after[lang]],
    )
    rising = {k: v["nll_change"]["mean"] for k, v in languages.items() if v["nll_change"]["mean"] > 0}
    return {
        "kind": COMPARE_KIND,
        "top": top,
        "rounds": rounds,
        "confidence": confidence,
        "seed": seed,
        "before": _summaries(texts_by_language, scored_before, rounds, confidence, seed),
        "after": _summaries(texts_by_language, scored_after, rounds, confidence, seed),
        "languages": languages,
        "overall": {
            "micro": {
                "texts": micro.n,
                "tokens": sum(v["tokens"] for v in languages.values()),
                "nll_change": micro.as_dict(),
                "perplexity_ratio": _exp(micro),
                "total_rise": everything.total_rise,
                "top_tokens": everything.top(top, decode_token),
            },
            "macro": {"nll_change": macro.as_dict(), "perplexity_ratio": _exp(macro)},
        },
        "largest_rise": max(rising, key=lambda k: (rising[k], k)) if rising else None,
    }


# ============================================================================================================
# Tables
# ============================================================================================================


def _ci(d: Mapping[str, float]) -> str:
    def f(v: float) -> str:
        return f"{v:.3f}" if math.isfinite(v) else "—"

    return f"{f(d['mean'])} [{f(d['low'])}, {f(d['high'])}]"


def _token_table(rows: Sequence[Mapping[str, Any]]) -> str:
    # json.dumps shows a token's spaces, newlines and control characters, which bare text would hide
    return report.table(
        ["token id", "text", "count", "mean Δloss", "sum Δloss", "share of rise"],
        [
            [r["id"], json.dumps(r["text"], ensure_ascii=False), r["count"], r["mean_delta"], r["sum_delta"],
             r["share"]]
            for r in rows
        ],
    )  # fmt: skip


def _perplexity_markdown(results: Mapping[str, Any], names: Mapping[str, str]) -> str:
    level = f"{100 * results['confidence']:g}%"
    headers = ["language", "texts", "tokens", f"NLL/token [{level}]", f"perplexity [{level}]", "bits/byte"]
    rows = [
        [f"{lang} ({names[lang]})" if lang in names else lang, v["texts"], v["tokens"], _ci(v["nll"]),
         _ci(v["perplexity"]), v["bits_per_byte"]]
        for lang, v in results["languages"].items()
    ]  # fmt: skip
    micro, macro = results["overall"]["micro"], results["overall"]["macro"]
    rows.append(["**all (token-weighted)**", micro["texts"], micro["tokens"], _ci(micro["nll"]),
                 _ci(micro["perplexity"]), micro["bits_per_byte"]])  # fmt: skip
    rows.append(
        ["**all (macro)**", "", "", _ci(macro["nll"]), _ci(macro["perplexity"]), macro["bits_per_byte"]]
    )
    return (
        "## Perplexity per language\n\n"
        f"NLL in nats per token; intervals: percentile bootstrap over texts, {results['rounds']} rounds.\n\n"
        + report.table(headers, rows)
    )


def _compare_markdown(results: Mapping[str, Any], names: Mapping[str, str]) -> str:
    level = f"{100 * results['confidence']:g}%"
    before, after = results["before"], results["after"]
    headers = ["language", "texts", "tokens", "perplexity before", "perplexity after", f"ratio [{level}]",
               f"Δ NLL/token [{level}]", "bits/byte before", "bits/byte after"]  # fmt: skip

    def row(label: str, b: Mapping[str, Any], a: Mapping[str, Any], c: Mapping[str, Any]) -> list[Any]:
        return [label, c.get("texts", ""), c.get("tokens", ""), b["perplexity"]["mean"], a["perplexity"]["mean"],
                _ci(c["perplexity_ratio"]), _ci(c["nll_change"]), b["bits_per_byte"], a["bits_per_byte"]]  # fmt: skip

    rows = [
        row(f"{lang} ({names[lang]})" if lang in names else lang, before["languages"][lang],
            after["languages"][lang], c)
        for lang, c in results["languages"].items()
    ]  # fmt: skip
    for key, label in (("micro", "**all (token-weighted)**"), ("macro", "**all (macro)**")):
        rows.append(row(label, before["overall"][key], after["overall"][key], results["overall"][key]))
    parts = [
        "## Perplexity before and after\n\n"
        f"Δ = after − before (positive: worse); intervals: paired percentile bootstrap over texts, "
        f"{results['rounds']} rounds.\n\n" + report.table(headers, rows),
        f"## Tokens whose loss rose most, all languages\n\nshare = the token's sum Δloss / total rise "
        f"({results['overall']['micro']['total_rise']:.3f} nats: the sum over tokens whose summed loss rose)."
        "\n\n" + _token_table(results["overall"]["micro"]["top_tokens"]),
    ]
    for lang, c in results["languages"].items():
        if c["top_tokens"]:
            parts.append(
                f"### {lang}: top {len(c['top_tokens'])} rising tokens (total rise {c['total_rise']:.3f} nats)"
                "\n\n" + _token_table(c["top_tokens"])
            )
    return "\n\n".join(parts)


def markdown(results: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """The tables of `perplexity` or `compare` results; `names` ({code: name}, e.g. `language_names(path)`)
    labels the languages."""
    names = names or {}
    if results.get("kind") == KIND:
        return _perplexity_markdown(results, names)
    if results.get("kind") == COMPARE_KIND:
        return _compare_markdown(results, names)
    raise ValueError(f"not perplexity results (kind {results.get('kind')!r})")
