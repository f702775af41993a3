"""A source's files and row counts: finding the files of each split by name as published, and counting the
train rows per language and sub-source once (cached on disk), for mixing rates and statistics."""

import collections
import dataclasses
import hashlib
import json
import logging
import pathlib
from collections.abc import Sequence

import tensorflow as tf

from aya_jax.data import cache
from aya_jax.data.sources import RowReader, Schema, bad_rows_reported, mark_bad_rows_reported

log = logging.getLogger(__name__)

DATA_EXTENSIONS = (".jsonl", ".jsonl.gz", ".parquet")
# File (or folder) name prefixes of each split, as published: the Aya Dataset has train / test.
SPLIT_PREFIXES = {"train": ("train",), "validation": ("validation", "valid", "dev")}
TEST_PREFIXES = ("test",)  # used for "validation" when a source has no validation files


# ---- finding files -----------------------------------------------------------------------------------------


def _split_of(relative: str) -> str | None:
    parts = [p.lower() for p in pathlib.PurePosixPath(relative).parts]
    for part in reversed(parts):  # the file name first, then its folders
        for split, prefixes in (*SPLIT_PREFIXES.items(), ("test", TEST_PREFIXES)):
            if part.startswith(prefixes):
                return split
    return None


def discover_split_files(root: str) -> dict[str, list[str]]:
    """Data files under `root` by split, found by name as published (`train-00000-of-00001.parquet`,
    `train.jsonl.gz`, `test/part-0.jsonl`, ...): "train", and "validation" from validation / valid / dev
    files, else from test files. A single file is the train split. Files of no known split are ignored (with
    a warning)."""
    root = str(root).rstrip("/")
    if not tf.io.gfile.exists(root):
        raise FileNotFoundError(f"{root}: no such file or directory")
    if not tf.io.gfile.isdir(root):
        return {"train": [root]}
    found: dict[str, list[str]] = collections.defaultdict(list)
    ignored = []
    for folder, _, names in tf.io.gfile.walk(root):
        for name in names:
            if not name.endswith(DATA_EXTENSIONS) or name.startswith("."):
                continue
            path = f"{str(folder).rstrip('/')}/{name}"
            split = _split_of(path[len(root) + 1 :])
            (found[split] if split else ignored).append(path)
    if ignored:
        log.warning("%s: %d data file(s) of no known split ignored, e.g. %s", root, len(ignored), ignored[0])
    out = {"train": sorted(found["train"])} if found["train"] else {}
    held_out = found["validation"] or found["test"]
    if held_out:
        out["validation"] = sorted(held_out)
    return out


# ---- counting (for mixing rates and statistics) ------------------------------------------------------------

COUNTS_VERSION = 1


@dataclasses.dataclass
class RowCounts:
    """Good rows and characters per (language_code, sub-source), and the bad rows, of some files."""

    rows: dict[tuple[str, str], int]
    chars: dict[tuple[str, str], int]
    bad: dict[str, int]
    first_bad: dict[str, str]

    def rows_per_language(self) -> dict[str, int]:
        out = collections.Counter()
        for (code, _), n in self.rows.items():
            out[code] += n
        return dict(out)

    def total(self) -> int:
        return sum(self.rows.values())

    def to_json(self) -> dict:
        return {
            "version": COUNTS_VERSION,
            "rows": [[c, s, n] for (c, s), n in sorted(self.rows.items())],
            "chars": [[c, s, n] for (c, s), n in sorted(self.chars.items())],
            "bad": self.bad,
            "first_bad": self.first_bad,
        }

    @classmethod
    def from_json(cls, obj: dict) -> "RowCounts":
        return cls(
            rows={(c, s): n for c, s, n in obj["rows"]},
            chars={(c, s): n for c, s, n in obj["chars"]},
            bad=dict(obj["bad"]),
            first_bad=dict(obj["first_bad"]),
        )


def fingerprint(paths: Sequence[str], schema: Schema, max_chars: int | None) -> str:
    digest = hashlib.sha256(json.dumps([COUNTS_VERSION, schema.name, max_chars]).encode())
    for path in paths:
        stat = tf.io.gfile.stat(path)
        digest.update(json.dumps([path, stat.length, stat.mtime_nsec]).encode())
    return digest.hexdigest()[:20]


def count_rows(
    paths: Sequence[str],
    schema: Schema,
    *,
    strict: bool,
    max_chars: int | None = None,
    cache_dir: pathlib.Path | None = None,
) -> RowCounts:
    """One validating pass over `paths` (all shards), counting rows per (language_code, sub-source). The
    result is cached in `cache_dir` under a fingerprint of the files (path, size, mtime), the schema and
    `max_chars`, so a large source is scanned once. Strict mode raises at the first bad row, as reading
    would; lenient mode logs the per-reason counts (also when they come from the cache)."""
    path = cache_dir / f"counts_{fingerprint(paths, schema, max_chars)}.json" if cache_dir else None
    counts = None
    if path is not None and path.is_file():
        try:
            counts = RowCounts.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError):
            counts = None
    if counts is None:
        reader = RowReader(paths, strict=strict, schema=schema, max_chars=max_chars)
        rows, chars = collections.Counter(), collections.Counter()
        for row in reader:
            key = (row["language_code"], schema.source_of(row))
            rows[key] += 1
            chars[key] += sum(len(row[f]) for f in schema.text_fields)
        counts = RowCounts(dict(rows), dict(chars), dict(reader.stats.counts), dict(reader.stats.first))
        if path is not None:
            cache.atomic_write_text(path, json.dumps(counts.to_json(), ensure_ascii=False))
    elif counts.bad:
        if strict:  # counted leniently before: read again, strictly, to raise at the first bad row
            RowReader(paths, strict=True, schema=schema, max_chars=max_chars).count_rows()
        # Counts of every row of these files: after them, no reader reports these files' bad rows again.
        if not bad_rows_reported(paths, schema, max_chars):
            for reason, n in sorted(counts.bad.items()):
                log.warning(
                    "%s: skipped %d row(s): %s (first at %s)", paths[0], n, reason, counts.first_bad[reason]
                )
            mark_bad_rows_reported(paths, schema, max_chars)
    return counts
