"""The rows of a benchmark's files as published: parquet (Hugging Face datasets' layout) or JSON lines, each
row with its 1-based number (the parquet row, or the jsonl line — blank lines are skipped but counted), so that
every error names `file:row`."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from aya_jax.data.sources import DataError


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
