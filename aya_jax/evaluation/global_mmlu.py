"""Global-MMLU (Singh et al. 2024, arXiv 2412.03304): MMLU's 14,042 four-way multiple-choice questions in 42
languages, a subset of them (2,850 per language) annotated as culturally sensitive (CS: the answer needs
cultural, regional or dialect knowledge) or culturally agnostic (CA). Global-MMLU-Lite is its balanced subset
(CS and CA items only) in the 15 languages of `LITE_LANGUAGES`; both are read the same way.

Data: the published Hugging Face layout of CohereLabs/Global-MMLU and CohereLabs/Global-MMLU-Lite, one folder
(config) per language holding its split files, `<data_dir>/<lang>/test-00000-of-00001.parquet` and
`<data_dir>/<lang>/dev-00000-of-00001.parquet`; `.jsonl` files with the same stems (`test.jsonl`,
`test-*.jsonl`) are read as well, several shards per split in name order. Every row must have `sample_id,
subject, subject_category, question, option_a..option_d, answer` (non-empty; `answer` one of A, B, C, D; an
option may be the empty string, rendered "C. " as lm-eval would) and `cultural_sensitivity_label` ("CS",
"CA", or "-" / empty / null for an unannotated item); the other published columns (`FIELDS`) are not needed.
A bad row raises `aya_jax.data.sources.DataError("<file>:<row>: <reason>")`, rows counted from 1 (the line
of a jsonl file, the row index + 1 of a parquet file).

Prompt: exactly lm-evaluation-harness's `global_mmlu_full_<lang>_<subject>` tasks (tasks/global_mmlu/full):
no description, `doc_to_text`

    "{{question.strip()}}\\nA. {{option_a}}\\nB. {{option_b}}\\nC. {{option_c}}\\nD. {{option_d}}\\nAnswer:"

and k-shot contexts made of the first k `dev` items of the item's subject (the `first_n` sampler), each
followed by `target_delimiter` " ", its answer letter and `fewshot_delimiter` "\\n\\n", then the question:

    "<dev 1 prompt> B\\n\\n<dev 2 prompt> D\\n\\n<question prompt>"

The continuation scored for choice X is " X" (`target_delimiter` + X). With `chat`, the whole context is
passed through the caller's chat template and the continuation stays " X".

Scoring: the model is a callable `loglikelihood([(context, continuation), ...]) -> [(logprob, is_greedy)]`
(lm-evaluation-harness's `LM.loglikelihood`); the prediction is the argmax of the four log-likelihoods of
" A".." D" (a tie goes to the first, as `numpy.argmax` and lm-eval's `acc` do), and an item is right when the
prediction is its answer. Only accuracy is reported, as by lm-eval's global_mmlu tasks (`acc_norm` would
equal it: the four continuations have the same length).

Aggregation: accuracy per language, per language x subject_category and per language x {CS, CA,
unannotated}; over languages the micro mean (all items pooled, as lm-eval's `weight_by_size` groups) and the
macro mean (the unweighted mean of the per-language accuracies: every language weighs the same whatever its
item count), each for all items, CS, CA and unannotated; and per subject_category over all languages (micro). A macro
mean covers the languages that have items of that subset.

Intervals: every figure carries its 95% percentile-bootstrap interval over items (`stats.bootstrap_mean`;
macro means resample within each language, `stats.bootstrap_macro`), `rounds` replicates drawn from
`numpy.random.default_rng(seed)`, the same seed for every figure, so one results file is reproducible.

Departures from lm-eval: (1) the Lite tasks (tasks/global_mmlu/default) split by subject_category and draw
their shots at random (the `default` sampler, seed 1234) from the category's dev items; here every data set
takes the first k dev items of the item's subject, the `full` tasks' rule, so 0-shot prompts are identical
and k-shot ones match the `full` tasks only. (2) lm-eval's chat path renders the shots as separate turns or
one collapsed user turn; here `chat` sees the plain-text context. (3) lm-eval reports neither intervals
nor the CS/CA split, which is the paper's main analysis; both are added here.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aya_jax.data.sources import DataError
from aya_jax.evaluation import report, rows, stats

LANGUAGES = (
    "am ar bn cs de el en es fa fil fr ha he hi id ig it ja ko ky lt mg ms ne nl ny pl pt ro ru si sn so sr sv "
    "sw te tr uk vi yo zh"
).split()
# lm-eval's tasks/global_mmlu/default (Global-MMLU-Lite) folders; its README says "15 languages (including
# English)", its group list "14".
LITE_LANGUAGES = "ar bn de en es fr hi id it ja ko pt sw yo zh".split()
FIELDS = (
    "sample_id", "subject", "subject_category", "question", "option_a", "option_b", "option_c", "option_d",
    "answer", "required_knowledge", "time_sensitive", "reference", "culture", "region", "country",
    "cultural_sensitivity_label", "is_annotated",
)  # fmt: skip
OPTION_FIELDS = ("option_a", "option_b", "option_c", "option_d")
NONEMPTY = ("sample_id", "subject", "subject_category", "question", "answer")
CHOICES = ("A", "B", "C", "D")
LABELS = ("CS", "CA", "-")  # "-": not annotated
# Result keys of the label subsets; "-" reads badly as a column or JSON key.
SUBSETS = {"CS": "CS", "CA": "CA", "unannotated": "-"}
SPLITS = ("test", "dev")
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
TEMPLATE = "{question}\nA. {option_a}\nB. {option_b}\nC. {option_c}\nD. {option_d}\nAnswer:"

LogLikelihood = Callable[[list[tuple[str, str]]], Sequence[tuple[float, bool]]]


@dataclasses.dataclass(frozen=True)
class Item:
    """One question: what scoring and reporting need, and where it came from (for error messages)."""

    sample_id: str
    subject: str
    subject_category: str
    question: str
    options: tuple[str, str, str, str]
    answer: str  # "A" .. "D"
    cultural_sensitivity_label: str  # "CS" | "CA" | "-"
    language: str
    file: str = ""
    row: int = 0

    @property
    def where(self) -> str:
        return f"{self.file}:{self.row}"


# ------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise DataError(f"unknown Global-MMLU language {language!r}; known: {' '.join(LANGUAGES)}")


def split_files(data_dir: str | pathlib.Path, language: str, split: str) -> list[pathlib.Path]:
    """The files of one split of one language, in name order (DataError if the folder or split is absent)."""
    _check_language(language)
    folder = pathlib.Path(data_dir) / language
    if not folder.is_dir():
        raise DataError(
            f"{folder}: no such language folder (expected <data_dir>/<lang>/<split>-*.parquet|jsonl)"
        )
    found = {
        ext: sorted({*folder.glob(f"{split}.{ext}"), *folder.glob(f"{split}-*.{ext}")})
        for ext in ("parquet", "jsonl")
    }
    if found["parquet"] and found["jsonl"]:
        # Most likely one is a conversion of the other; reading both would count every item twice.
        raise DataError(f"{folder}: split {split!r} has both parquet and jsonl files; keep one format")
    files = found["parquet"] or found["jsonl"]
    if not files:
        raise DataError(f"{folder}: no {split!r} split (files {split}-*.parquet|jsonl)")
    return files


def _text(row: Mapping[str, Any], field: str, where: str, nonempty: bool) -> str:
    if field not in row or row[field] is None:
        raise DataError(f"{where}: field {field!r} is missing")
    value = row[field]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # hand-made files may hold numeric options as JSON numbers
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} is not a string ({type(value).__name__})")
    if nonempty and not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return value


def item_from_row(row: Mapping[str, Any], language: str, file: str, number: int) -> Item:
    """Validate one published row (DataError "<file>:<number>: ..." naming the field) into an Item."""
    where = f"{file}:{number}"
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: not a JSON object")
    values = {f: _text(row, f, where, nonempty=True) for f in NONEMPTY}
    options = tuple(_text(row, f, where, nonempty=False) for f in OPTION_FIELDS)
    answer = values["answer"].strip()
    if answer not in CHOICES:
        raise DataError(f"{where}: field 'answer': {values['answer']!r} is not one of {', '.join(CHOICES)}")
    if "cultural_sensitivity_label" not in row:
        raise DataError(f"{where}: field 'cultural_sensitivity_label' is missing")
    label = row["cultural_sensitivity_label"]
    label = "-" if label is None or (isinstance(label, str) and not label.strip()) else label
    if not isinstance(label, str) or label.strip() not in LABELS:
        raise DataError(
            f"{where}: field 'cultural_sensitivity_label': {label!r} is not one of CS, CA, - (or empty)"
        )
    return Item(
        sample_id=values["sample_id"],
        subject=values["subject"],
        subject_category=values["subject_category"],
        question=values["question"],
        options=options,  # type: ignore[arg-type]
        answer=answer,
        cultural_sensitivity_label=label.strip(),
        language=language,
        file=file,
        row=number,
    )


def read_split(data_dir: str | pathlib.Path, language: str, split: str) -> list[Item]:
    """Every item of `<data_dir>/<language>/<split>*` in file order (DataError on the first bad row)."""
    return [
        item_from_row(row, language, str(path), number)
        for path in split_files(data_dir, language, split)
        for number, row in rows.read_rows(path)
    ]


def languages_present(data_dir: str | pathlib.Path) -> list[str]:
    """The folders of `data_dir` named like a Global-MMLU language, in `LANGUAGES` order."""
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such Global-MMLU data folder")
    return [lang for lang in LANGUAGES if (root / lang).is_dir()]


def load(
    data_dir: str | pathlib.Path, languages: Sequence[str] = (), split: str = "test"
) -> dict[str, list[Item]]:
    """{language: items} of one split; an empty `languages` means every language folder present."""
    for language in languages:
        _check_language(language)
    selected = list(dict.fromkeys(languages)) or languages_present(data_dir)
    if not selected:
        raise DataError(f"{data_dir}: no language folder ({' '.join(LANGUAGES)})")
    return {language: read_split(data_dir, language, split) for language in selected}


# ------------------------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------------------------


def prompt(item: Item) -> str:
    """lm-eval's `doc_to_text` of the item (its Jinja `question.strip()`; options as they are)."""
    a, b, c, d = item.options
    return TEMPLATE.format(question=item.question.strip(), option_a=a, option_b=b, option_c=c, option_d=d)


def context(item: Item, shots: Sequence[Item]) -> str:
    """The k-shot context: each shot's prompt, " ", its answer, "\\n\\n"; then the item's prompt."""
    labelled = "".join(prompt(s) + TARGET_DELIMITER + s.answer + FEWSHOT_DELIMITER for s in shots)
    return labelled + prompt(item)


def shots_for(item: Item, dev_items: Sequence[Item], k: int) -> list[Item]:
    """The first `k` dev items of the item's subject, in file order (the `first_n` sampler)."""
    if k <= 0:
        return []
    shots = [d for d in dev_items if d.subject == item.subject][:k]
    if len(shots) < k:
        raise DataError(
            f"{item.where}: {k} shots asked but the {item.language!r} dev split has {len(shots)} item(s) of "
            f"subject {item.subject!r}"
        )
    return shots


def requests(
    items: Sequence[Item],
    dev: Mapping[str, Sequence[Item]] | None = None,
    num_fewshot: int = 0,
    chat: Callable[[str], str] | None = None,
) -> list[tuple[str, str]]:
    """Four (context, continuation) pairs per item, " A" .. " D", in item order; shots from `dev[language]`."""
    if num_fewshot < 0:
        raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}")
    # One pass over each language's dev items per subject, not one per test item (14,042 x 285 per language).
    by_subject: dict[tuple[str, str], list[Item]] = {}
    if num_fewshot > 0:
        for language in dict.fromkeys(i.language for i in items):
            if dev is None or language not in dev:
                raise ValueError(f"{num_fewshot}-shot prompts need the dev split of {language!r}")
            for d in dev[language]:
                by_subject.setdefault((language, d.subject), []).append(d)
    out: list[tuple[str, str]] = []
    for item in items:
        text = context(item, shots_for(item, by_subject.get((item.language, item.subject), []), num_fewshot))
        if chat is not None:
            text = chat(text)
        out += [(text, TARGET_DELIMITER + choice) for choice in CHOICES]
    return out


# ------------------------------------------------------------------------------------------------------------
# Scoring and aggregation
# ------------------------------------------------------------------------------------------------------------


def _score_all(
    pairs: list[tuple[str, str]],
    loglikelihood: LogLikelihood,
    batch: int,
    progress: Callable[[int], Any] | None,
) -> np.ndarray:
    step = batch if batch > 0 else max(len(pairs), 1)
    scores: list[float] = []
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        answers = list(loglikelihood(chunk))
        if len(answers) != len(chunk):
            raise ValueError(f"loglikelihood returned {len(answers)} results for {len(chunk)} requests")
        scores += [float(a[0]) for a in answers]
        if progress is not None:
            progress(len(chunk))  # requests finished by this call (tqdm's update)
    return np.asarray(scores, dtype=np.float64).reshape(-1, len(CHOICES))


def evaluate(
    items_by_language: Mapping[str, Sequence[Item]],
    loglikelihood: LogLikelihood,
    *,
    dev: Mapping[str, Sequence[Item]] | None = None,
    num_fewshot: int = 0,
    chat: Callable[[str], str] | None = None,
    rounds: int = stats.DEFAULT_ROUNDS,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    batch: int = 0,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Score every item with `loglikelihood` (all requests in one call, or `batch` at a time with
    `progress(n)` after each with the n requests it finished) and aggregate (module docstring). A JSON-ready dict."""
    items = [item for language in items_by_language for item in items_by_language[language]]
    scores = _score_all(requests(items, dev, num_fewshot, chat), loglikelihood, batch, progress)
    for item, row in zip(items, scores, strict=True):
        if np.isnan(row).any():  # -inf is a legitimate log(0); NaN is a broken model and would win argmax
            raise ValueError(f"{item.where}: loglikelihood returned NaN for item {item.sample_id!r}")
    predicted = np.argmax(scores, axis=1) if len(items) else np.zeros((0,), dtype=int)
    correct = np.asarray([CHOICES[p] == item.answer for p, item in zip(predicted, items, strict=True)], float)

    def interval(mask: np.ndarray) -> dict[str, float | int]:
        return stats.bootstrap_mean(correct[mask], rounds=rounds, confidence=confidence, seed=seed).as_dict()

    def macro(mask: np.ndarray) -> dict[str, float | int]:
        groups = [item.language for item, m in zip(items, mask, strict=True) if m]
        return stats.bootstrap_macro(
            correct[mask], groups, rounds=rounds, confidence=confidence, seed=seed
        ).as_dict()

    language = np.asarray([item.language for item in items], dtype=object)
    category = np.asarray([item.subject_category for item in items], dtype=object)
    label = np.asarray([item.cultural_sensitivity_label for item in items], dtype=object)
    everything = np.ones((len(items),), dtype=bool)
    subsets = {"all": everything, **{name: label == value for name, value in SUBSETS.items()}}
    categories = sorted(set(category.tolist()))

    per_language = {}
    for lang in items_by_language:
        here = language == lang
        per_language[lang] = {
            **{name: interval(here & mask) for name, mask in subsets.items()},
            "subject_category": {
                c: interval(here & (category == c)) for c in categories if (here & (category == c)).any()
            },
        }
    return {
        "benchmark": "Global-MMLU",
        "num_fewshot": num_fewshot,
        "rounds": rounds,
        "confidence": confidence,
        "seed": seed,
        "languages": list(items_by_language),
        "per_language": per_language,
        "overall": {
            "micro": {name: interval(mask) for name, mask in subsets.items()},
            "macro": {name: macro(mask) for name, mask in subsets.items()},
        },
        "subject_category": {c: interval(category == c) for c in categories},
        "predictions": [
            {
                "sample_id": item.sample_id,
                "language": item.language,
                "subject": item.subject,
                "subject_category": item.subject_category,
                "cultural_sensitivity_label": item.cultural_sensitivity_label,
                "prediction": CHOICES[p],
                "answer": item.answer,
                "correct": bool(ok),
                "loglikelihoods": [float(s) for s in row],
            }
            for item, p, ok, row in zip(items, predicted, correct, scores, strict=True)
        ],
    }


# ------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------


def _cell(figure: Mapping[str, Any] | None) -> str:
    """ "0.612 [0.580, 0.644]", or an em dash for no items."""
    if not figure or not figure.get("n") or figure.get("mean") is None or not math.isfinite(figure["mean"]):
        return "—"
    return f"{figure['mean']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]"


def markdown(results: Mapping[str, Any]) -> str:
    """The tables of `evaluate`'s results: per language, per subject category, overall."""
    level = f"{100 * results['confidence']:g}%"
    head = (
        f"## Global-MMLU ({results['num_fewshot']}-shot)\n\n"
        f"Accuracy [{level} bootstrap interval, {results['rounds']} rounds]. CS / CA: culturally sensitive / "
        "agnostic items; unannotated: neither.\n"
    )
    names = list(SUBSETS)
    per_language = results["per_language"]
    by_language = report.table(
        ["language", "n", "accuracy", *names],
        [
            [lang, r["all"]["n"], _cell(r["all"]), *(_cell(r[s]) for s in names)]
            for lang, r in per_language.items()
        ],
    )
    categories = list(results["subject_category"])
    by_category = report.table(
        ["subject category", "n", "accuracy (all languages)"],
        [[c, f["n"], _cell(f)] for c, f in results["subject_category"].items()],
    )
    grid = report.table(
        ["language", *categories],
        [
            [lang, *(_cell(r["subject_category"].get(c)) for c in categories)]
            for lang, r in per_language.items()
        ],
    )
    overall = report.table(
        ["mean", "all", *names],
        [
            [kind, *(_cell(results["overall"][kind][s]) for s in ["all", *names])]
            for kind in ("micro", "macro")
        ],
    )
    return "\n\n".join(
        [
            head,
            "### Overall (micro: items pooled; macro: unweighted mean of languages)",
            overall,
            "### Per language",
            by_language,
            "### Per subject category",
            by_category,
            "### Per language and subject category",
            grid,
        ]
    )
