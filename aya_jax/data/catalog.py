"""Tasks over the data folders a config names, registered by name when `config.data.task` asks for them.

Sources (a folder of files as published: `.jsonl`, `.jsonl.gz` or `.parquet`, split by file name, see
`source_files.discover_split_files`):

| source             | schema           | folder: config field (default)                             |
|--------------------|------------------|------------------------------------------------------------|
| `aya_dataset`      | Aya Dataset      | `config.data.aya_dataset_dir` (`<data_dir>/aya_dataset`)    |
| `aya_collection`   | Aya Collection   | `config.data.aya_collection_dir` (`<data_dir>/aya_collection`) |
| `preference_pairs` | preference pairs | `config.data.preference_dir` (`<data_dir>/preference_pairs`) |
| `prompts`          | prompts-only     | `config.data.prompts_dir` (`<data_dir>/prompts`)            |
| `aya_default`      | Aya Dataset      | the embedded default data (generated)                      |

`<data_dir>` is `config.data.data_dir`, else `$AYA_DATA_DIR`, else `~/.cache/aya_jax/data`.

Task names (`<lang>`: any ISO 639-1 / 639-3 code `languages.lookup` accepts, e.g. `fra` or `fr`):

    aya_dataset            aya_dataset_<lang>
    aya_collection         aya_collection_<lang>
    aya_collection_dataset_<dataset_name>     aya_collection_dataset_<dataset_name>_template_<template_id>
    preference_pairs       preference_pairs_<lang>
    prompts                prompts_<lang>
    aya_default_<lang>     (aya_default itself is `tasks.register_default_task`)

Registering a source counts its train rows once per language and sub-source (cached under
`<data_dir>/row_counts/`, keyed by the files' sizes and times): mixing rates and `data_stats` need the counts,
and the pass validates every row, so `config.data.strict=True` fails at the first bad row before training.
With `config.data.aya_dataset_format = "tfds"`, Aya Dataset tasks read a TFDS dataset prepared once from the
same files (`tfds_builder`).

`selection(data_config, name)` says which rows a catalog name reads without registering anything (for
vocabulary training and statistics; `registry.selections` adds gin mixtures).

In the data package's one import direction (see `aya_jax.data`) this module sits above `tasks` and the
leaves, which it imports; `mixtures` and `registry` build on it.
"""

import dataclasses
import itertools
import logging
import os
import re
from collections.abc import Iterator, Sequence

import seqio

from aya_jax.data import cache, default_data, languages, source_files, sources, tasks, tfds_builder, vocab

log = logging.getLogger(__name__)

# source name -> (schema, config field of its folder, environment variable)
SOURCES = {
    "aya_dataset": (sources.AYA_DATASET, "aya_dataset_dir", "AYA_DATASET_DIR"),
    "aya_collection": (sources.AYA_COLLECTION, "aya_collection_dir", "AYA_COLLECTION_DIR"),
    "preference_pairs": (sources.PREFERENCE, "preference_dir", "AYA_PREFERENCE_DIR"),
    "prompts": (sources.PROMPTS, "prompts_dir", "AYA_PROMPTS_DIR"),
}
EMBEDDED = default_data.NAME


@dataclasses.dataclass(frozen=True)
class Source:
    """One configured source: its files per split and its train rows counted per language."""

    name: str
    schema: sources.Schema
    split_files: dict[str, tuple[str, ...]]
    counts: source_files.RowCounts  # of the train split

    def rows_per_language(self) -> dict[str, int]:
        return self.counts.rows_per_language()


def source_dir(data_config, name: str) -> str | None:
    """The folder of source `name`: its config field, else its environment variable, else
    `<data_dir>/<name>` if that exists; None when there is none."""
    _, field, env = SOURCES[name]
    configured = data_config[field] or os.environ.get(env, "")
    if configured:
        return configured
    default = cache.data_dir(data_config) / name
    return str(default) if default.exists() else None


def get_source(data_config, name: str) -> Source | None:
    """Source `name` as the config points at it (None if it has no folder); raises if a folder is named but
    holds no train files."""
    if name == EMBEDDED:
        paths = default_data.split_paths(data_config)
        split_files = {split: (str(path),) for split, path in paths.items()}
        schema, field = sources.AYA_DATASET, None
    else:
        schema, field, _ = SOURCES[name]
        folder = source_dir(data_config, name)
        if folder is None:
            return None
        try:
            split_files = {k: tuple(v) for k, v in source_files.discover_split_files(folder).items()}
        except FileNotFoundError:
            raise FileNotFoundError(f"config.data.{field}: {folder}: no such file or directory") from None
        if "train" not in split_files:
            raise FileNotFoundError(
                f"config.data.{field}: no train files (train*.jsonl / .jsonl.gz / .parquet) under {folder}"
            )
    counts = source_files.count_rows(
        split_files["train"],
        schema,
        strict=data_config.strict,
        max_chars=data_config.max_example_chars or None,
        cache_dir=cache.data_dir(data_config) / "row_counts",
    )
    return Source(name, schema, split_files, counts)


def require_source(data_config, name: str) -> Source:
    source = get_source(data_config, name)
    if source is None:
        _, field, env = SOURCES[name]
        raise FileNotFoundError(
            f"config.data.{field} is empty and neither ${env} nor {cache.data_dir(data_config) / name} exists: "
            f"point it at your local copy of the {name} files"
        )
    return source


def _training_rows(sources_: Sequence[Source]) -> Iterator[dict[str, str]]:
    """Every source's train rows, one source after another (for training a vocabulary)."""
    readers = [sources.RowReader(s.split_files["train"], strict=False, schema=s.schema) for s in sources_]
    return itertools.chain.from_iterable(readers)


def vocabulary_for(data_config, sources_: Sequence[Source]) -> seqio.Vocabulary:
    """`config.data.vocab`; a SentencePiece model is trained on these sources' text if it has no path."""
    return vocab.vocabulary(data_config, train_rows=_training_rows(sources_))


def task_name(source: str, language: str | None = None) -> str:
    return f"{source}_{language}" if language else source


def register_source_task(
    data_config,
    source: Source,
    task_vocab: seqio.Vocabulary,
    *,
    language: str | None = None,
    where: dict[str, Sequence[str]] | None = None,
    name: str | None = None,
    shuffle_buffer_size: int = seqio.SHUFFLE_BUFFER_SIZE,
    mixing_rates: dict[str, float] | None = None,
    dataset_fn_for=None,
) -> seqio.Task:
    """A task over `source` (one `language` / `where` subset of it, or all of it; or, for a mixture, all of
    it drawn by language at `mixing_rates` by `dataset_fn_for(info)`)."""
    language = languages.lookup(language).iso639_3 if language else None
    if mixing_rates is not None:
        # The mixing task's stream is endless: a known size would make seqio cache small ones in memory
        # (`ds.cache()` before `repeat`), which on an endless stream grows without bound.
        num_train = None
    elif language and not where:
        num_train = source.rows_per_language().get(language, 0)
    elif not language and not where:
        num_train = source.counts.total()
    else:
        num_train = None
    if data_config.aya_dataset_format not in ("files", "tfds"):
        raise ValueError(
            f"config.data.aya_dataset_format={data_config.aya_dataset_format!r}: expected 'files' or 'tfds'"
        )
    data_source, tfds_dir = None, None
    if source.name == "aya_dataset" and data_config.aya_dataset_format == "tfds":
        tfds_dir = tfds_builder.prepare(data_config, source.split_files)
        if mixing_rates is None:
            data_source = tfds_builder.aya_dataset_source(tfds_dir, source.split_files, language)
    return tasks.register_rows_task(
        name or task_name(source.name, language),
        source.split_files,
        task_vocab,
        schema=source.schema,
        strict=data_config.strict,
        language=language,
        where=where,
        max_chars=data_config.max_example_chars or None,
        chat=data_config.format == "chat",
        num_train_examples=num_train,
        shuffle_buffer_size=shuffle_buffer_size,
        source_name=source.name,
        data_source=data_source,
        mixing_rates=mixing_rates,
        dataset_fn_for=dataset_fn_for,
        tfds_data_dir=tfds_dir,
    )


_COLLECTION_SUBSET = re.compile(
    r"^aya_collection_dataset_(?P<dataset>.+?)(?:_template_(?P<template>[^_]+))?$"
)


def _parse(name: str) -> tuple[str, str | None, dict] | None:
    """(source, language or None, where) for a catalog task name; None if `name` is not one."""
    match = _COLLECTION_SUBSET.match(name)
    if match:
        where = {"dataset_name": [match["dataset"]]}
        if match["template"]:
            where["template_id"] = [match["template"]]
        return "aya_collection", None, where
    for source in (*SOURCES, EMBEDDED):
        if name == source and source != EMBEDDED:
            return source, None, {}
        if name.startswith(source + "_"):
            code = name[len(source) + 1 :]
            try:
                return source, languages.lookup(code).iso639_3, {}
            except ValueError as e:
                raise ValueError(f"config.data.task: {name!r}: {e}") from None
    return None


_registered_names: set[str] = set()


def registered_here(name: str) -> bool:
    """Whether `name` was registered by the catalog (and so is re-registered when the config changes)."""
    return name in _registered_names


def register_task(name: str, data_config) -> bool:
    """Register catalog task `name` (see the module docstring); False if `name` is not a catalog name."""
    parsed = _parse(name)
    if parsed is None:
        return False
    source_name, language, where = parsed
    source = (
        require_source(data_config, source_name)
        if source_name != EMBEDDED
        else get_source(data_config, EMBEDDED)
    )
    if language and not source.rows_per_language().get(language):
        have = ", ".join(sorted(source.rows_per_language())) or "none"
        raise ValueError(
            f"config.data.task: {name!r}: {source_name} has no train rows in {language!r} (it has: {have})"
        )
    if where and source_name == "aya_collection":
        datasets = {s for (_, s) in source.counts.rows}
        if where["dataset_name"][0] not in datasets:
            raise ValueError(
                f"config.data.task: {name!r}: no dataset_name {where['dataset_name'][0]!r} in the Aya Collection "
                f"files (they have: {', '.join(sorted(datasets)) or 'none'})"
            )
    register_source_task(
        data_config, source, vocabulary_for(data_config, [source]), language=language, where=where, name=name
    )
    _registered_names.add(name)
    return True


def example_names() -> list[str]:
    """Catalog names to suggest for a mistyped task name."""
    return [
        *SOURCES,
        *(f"{s}_fra" for s in SOURCES),
        f"{EMBEDDED}_fra",
        "aya_collection_dataset_<dataset_name>",
    ]


@dataclasses.dataclass(frozen=True)
class Selection:
    """Rows of one source that a task or mixture reads, before any vocabulary exists."""

    source: Source
    languages: tuple[str, ...] | None  # None = every language
    where: dict

    def reader(self, split: str = "train", language: str | None = None) -> sources.RowReader:
        return sources.RowReader(
            self.source.split_files[split],
            strict=False,
            schema=self.source.schema,
            language=language,
            where=self.where,
        )

    def rows_per_language(self) -> dict[str, int]:
        rows = self.source.rows_per_language()
        return {lang: n for lang, n in rows.items() if self.languages is None or lang in self.languages}


def selection(data_config, name: str) -> Selection | None:
    """What the default data or catalog task `name` reads, without registering anything (None if `name` is
    neither): its source, language and row filter."""
    if name == EMBEDDED:
        return Selection(get_source(data_config, EMBEDDED), None, {})
    parsed = _parse(name)
    if parsed is None:
        return None
    source_name, language, where = parsed
    source = (
        get_source(data_config, EMBEDDED)
        if source_name == EMBEDDED
        else require_source(data_config, source_name)
    )
    return Selection(source, (language,) if language else None, where)
