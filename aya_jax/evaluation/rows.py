"""The rows of a benchmark's files as published: parquet (Hugging Face datasets' layout) or JSON lines, each
row with its 1-based number (the parquet row, or the jsonl line — blank lines are skipped but counted), so that
every error names `file:row`; and `KeyedLog`, the append-only JSONL file in which long evaluations (answers,
judgments) keep each result as it arrives."""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow.parquet as pq

from aya_jax.data import cache
from aya_jax.data.sources import DataError

log = logging.getLogger(__name__)


def read_rows(path: str | pathlib.Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) of a .parquet or .jsonl file; DataError naming file:row for an unreadable file, a
    line that is not UTF-8, not JSON, or not a JSON object."""
    path = pathlib.Path(path)
    if path.suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a corrupt or non-parquet file
            raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        yield from enumerate(rows, start=1)
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not UTF-8 ({e.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: not a JSON object ({type(row).__name__})")
            yield number, row


def write_rows(path: str | pathlib.Path, records: Sequence[dict[str, Any]]) -> pathlib.Path:
    """`records` as a .jsonl file `read_rows` reads back, one JSON object a line, UTF-8 kept as is; the file is
    whole or absent (written aside, then renamed), so a killed writer never leaves half a file to be read."""
    path = pathlib.Path(path)
    cache.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


class KeyedLog:
    """Records kept as they arrive: a JSONL file, one object per line with a unique "key", appended (flushed
    and fsynced) batch by batch, so that a long job killed at any point keeps everything it finished and a
    rerun does only what `key in log` says is missing. A torn last line (a kill mid-write) is cut off on load
    and its work done again; a damaged line elsewhere is an error naming file:line, and nothing is cut.

    `writer=False` (every process but the first of a multi-host job): records are kept in memory only, so that
    one process writes the file that all of them read on a rerun (a workdir shared by the hosts)."""

    def __init__(self, path: str | os.PathLike, *, writer: bool = True):
        self.path = pathlib.Path(path)
        self.writer = writer
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.splitlines(keepends=True)
        good = 0
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                if not line.endswith(b"\n") or not isinstance(record, dict) or "key" not in record:
                    raise ValueError("not a whole keyed record")
            except ValueError as e:
                if number < len(lines):
                    raise DataError(f"{self.path}:{number}: not a record of this log ({e})") from None
                log.warning(
                    "%s: a torn last record (%d bytes) is dropped and will be done again",
                    self.path,
                    len(line),
                )
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                return
            self.records[record["key"]] = record
            good += len(line)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if self.writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        for record in records:
            self.records[record["key"]] = record
