"""M-RewardBench (Gureja et al., arXiv 2410.15522): how often a reward function prefers the chosen response.

The benchmark is RewardBench (Lambert et al., arXiv 2403.13787) translated into 23 languages: ~2.87k
(prompt, chosen, rejected) triples per language, each tagged with the RewardBench subset it came from, plus a
separate `translation` configuration (German and Chinese to and from English, easy and hard pairs). This
module is a function of a reward *callable* and the data, never of a model:

    reward(prompts: list[str], completions: list[str]) -> array [n]   # the scalar score of each pair

Scoring rule: a triple is right iff reward(prompt, chosen) > reward(prompt, rejected), STRICTLY; a tie is
wrong (as `run_rewardbench.py` of both benchmarks does, so a constant reward scores 0, not 0.5).

Aggregation, per language, as the benchmark's `analysis/plot_utils.py` does:

1. accuracy per subset;
2. each category = the mean of its subsets' accuracies weighted by their example counts, which is the pooled
   accuracy over the category's items, except that `math-prm` is weighted up to the count of the `hep-*` code
   subsets together (RewardBench's EXAMPLE_COUNTS: 984 = 6 x 164, "upweighting to be equal to code";
   M-RewardBench's: 983), so Reasoning = (math-prm accuracy + pooled code accuracy) / 2;
3. a language's score = the UNWEIGHTED mean of its categories (those present; a missing one is listed in
   `missing_categories` and in the notes rather than counted as 0);
4. the multilingual average = the unweighted mean of the language scores, English (`eng_Latn`) excluded (it is
   the untranslated RewardBench, reported beside the average).

| category  | RewardBench subsets                                                                        |
|-----------|--------------------------------------------------------------------------------------------|
| Chat      | alpacaeval-easy, alpacaeval-length, alpacaeval-hard, mt-bench-easy, mt-bench-med           |
| Chat-Hard | mt-bench-hard, llmbar-natural, llmbar-adver-neighbor, llmbar-adver-GPTInst,                |
|           | llmbar-adver-GPTOut, llmbar-adver-manual                                                   |
| Safety    | refusals-dangerous, refusals-offensive, xstest-should-refuse, xstest-should-respond,       |
|           | donotanswer                                                                                |
| Reasoning | math-prm (weighted as all hep-* together), hep-cpp, hep-go, hep-java, hep-js, hep-python,  |
|           | hep-rust                                                                                   |

Translation pairs (the `translation` configuration, and any subset named `maple-*`, the prefix of the MAPLE
translation-preference subsets in the benchmark's results) are reported apart, per subset and pooled, and
enter neither the four categories nor the average.

Intervals: percentile bootstrap (aya_jax.evaluation.stats). A language's score is a weighted mean of stratum
means, the strata being its categories (Reasoning split into `Reasoning` = the code subsets and
`Reasoning:math-prm` when both are present); each stratum is resampled within itself with
`stats.bootstrap_macro(groups=stratum)`, its values scaled by G * weight so that the unweighted mean over the
G strata is exactly the weighted score. The multilingual average does the same over every
`<language>/<stratum>` of the non-English languages. Translation: `stats.bootstrap_mean` over its pairs.

Data layout (the published Hugging Face one, `CohereLabsCommunity/multilingual-reward-bench`): one folder per
configuration, `<data_dir>/<config>/test-00000-of-00001.parquet` (split `test`; `.jsonl` accepted too), rows
`id, language, prompt, chosen, rejected, chosen_model, rejected_model` and the subset column, `source` in the
published data (the loader's `--source_column`), `subset` in older releases and in RewardBench; either is
accepted. A single `.jsonl`/`.parquet` file whose rows carry `language` (a configuration name) is read too:
that is what `write_jsonl` writes, e.g. for a reward run's held-out pairs.

Departures: the category weights are the counts present in the data (per language), where the benchmark uses
one fixed table for every language; they agree on the published data up to a language's filtered rows.
Scores must be finite (a NaN reward is an error here, where the reference counts it wrong). An empty prompt,
chosen or rejected is a DataError rather than a pair scored on empty text. The translation configuration's
subset names were not verifiable from the benchmark's code, so any subset there is accepted and reported
apart. Chat templates and truncation are the reward callable's business, not this module's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from aya_jax.data.sources import DataError
from aya_jax.evaluation import judges, report, rows, stats

ENGLISH = "eng_Latn"
TRANSLATION = "translation"  # the configuration of the translation pairs

# The 23 configurations of the published dataset (FLORES-200 codes), in the dataset card's language order.
LANGUAGES: tuple[str, ...] = (
    "arb_Arab",
    "zho_Hans",
    "zho_Hant",
    "ces_Latn",
    "nld_Latn",
    "fra_Latn",
    "deu_Latn",
    "ell_Grek",
    "heb_Hebr",
    "hin_Deva",
    "ind_Latn",
    "ita_Latn",
    "jpn_Jpan",
    "kor_Hang",
    "pes_Arab",
    "pol_Latn",
    "por_Latn",
    "ron_Latn",
    "rus_Cyrl",
    "spa_Latn",
    "tur_Latn",
    "ukr_Cyrl",
    "vie_Latn",
)
CONFIGS: tuple[str, ...] = (*LANGUAGES, ENGLISH, TRANSLATION)

CATEGORY_NAMES: tuple[str, ...] = ("Chat", "Chat-Hard", "Safety", "Reasoning")

# RewardBench's SUBSET_MAPPING (rewardbench/constants.py), inverted: subset -> category.
CATEGORIES: dict[str, str] = {
    **dict.fromkeys(
        ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"), "Chat"
    ),
    **dict.fromkeys(
        (
            "mt-bench-hard",
            "llmbar-natural",
            "llmbar-adver-neighbor",
            "llmbar-adver-GPTInst",
            "llmbar-adver-GPTOut",
            "llmbar-adver-manual",
        ),
        "Chat-Hard",
    ),
    **dict.fromkeys(
        (
            "refusals-dangerous",
            "refusals-offensive",
            "xstest-should-refuse",
            "xstest-should-respond",
            "donotanswer",
        ),
        "Safety",
    ),
    **dict.fromkeys(
        ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"), "Reasoning"
    ),
}
MATH = "math-prm"  # weighted as all the code (hep-*) subsets together: see the module docstring
TRANSLATION_PREFIX = "maple-"

SPLIT = "test"
REQUIRED = ("id", "prompt", "chosen", "rejected")
TEXT = ("prompt", "chosen", "rejected")  # must be non-empty strings
OPTIONAL = ("chosen_model", "rejected_model")
SUBSET_COLUMNS = ("subset", "source")  # `source` in the published data, `subset` in RewardBench

Reward = Callable[[list[str], list[str]], Any]


@dataclasses.dataclass(frozen=True)
class Pair:
    """One preference triple and where it was read from (`row` 1-based; "" and 0 when built in memory)."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    language: str
    subset: str
    chosen_model: str = ""
    rejected_model: str = ""
    file: str = ""
    row: int = 0

    def as_dict(self) -> dict[str, str]:
        """The row as `write_jsonl` writes it (the published field names, subset as `subset`)."""
        return {
            "id": self.id,
            "language": self.language,
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "chosen_model": self.chosen_model,
            "rejected_model": self.rejected_model,
            "subset": self.subset,
        }


def is_translation(language: str, subset: str) -> bool:
    return language == TRANSLATION or subset.startswith(TRANSLATION_PREFIX)


# ---------------------------------------------------------------------------------------------- reading


def _pair(path: pathlib.Path, number: int, row: Any, config: str | None) -> Pair:
    where = f"{path}:{number}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: not a JSON object")
    for name in REQUIRED:
        if row.get(name) is None:
            raise DataError(f"{where}: field '{name}' is missing")
    for name in TEXT:
        if not isinstance(row[name], str):
            raise DataError(f"{where}: field '{name}' is not a string")
        if not row[name].strip():
            raise DataError(f"{where}: field '{name}' is empty")
    column = next((c for c in SUBSET_COLUMNS if row.get(c) is not None), None)
    if column is None:
        raise DataError(f"{where}: field 'subset' (or 'source') is missing")
    subset = str(row[column])
    if not subset:
        raise DataError(f"{where}: field '{column}' is empty")
    if config is None:  # a single file: the row names its configuration
        config = row.get("language")
        if not config:
            raise DataError(f"{where}: field 'language' is missing")
        if config not in CONFIGS:
            raise DataError(f"{where}: unknown language '{config}' in field 'language' (known: {_known()})")
    if not is_translation(config, subset) and subset not in CATEGORIES:
        raise DataError(
            f"{where}: unknown subset '{subset}' in field '{column}' (known: {sorted(CATEGORIES)})"
        )
    return Pair(
        id=str(row["id"]),
        prompt=row["prompt"],
        chosen=row["chosen"],
        rejected=row["rejected"],
        language=config,
        subset=subset,
        chosen_model=str(row.get("chosen_model") or ""),
        rejected_model=str(row.get("rejected_model") or ""),
        file=str(path),
        row=number,
    )


def _known() -> str:
    return ", ".join(CONFIGS)


def _split_files(folder: pathlib.Path) -> list[pathlib.Path]:
    files = [
        p
        for pattern in (f"{SPLIT}-*.parquet", f"{SPLIT}.parquet", f"{SPLIT}-*.jsonl", f"{SPLIT}.jsonl")
        for p in folder.glob(pattern)
    ]
    return sorted(set(files))


def read_file(path: str | os.PathLike, config: str | None = None) -> list[Pair]:
    """The pairs of one `.parquet` or `.jsonl` file; with `config` None every row names its `language`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return [_pair(path, number, row, config) for number, row in rows.read_rows(path)]


def read(data_dir: str | os.PathLike, languages: Sequence[str] = ()) -> list[Pair]:
    """The pairs of `data_dir` in the published layout (`<data_dir>/<config>/test-*.parquet` or
    `test*.jsonl`), for `languages` (configuration names; empty = every configuration folder present), or
    of a single file. Any problem is a one-line DataError naming the file, row and field."""
    data_dir = pathlib.Path(data_dir)
    if data_dir.is_file():
        pairs = read_file(data_dir)
        unknown = [c for c in languages if c not in CONFIGS]
        if unknown:
            raise DataError(f"unknown language '{unknown[0]}' (known: {_known()})")
        return [p for p in pairs if p.language in languages] if languages else pairs
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder or file")
    for config in languages:
        if config not in CONFIGS:
            raise DataError(f"unknown language '{config}' (known: {_known()})")
    if not languages:
        folders = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [name for name in folders if name not in CONFIGS]
        if unknown:
            raise DataError(
                f"{data_dir / unknown[0]}: unknown language folder '{unknown[0]}' (known: {_known()})"
            )
        languages = [c for c in CONFIGS if c in folders]
        if not languages:
            raise DataError(f"{data_dir}: no language folders (expected e.g. {data_dir / LANGUAGES[0]}/)")
    pairs: list[Pair] = []
    for config in languages:
        folder = data_dir / config
        if not folder.is_dir():
            raise DataError(f"{folder}: missing folder for language '{config}'")
        files = _split_files(folder)
        if not files:
            raise DataError(f"{folder}: missing split '{SPLIT}' (no {SPLIT}-*.parquet or {SPLIT}*.jsonl)")
        for path in files:
            pairs.extend(read_file(path, config))
    return pairs


def write_jsonl(path: str | os.PathLike, pairs: Iterable[Mapping[str, Any] | Pair]) -> pathlib.Path:
    """Write pairs (dicts with the published fields, or `Pair`s) one JSON object a line, readable by `read`:
    as `<data_dir>/<config>/test.jsonl`, or as one file whose rows carry `language`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for pair in pairs:
            row = pair.as_dict() if isinstance(pair, Pair) else dict(pair)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- scoring


def score(
    pairs: Sequence[Pair], reward: Reward, *, batch: int = 0, progress: Callable[[int], Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores of the chosen, scores of the rejected), [n] each: one `reward` call per `batch` pairs (all at
    once when 0), chosen and rejected together so a batched model sees both sides in one pass."""
    n = len(pairs)
    step = batch if batch > 0 else max(n, 1)
    chosen = np.empty((n,), dtype=np.float64)
    rejected = np.empty((n,), dtype=np.float64)
    for start in range(0, n, step):
        chunk = pairs[start : start + step]
        k = len(chunk)
        prompts = [p.prompt for p in chunk] * 2
        completions = [p.chosen for p in chunk] + [p.rejected for p in chunk]
        out = np.asarray(reward(prompts, completions), dtype=np.float64)
        if out.shape != (2 * k,):
            raise ValueError(f"reward returned shape {out.shape} for {2 * k} (prompt, completion) pairs")
        bad = np.flatnonzero(~np.isfinite(out))
        if bad.size:  # a NaN would silently count as wrong; a broken reward should stop the run instead
            p = chunk[int(bad[0]) % k]
            raise ValueError(f"reward returned {out[bad[0]]} for pair {p.id} ({p.language}, {p.subset})")
        chosen[start : start + k] = out[:k]
        rejected[start : start + k] = out[k:]
        if progress is not None:
            progress(k)  # pairs finished by this call (tqdm's update)
    return chosen, rejected


def _stratum(subset: str, subsets_present: Iterable[str]) -> str:
    """The bootstrap stratum of a subset: its category, with math-prm apart when code subsets are present."""
    category = CATEGORIES[subset]
    if subset == MATH and any(CATEGORIES[s] == "Reasoning" and s != MATH for s in subsets_present):
        return f"{category}:{MATH}"
    return category


def _strata_weights(counts: Mapping[str, int]) -> dict[str, float]:
    """{stratum: its weight in the language score} for one language's {subset: count} (weights sum to 1)."""
    stratum_counts: dict[str, float] = {}
    for subset, n in counts.items():
        key = _stratum(subset, counts)
        stratum_counts[key] = stratum_counts.get(key, 0) + n
    code = stratum_counts.get("Reasoning", 0)
    if f"Reasoning:{MATH}" in stratum_counts:
        stratum_counts[f"Reasoning:{MATH}"] = code  # math-prm weighted as all the code subsets together
    categories = {key.split(":")[0] for key in stratum_counts}
    total = {c: sum(v for k, v in stratum_counts.items() if k.split(":")[0] == c) for c in categories}
    return {key: v / total[key.split(":")[0]] / len(categories) for key, v in stratum_counts.items()}


def _language(
    subset_of: list[str], correct: np.ndarray, rounds: int, confidence: float, seed: int
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    right: dict[str, float] = {}
    for s, c in zip(subset_of, correct, strict=True):
        counts[s] = counts.get(s, 0) + 1
        right[s] = right.get(s, 0) + float(c)
    subsets = {
        s: {"category": CATEGORIES[s], "accuracy": right[s] / counts[s], "n": counts[s], "correct": right[s]}
        for s in sorted(counts, key=lambda s: (CATEGORY_NAMES.index(CATEGORIES[s]), s))
    }
    categories: dict[str, dict[str, Any]] = {}
    for name in CATEGORY_NAMES:
        members = [s for s in subsets if CATEGORIES[s] == name]
        if not members:
            continue
        code = sum(counts[s] for s in members if s != MATH)
        # example-count weights; math-prm weighted as the code subsets together when both are present
        weight = {s: (code if s == MATH and code else counts[s]) for s in members}
        accuracy = sum(weight[s] * subsets[s]["accuracy"] for s in members) / sum(weight.values())
        categories[name] = {"accuracy": accuracy, "n": sum(counts[s] for s in members), "weights": weight}
    mean = float(np.mean([c["accuracy"] for c in categories.values()]))
    interval = _weighted_bootstrap(
        {"": counts}, {"": subset_of}, {"": correct}, rounds=rounds, confidence=confidence, seed=seed
    )
    return {
        "score": dataclasses.replace(interval, mean=mean).as_dict(),
        "n": len(subset_of),
        "categories": categories,
        "missing_categories": [c for c in CATEGORY_NAMES if c not in categories],
        "subsets": subsets,
    }


def _weighted_bootstrap(
    counts: Mapping[str, Mapping[str, int]],
    subset_of: Mapping[str, list[str]],
    correct: Mapping[str, np.ndarray],
    *,
    rounds: int,
    confidence: float,
    seed: int,
) -> stats.Interval:
    """The unweighted mean over the languages in `counts` of each language's weighted stratum mean, with its
    stratified bootstrap interval: bootstrap_macro over the groups `<language>/<stratum>` (for one language
    keyed "", just `<stratum>`), each item scaled by G * its stratum's share so that the unweighted mean over
    the G groups is the weighted mean."""
    values: list[float] = []
    groups: list[str] = []
    shares: dict[str, float] = {}
    for language, language_counts in counts.items():
        for stratum, w in _strata_weights(language_counts).items():
            shares[f"{language}/{stratum}" if language else stratum] = w / len(counts)
        for s, c in zip(subset_of[language], correct[language], strict=True):
            stratum = _stratum(s, language_counts)
            groups.append(f"{language}/{stratum}" if language else stratum)
            values.append(float(c))
    scale = np.array([len(shares) * shares[g] for g in groups])
    return stats.bootstrap_macro(
        np.asarray(values) * scale, groups, rounds=rounds, confidence=confidence, seed=seed
    )


def evaluate(
    pairs: Sequence[Pair],
    reward: Reward,
    *,
    batch: int = 0,
    progress: Callable[[int], Any] | None = None,
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Score every pair with `reward` and aggregate as M-RewardBench does (module docstring). JSON-ready:
    `languages` {config: {score, n, categories, missing_categories, subsets}}, `average` (multilingual,
    English excluded, with the `languages` it averages), `english`, `translation`, `notes`, `pairs` (per-pair
    records), `rounds`, `confidence`, `seed`."""
    if not pairs:
        raise ValueError("M-RewardBench: no pairs to evaluate")
    chosen, rejected = score(pairs, reward, batch=batch, progress=progress)
    correct = chosen > rejected  # strictly: a tie is wrong
    records = [
        {
            "id": p.id,
            "language": p.language,
            "subset": p.subset,
            "score_chosen": float(c),
            "score_rejected": float(r),
            "correct": bool(k),
        }
        for p, c, r, k in zip(pairs, chosen, rejected, correct, strict=True)
    ]
    return aggregate(
        pairs, correct.astype(np.float64), records, rounds=rounds, confidence=confidence, seed=seed
    )


def evaluate_with_judge(
    pairs: Sequence[Pair],
    judge: Callable[[Sequence[judges.PairwiseItem]], list[str]],
    cache: rows.KeyedLog,
    *,
    progress: Callable[[int], Any] | None = None,
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """M-RewardBench with a generative judge (an LLM asked which response is better, `judges.choice_messages`):
    each pair is shown once, chosen as A or as B by one draw per pair from `numpy.random.default_rng(seed)`
    (the reference scripts draw unseeded, so their scores do not reproduce); the verdict is the last [[A]] or
    [[B]] of the judgment; right = 1 when it names the chosen response, 0 the rejected one, 0.5 when the
    judgment has neither (counted in `unparsed`). Judgments go through `judges.judge_pairs` (cached, resumable).
    Aggregated as `evaluate`."""
    if not pairs:
        raise ValueError("M-RewardBench: no pairs to evaluate")
    chosen_second = np.random.default_rng(seed).random(len(pairs)) < 0.5
    items = []
    for p, swap in zip(pairs, chosen_second, strict=True):
        a, b = (p.rejected, p.chosen) if swap else (p.chosen, p.rejected)
        names = ("rejected", "chosen") if swap else ("chosen", "rejected")
        items.append(judges.PairwiseItem(f"{p.language}/{p.id}", p.prompt, a, b, *names, 1, p.language))
    judged, _ = judges.judge_pairs(items, judge, cache, progress=progress)
    choices = [judges.parse_choice(r["judgment"]) for r in judged]
    correct = np.array(
        [
            0.5 if c is None else float((c == "B") == bool(swap))
            for c, swap in zip(choices, chosen_second, strict=True)
        ]
    )
    records = [
        {"id": p.id, "language": p.language, "subset": p.subset, "chosen_as": "B" if swap else "A",
         "verdict": c, "correct": float(k)}
        for p, swap, c, k in zip(pairs, chosen_second, choices, correct, strict=True)
    ]  # fmt: skip
    results = aggregate(pairs, correct, records, rounds=rounds, confidence=confidence, seed=seed)
    results["unparsed"] = sum(c is None for c in choices)
    results["judge"] = getattr(judge, "name", "")
    return results


def aggregate(
    pairs: Sequence[Pair],
    correct: np.ndarray,
    records: list[dict[str, Any]],
    *,
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """The benchmark's figures (module docstring) from each pair's `correct` in [0, 1] (1 / 0 for a reward,
    0.5 for a judge's unparsed answer) and the per-pair `records` kept in the results."""
    correct = np.asarray(correct, dtype=np.float64)
    by_language: dict[str, list[int]] = {}
    translation: list[int] = []
    for i, p in enumerate(pairs):
        if is_translation(p.language, p.subset):
            translation.append(i)
        else:
            by_language.setdefault(p.language, []).append(i)
    order = sorted(by_language, key=lambda c: (CONFIGS.index(c) if c in CONFIGS else len(CONFIGS), c))
    subset_of = {c: [pairs[i].subset for i in by_language[c]] for c in order}
    right = {c: correct[by_language[c]] for c in order}
    languages = {c: _language(subset_of[c], right[c], rounds, confidence, seed) for c in order}

    notes = [
        f"{c}: score over {len(r['categories'])} of 4 categories"
        f" (missing: {', '.join(r['missing_categories'])})"
        for c, r in languages.items()
        if r["missing_categories"]
    ]
    multilingual = [c for c in order if c != ENGLISH]
    if multilingual:
        counts = {c: {s: v["n"] for s, v in languages[c]["subsets"].items()} for c in multilingual}
        interval = _weighted_bootstrap(
            counts, subset_of, right, rounds=rounds, confidence=confidence, seed=seed
        )
        mean = float(np.mean([languages[c]["score"]["mean"] for c in multilingual]))
        average = {**dataclasses.replace(interval, mean=mean).as_dict(), "languages": multilingual}
    else:
        average = {**stats.Interval(math.nan, math.nan, math.nan, 0).as_dict(), "languages": []}
        notes.append(f"no language other than {ENGLISH}: no multilingual average")
    if ENGLISH in languages:
        notes.append(f"{ENGLISH} (untranslated RewardBench) is reported but not in the multilingual average")

    translated: dict[str, Any] | None = None
    if translation:
        t_right = correct[translation]
        t_subsets: dict[str, dict[str, Any]] = {}
        for i in translation:
            entry = t_subsets.setdefault(pairs[i].subset, {"accuracy": 0.0, "n": 0, "correct": 0})
            entry["n"] += 1
            entry["correct"] += float(correct[i])
        for entry in t_subsets.values():
            entry["accuracy"] = entry["correct"] / entry["n"]
        pooled = stats.bootstrap_mean(t_right, rounds=rounds, confidence=confidence, seed=seed)
        translated = {"accuracy": pooled.as_dict(), "subsets": dict(sorted(t_subsets.items()))}
    return {
        "benchmark": "M-RewardBench",
        "n": len(pairs),
        "accuracy": float(correct.mean()),  # pooled over every pair: a sanity figure, not the benchmark's
        "average": average,
        "english": languages[ENGLISH]["score"] if ENGLISH in languages else None,
        "languages": languages,
        "translation": translated,
        "notes": notes,
        "rounds": rounds,
        "confidence": confidence,
        "seed": seed,
        "pairs": records,
    }


def markdown(results: Mapping[str, Any]) -> str:
    """The language x category table (accuracy), each language's score with its interval and n, the average;
    the translation subsets apart; the notes."""
    level = round(100 * results["confidence"])

    def interval(d: Mapping[str, Any]) -> str:
        if d is None or d["n"] == 0 or not math.isfinite(d["mean"]):
            return "—"
        return f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    table_rows = []
    for config, r in results["languages"].items():
        cells = [r["categories"][c]["accuracy"] if c in r["categories"] else None for c in CATEGORY_NAMES]
        table_rows.append([config, *cells, interval(r["score"]), r["n"]])
    average = results["average"]
    n_average = sum(results["languages"][c]["n"] for c in average["languages"])
    # the average row's category cells: the unweighted mean over the averaged languages that have the category
    category_means = []
    for k in CATEGORY_NAMES:
        cats = [results["languages"][c]["categories"] for c in average["languages"]]
        values = [c[k]["accuracy"] for c in cats if k in c]
        category_means.append(float(np.mean(values)) if values else None)
    table_rows.append([f"**average** (excl. {ENGLISH})", *category_means, interval(average), n_average])
    parts = [
        f"## M-RewardBench ({len(average['languages'])} languages, {results['n']} pairs)",
        "",
        "Accuracy: share of pairs where reward(chosen) > reward(rejected), strictly (a tie is wrong). "
        "A category is the count-weighted mean of its subsets (math-prm weighted as the code subsets "
        "together); a language's score is the unweighted mean of its categories, with its "
        f"{level}% bootstrap interval ({results['rounds']} rounds); the average is over languages, "
        f"{ENGLISH} excluded.",
        "",
        report.table(["language", *CATEGORY_NAMES, f"score [{level}% CI]", "n"], table_rows),
    ]
    if results.get("translation"):
        t = results["translation"]
        t_rows = [[s, v["accuracy"], v["n"]] for s, v in t["subsets"].items()]
        t_rows.append(["**all translation pairs**", interval(t["accuracy"]), t["accuracy"]["n"]])
        parts += [
            "",
            "### Translation (not in the average)",
            "",
            report.table(["subset", "accuracy", "n"], t_rows),
        ]
    if results.get("notes"):
        parts += ["", *[f"- {note}" for note in results["notes"]]]
    return "\n".join(parts)
