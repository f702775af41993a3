"""Reading Aya-Dataset-format jsonl (`.jsonl` or `.jsonl.gz`, local or any tf.io.gfile path), row by row, with
validation.

A row is one JSON object per line with at least string fields `inputs`, `targets` and `language_code`, and a
non-empty `targets`; `language`, `annotation_type` and `user_id` are optional strings (missing -> ""). A bad
row is either an error (`strict=True`: `DataError("<path>:<line>: <reason>")` on the first one) or skipped and
counted per reason (`strict=False`); after each full pass the reader logs one warning per reason, with the
count and the first offending `path:line`, and keeps the counts in `reader.stats`.

Sharding: with `num_shards > 1` the reader keeps line i (counted across all files, from 0, blank lines
included) iff `i % num_shards == shard_index`, and never decodes or validates the other lines, so hosts read
disjoint rows and each pays for its share only. A bad row is therefore reported by the host that owns it.
"""

import collections
import dataclasses
import gzip
import json
import logging
from collections.abc import Iterator, Sequence

import tensorflow as tf

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("inputs", "targets", "language_code")
OPTIONAL_FIELDS = ("language", "annotation_type", "user_id")
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS


class DataError(ValueError):
    """A malformed data row (strict mode); the message starts with `path:line:`."""


@dataclasses.dataclass
class BadRowStats:
    """Per-reason counts of skipped rows and the first `path:line` of each, for one pass."""

    rows: int = 0  # good rows yielded
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first: dict[str, str] = dataclasses.field(default_factory=dict)  # reason -> "path:line"

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, where)

    @property
    def bad_rows(self) -> int:
        return sum(self.counts.values())

    def log(self, name: str) -> None:
        for reason, n in sorted(self.counts.items()):
            log.warning("%s: skipped %d row(s): %s (first at %s)", name, n, reason, self.first[reason])


def _open_binary(path: str):
    f = tf.io.gfile.GFile(path, "rb")
    return gzip.GzipFile(fileobj=f, mode="rb") if path.endswith(".gz") else f


def validate_row(line: bytes) -> tuple[dict[str, str] | None, str | None, str]:
    """(row, None, "") for a good line; (None, reason, detail) for a bad one. Reasons are a small fixed set
    (the keys of the per-reason counts); the detail says where in the line, for the strict-mode error."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "non-UTF-8 bytes", f"at byte {e.start}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, "malformed JSON", f"{e.msg} at column {e.colno}"
    if not isinstance(obj, dict):
        return None, "not a JSON object", f"a {type(obj).__name__}"
    for field in REQUIRED_FIELDS:
        if field not in obj:
            return None, f"missing field '{field}'", ""
    for field in FIELDS:
        if field in obj and not isinstance(obj[field], str):
            return None, f"field '{field}' is not a string", f"a {type(obj[field]).__name__}"
    if not obj["targets"].strip():
        return None, "empty targets", ""
    return {field: obj.get(field, "") for field in FIELDS}, None, ""


class AyaJsonlReader:
    """Iterate the validated rows of `paths` (in order); each iteration is one pass and resets `stats`."""

    def __init__(self, paths: Sequence[str], *, strict: bool, shard_index: int = 0, num_shards: int = 1):
        if not paths:
            raise ValueError("AyaJsonlReader needs at least one file")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} is not in [0, num_shards={num_shards})")
        self.paths = [str(p) for p in paths]
        self.strict = strict
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.stats = BadRowStats()

    def __iter__(self) -> Iterator[dict[str, str]]:
        self.stats = stats = BadRowStats()
        index = 0  # line number across all files, for sharding
        for path in self.paths:
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"{path}: no such data file")
            with _open_binary(path) as f:
                for line_number, line in enumerate(f, start=1):
                    mine = index % self.num_shards == self.shard_index
                    index += 1
                    if not mine or not line.strip():
                        continue
                    row, reason, detail = validate_row(line)
                    if row is None:
                        if self.strict:
                            raise DataError(
                                f"{path}:{line_number}: {reason}" + (f" ({detail})" if detail else "")
                            )
                        stats.add(reason, f"{path}:{line_number}")
                        continue
                    stats.rows += 1
                    yield row
        # Only a completed pass logs, once: a consumer that stops early has not seen every row.
        stats.log(
            ", ".join(self.paths) if len(self.paths) < 3 else f"{self.paths[0]} (+{len(self.paths) - 1})"
        )

    def count_rows(self) -> BadRowStats:
        """One full validating pass without keeping rows; returns its stats."""
        for _ in self:
            pass
        return self.stats
