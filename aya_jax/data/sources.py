"""Reading rows of the published Aya formats from local (or any tf.io.gfile) files, with validation.

Formats: `.jsonl`, `.jsonl.gz` (one JSON object per line) and `.parquet` (as on the Hugging Face Hub).
Schemas (the published rows and their provenance: docs/data.md), each a `Schema` below:

* `AYA_DATASET`: `inputs, targets, language_code` required; `language, annotation_type, user_id` optional.
* `AYA_COLLECTION`: `inputs, targets` and `language_code` or `language` (a code or an English name);
  `id, dataset_name, sub_dataset_name, task_type, template_id, script, split` optional (`id` and
  `template_id` may be numbers).
* `PREFERENCE`: `prompt, chosen, rejected` and `language_code` or `language`; `subset, category, id` optional.
* `PROMPTS`: `prompt` (or `inputs`) and `language_code` or `language`; `id` optional.

Every row comes out as a dict of strings with the schema's `fields` (missing optional fields are ""), and
`language_code` normalised to the table's ISO 639-3 code when the language is known (`arb_Arab` -> `ara`;
unknown codes pass through unchanged and get language id 0 downstream).

Bad rows: malformed JSON, not an object, a missing or non-string field, an empty text field, non-UTF-8 bytes,
and (with `max_chars`) an over-long row. With `strict=True` the first one raises
`DataError("<path>:<line>: <reason>")` (for parquet, the 1-based row number); otherwise it is skipped and
counted per reason, and after each full pass the reader logs one warning per reason with the count and the
first offending `path:line`, and keeps the counts in `reader.stats`. A row is reported once per process: the
same files are read many times (the row count at registration, vocabulary training, every epoch, every repeat
of the eval split), and later passes log only the bad rows no earlier pass reported.

Sharding: with `num_shards > 1` the reader keeps record i (counted across all files, from 0, blank lines
included) iff `i % num_shards == shard_index`, and never decodes or validates the other records, so hosts
read disjoint rows and each pays for its share only.

Filtering: `language=` keeps one language (ISO 639-3) and `where=` keeps rows whose field is one of given
values (an Aya Collection `dataset_name` or `template_id`). Filtering happens after sharding, so every host
keeps about the same share of each language. A mixture reads one language per component task, often from
one mixed file, so per-language reading must not cost a pass over the whole file each time:

* files of at most `GROUPED_CACHE_BYTES` in all (the embedded data, the Aya Dataset) are read once per
  process and shard, validated, and kept in memory grouped by language (`grouped_rows`); a language reader
  then walks its own rows only. Bad rows are reported by that one pass.
* larger files are scanned per language; for jsonl, a line that does not even contain one of the language's
  codes (quoted, lower-cased) is skipped without being parsed. Publish-style per-language files (the Aya
  Collection's language split) avoid the scan altogether.

seqio reads rows through `ShardedFunctionDataSource` (at the end), a source that hands each host its shard;
the tasks (`tasks`) and the TFDS build (`tfds_builder`) both use it. This is a leaf of the data package's one
import direction (see `aya_jax.data`): it imports only `languages`.
"""

import collections
import dataclasses
import functools
import gzip
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import seqio
import tensorflow as tf

from aya_jax.data import languages

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A malformed data row (strict mode); the message starts with `path:line:`."""


@dataclasses.dataclass(frozen=True)
class Schema:
    """How the rows of one published format map to the string fields a task reads."""

    name: str
    text_fields: tuple[str, ...]  # required strings
    nonempty: tuple[str, ...]  # text fields that must not be blank
    language_fields: tuple[str, ...]  # the first one present gives `language_code`
    optional: tuple[str, ...] = ()  # strings, "" when missing
    numbers_ok: tuple[str, ...] = ()  # optional fields that may also be numbers (kept as their decimal text)
    aliases: tuple[tuple[str, str], ...] = ()  # (field, another name it may have in the file)
    source_fields: tuple[str, ...] = ()  # the first non-empty one names a row's sub-source in statistics

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.text_fields, "language_code", *self.optional)))

    def missing_language_reason(self) -> str:
        return "missing field " + " or ".join(f"'{f}'" for f in self.language_fields)

    def source_of(self, row: Mapping[str, str]) -> str:
        return next((row[f] for f in self.source_fields if row.get(f)), "")


AYA_DATASET = Schema(
    name="aya_dataset",
    text_fields=("inputs", "targets"),
    nonempty=("targets",),
    language_fields=("language_code",),
    optional=("language", "annotation_type", "user_id"),
    source_fields=("annotation_type",),
)
AYA_COLLECTION = Schema(
    name="aya_collection",
    text_fields=("inputs", "targets"),
    nonempty=("targets",),
    language_fields=("language_code", "language"),
    optional=(
        "language",
        "id",
        "dataset_name",
        "sub_dataset_name",
        "task_type",
        "template_id",
        "script",
        "split",
    ),  # fmt: skip
    numbers_ok=("id", "template_id"),
    source_fields=("dataset_name",),
)
PREFERENCE = Schema(
    name="preference",
    text_fields=("prompt", "chosen", "rejected"),
    nonempty=("prompt", "chosen", "rejected"),
    language_fields=("language_code", "language"),
    optional=("language", "subset", "category", "id"),
    numbers_ok=("id",),
    source_fields=("subset", "category"),
)
PROMPTS = Schema(
    name="prompts",
    text_fields=("prompt",),
    nonempty=("prompt",),
    language_fields=("language_code", "language"),
    optional=("language", "id"),
    numbers_ok=("id",),
    aliases=(("prompt", "inputs"),),
)
SCHEMAS = {s.name: s for s in (AYA_DATASET, AYA_COLLECTION, PREFERENCE, PROMPTS)}

# The Aya Dataset schema, as the first data slice named it (kept: other modules and users import these).
REQUIRED_FIELDS = ("inputs", "targets", "language_code")
OPTIONAL_FIELDS = AYA_DATASET.optional
FIELDS = AYA_DATASET.fields


@dataclasses.dataclass
class BadRowStats:
    """Per-reason counts of skipped rows and the first `path:line` of each, for one pass; `unreported` and
    `first_unreported` the same for the rows no earlier pass in this process reported (what `log` reports)."""

    rows: int = 0  # good rows yielded
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first: dict[str, str] = dataclasses.field(default_factory=dict)  # reason -> "path:line"
    unreported: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first_unreported: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, where: str, reported: bool = False) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, where)
        if not reported:
            self.unreported[reason] += 1
            self.first_unreported.setdefault(reason, where)

    @property
    def bad_rows(self) -> int:
        return sum(self.counts.values())

    def log(self, name: str) -> None:
        for reason, n in sorted(self.unreported.items()):
            log.warning(
                "%s: skipped %d row(s): %s (first at %s)", name, n, reason, self.first_unreported[reason]
            )


# The bad rows this process has reported, so that each is reported once however often its file is read. A
# complete pass (every record of its files validated: one shard, no language scan) covers whole files: kept as
# (path, schema name) -> the smallest `max_chars` reported with (inf: none); only "over-long row" depends on
# that limit, and a lower one only adds rows to it. Other passes' rows are kept as line numbers per path: only
# rows no complete pass covered, so few in the usual order, where the row count at registration (a complete
# pass) comes first.
_OVER_LONG = "over-long row"
_reported_files: dict[tuple[str, str], float] = {}
_reported_lines: dict[str, set[int]] = collections.defaultdict(set)


def _file_reported(path: str, schema: Schema, max_chars: int | None, reason: str = _OVER_LONG) -> bool:
    limit = _reported_files.get((path, schema.name))
    return limit is not None and (reason != _OVER_LONG or (max_chars or math.inf) >= limit)


def bad_rows_reported(paths: Iterable[str], schema: Schema, max_chars: int | None) -> bool:
    """Whether every bad row of `paths` (read with `schema` and `max_chars`) has been reported already."""
    return all(_file_reported(str(p), schema, max_chars) for p in paths)


def mark_bad_rows_reported(paths: Iterable[str], schema: Schema, max_chars: int | None) -> None:
    """Record that every bad row of `paths` has been reported (by a complete pass, or from its counts)."""
    for path in map(str, paths):
        key = (path, schema.name)
        _reported_files[key] = min(_reported_files.get(key, math.inf), max_chars or math.inf)


def _row_reported(path: str, number: int, reason: str, schema: Schema, max_chars: int | None) -> bool:
    return _file_reported(path, schema, max_chars, reason) or number in _reported_lines.get(path, ())


def _open_binary(path: str):
    f = tf.io.gfile.GFile(path, "rb")
    return gzip.GzipFile(fileobj=f, mode="rb") if path.endswith(".gz") else f


def is_parquet(path: str) -> bool:
    return str(path).endswith(".parquet")


def _as_text(value, field: str, numbers_ok: bool) -> tuple[str | None, str | None, str]:
    """(text, None, "") or (None, reason, detail)."""
    if isinstance(value, str):
        return value, None, ""
    if isinstance(value, bytes):  # parquet binary columns
        try:
            return value.decode("utf-8"), None, ""
        except UnicodeDecodeError as e:
            return None, "non-UTF-8 bytes", f"field '{field}' at byte {e.start}"
    if numbers_ok and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value), None, ""
    return None, f"field '{field}' is not a string", f"a {type(value).__name__}"


def check_record(
    obj, schema: Schema = AYA_DATASET, max_chars: int | None = None
) -> tuple[dict[str, str] | None, str | None, str]:
    """Validate one decoded record: (row, None, "") or (None, reason, detail). Reasons are a small fixed set
    (the keys of the per-reason counts); the detail says where, for the strict-mode error."""
    if not isinstance(obj, dict):
        return None, "not a JSON object", f"a {type(obj).__name__}"
    aliases = dict(schema.aliases)
    row: dict[str, str] = {}
    for field in schema.text_fields:
        value = obj.get(field)
        if value is None and field in aliases:
            value = obj.get(aliases[field])
        if value is None:
            return None, f"missing field '{field}'", ""
        text, reason, detail = _as_text(value, field, numbers_ok=False)
        if reason:
            return None, reason, detail
        row[field] = text
    language_field = next((f for f in schema.language_fields if obj.get(f) is not None), None)
    if language_field is None:
        return None, schema.missing_language_reason(), ""
    code, reason, detail = _as_text(obj[language_field], language_field, numbers_ok=False)
    if reason:
        return None, reason, detail
    for field in schema.optional:
        value = obj.get(field)
        if value is None:
            row[field] = ""
            continue
        text, reason, detail = _as_text(value, field, numbers_ok=field in schema.numbers_ok)
        if reason:
            return None, reason, detail
        row[field] = text
    for field in schema.nonempty:
        if not row[field].strip():
            return None, f"empty {field}", ""
    if max_chars:
        chars = sum(len(row[f]) for f in schema.text_fields)
        if chars > max_chars:
            return None, _OVER_LONG, f"{chars} characters > {max_chars}"
    lang = languages.maybe_resolve(code)
    row["language_code"] = lang.iso639_3 if lang else code
    return {field: row[field] for field in schema.fields}, None, ""


def validate_row(
    line: bytes, schema: Schema = AYA_DATASET, max_chars: int | None = None
) -> tuple[dict[str, str] | None, str | None, str]:
    """`check_record` for one jsonl line (bytes)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "non-UTF-8 bytes", f"at byte {e.start}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, "malformed JSON", f"{e.msg} at column {e.colno}"
    return check_record(obj, schema, max_chars)


@functools.cache
def _language_needles(iso639_3: str) -> tuple[bytes, ...]:
    """Byte strings one of which a jsonl line must contain (after lower-casing) to be in this language."""
    lang = languages.lookup(iso639_3)
    needles = set()
    for code in (*languages.accepted_codes(lang), lang.name.lower()):
        quoted = json.dumps(code).encode()  # '"fra"'
        needles.update((quoted, quoted[:-1] + b"_", quoted[:-1] + b"-"))
    return tuple(sorted(needles))


class RowReader:
    """Iterate the validated rows of `paths` (in order); each iteration is one pass and resets `stats`."""

    def __init__(
        self,
        paths: Sequence[str],
        *,
        strict: bool,
        schema: Schema = AYA_DATASET,
        shard_index: int = 0,
        num_shards: int = 1,
        language: str | None = None,
        where: Mapping[str, Iterable[str]] | None = None,
        max_chars: int | None = None,
    ):
        if not paths:
            raise ValueError(f"{type(self).__name__} needs at least one file")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} is not in [0, num_shards={num_shards})")
        self.paths = [str(p) for p in paths]
        self.strict = strict
        self.schema = schema
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.language = languages.lookup(language).iso639_3 if language else None
        self.where = {k: {str(v) for v in values} for k, values in (where or {}).items()}
        for field in self.where:
            if field not in schema.fields:
                raise ValueError(f"where={dict(where)}: {field!r} is not a field of {schema.name} rows")
        self.max_chars = max_chars
        self.stats = BadRowStats()

    def __iter__(self) -> Iterator[dict[str, str]]:
        for row, _ in self.rows_with_locations():
            yield row

    def rows_with_locations(self) -> Iterator[tuple[dict[str, str], str]]:
        """(row, "path:line") for each good row of this shard."""
        grouped = grouped_rows(self.without_filters()) if self.language else None
        if grouped is not None:
            self.stats = stats = BadRowStats()
            for row, where in grouped.get(self.language, ()):
                if self._keep(row):
                    stats.rows += 1
                    yield row, where
            return
        yield from self._read()

    def _read(self) -> Iterator[tuple[dict[str, str], str]]:
        self.stats = stats = BadRowStats()
        # Whether this pass validates every record of its files (a language scan skips lines unparsed).
        complete = self.num_shards == 1 and self.language is None
        unreported: list[tuple[str, int]] = []  # of a partial pass: remembered once it has logged them
        index = 0  # record number across all files, for sharding
        for path in self.paths:
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"{path}: no such data file")
            records = self._parquet(path, index) if is_parquet(path) else self._jsonl(path, index)
            for number, row, reason, detail in records:
                if row is None:
                    if reason is None:  # a record that only advances the index (the end-of-file count)
                        index = number
                        continue
                    if self.strict:
                        raise DataError(f"{path}:{number}: {reason}" + (f" ({detail})" if detail else ""))
                    reported = _row_reported(path, number, reason, self.schema, self.max_chars)
                    stats.add(reason, f"{path}:{number}", reported)
                    if not reported and not complete:
                        unreported.append((path, number))
                    continue
                if self._keep(row):
                    stats.rows += 1
                    yield row, f"{path}:{number}"
        # Only a completed pass logs, once: a consumer that stops early has not seen every row.
        stats.log(self.describe())
        if complete:
            mark_bad_rows_reported(self.paths, self.schema, self.max_chars)
        for path, number in unreported:
            _reported_lines[path].add(number)

    def without_filters(self) -> "RowReader":
        """The same files and shard, every language and row."""
        return RowReader(
            self.paths, strict=self.strict, schema=self.schema, shard_index=self.shard_index,
            num_shards=self.num_shards, max_chars=self.max_chars,
        )  # fmt: skip

    def cache_key(self) -> tuple:
        where = tuple(sorted((k, tuple(sorted(v))) for k, v in self.where.items()))
        return ("files", tuple(self.paths), self.schema, self.strict, self.shard_index, self.num_shards,
                self.max_chars, self.language, where)  # fmt: skip

    def size_bytes(self) -> int:
        return _total_bytes(tuple(self.paths))

    def describe(self) -> str:
        name = ", ".join(self.paths) if len(self.paths) < 3 else f"{self.paths[0]} (+{len(self.paths) - 1})"
        return name + (f" [{self.language}]" if self.language else "")

    def _keep(self, row: dict[str, str]) -> bool:
        if self.language and row["language_code"] != self.language:
            return False
        return all(row[field] in values for field, values in self.where.items())

    def _jsonl(self, path: str, start: int):
        """(line number, row, reason, detail) for this shard's lines; finally (next index, None, None, "")."""
        needles = _language_needles(self.language) if self.language else None
        index = start
        with _open_binary(path) as f:
            for number, line in enumerate(f, start=1):
                mine = index % self.num_shards == self.shard_index
                index += 1
                if not mine or not line.strip():
                    continue
                if needles is not None:
                    lowered = line.lower()
                    if not any(n in lowered for n in needles):
                        continue  # cannot be in this language (see the module docstring)
                row, reason, detail = validate_row(line, self.schema, self.max_chars)
                yield number, row, reason, detail
        yield index, None, None, ""

    def _parquet(self, path: str, start: int):
        import pyarrow as pa  # lazy: only parquet sources need it; jsonl-only runs skip its import
        import pyarrow.parquet as pq

        index = start
        if "://" in path:  # gs://, s3://, ...: through tf.io.gfile, into memory
            with tf.io.gfile.GFile(path, "rb") as f:
                parquet = pq.ParquetFile(pa.BufferReader(f.read()))
        else:
            parquet = pq.ParquetFile(path)
        with parquet:
            for batch in parquet.iter_batches(batch_size=4096):
                first = index
                index += batch.num_rows
                mine = [i for i in range(batch.num_rows) if (first + i) % self.num_shards == self.shard_index]
                if not mine:
                    continue
                for i, record in zip(mine, batch.take(mine).to_pylist(), strict=True):
                    yield first - start + i + 1, *check_record(record, self.schema, self.max_chars)
        yield index, None, None, ""

    def count_rows(self) -> BadRowStats:
        """One full validating pass without keeping rows; returns its stats."""
        for _ in self:
            pass
        return self.stats


GROUPED_CACHE_BYTES = 512 * 2**20
_GROUPED_CACHE_ENTRIES = 8
_grouped_cache: collections.OrderedDict = collections.OrderedDict()


@functools.cache
def _total_bytes(paths: tuple[str, ...]) -> int:
    return sum(tf.io.gfile.stat(p).length if tf.io.gfile.exists(p) else 0 for p in paths)


def grouped_rows(reader) -> dict[str, list[tuple[dict[str, str], str]]] | None:
    """language_code -> [(row, "path:line")] of all `reader`'s rows (one validating pass), cached per
    process by `reader.cache_key()`: every language task (or language stream) over these files shares it.
    None when the files are larger than `GROUPED_CACHE_BYTES` (see the module docstring)."""
    key = reader.cache_key()
    if key in _grouped_cache:
        _grouped_cache.move_to_end(key)
        return _grouped_cache[key]
    if reader.size_bytes() > GROUPED_CACHE_BYTES:
        return None
    grouped: dict[str, list] = collections.defaultdict(list)
    for row, where in reader.rows_with_locations():
        grouped[row["language_code"]].append((row, where))
    _grouped_cache[key] = grouped = dict(grouped)
    while len(_grouped_cache) > _GROUPED_CACHE_ENTRIES:
        _grouped_cache.popitem(last=False)
    return grouped


class AyaJsonlReader(RowReader):
    """Aya Dataset rows (the first slice's reader; any of the formats above, despite the name)."""

    def __init__(
        self, paths: Sequence[str], *, strict: bool, shard_index: int = 0, num_shards: int = 1, **kw
    ):
        super().__init__(paths, strict=strict, shard_index=shard_index, num_shards=num_shards, **kw)


class ShardedFunctionDataSource(seqio.FunctionDataSource):
    """A FunctionDataSource whose function reads only this host's shard.

    seqio's FunctionDataSource cannot shard below the file level, so a Task over it reads every row on every
    host and keeps each num_shards-th (`ds.shard`). Here `dataset_fn(split, shuffle_files, seed, shard_index,
    num_shards)` gets the shard and skips other hosts' lines without parsing them.
    """

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs  # unused, as in seqio's sources
        shard_info = shard_info or seqio.ShardInfo(index=0, num_shards=1)
        return self._dataset_fn(
            split=split,
            shuffle_files=shuffle,
            seed=seed,
            shard_index=shard_info.index,
            num_shards=shard_info.num_shards,
        )
