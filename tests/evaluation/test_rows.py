"""aya_jax.evaluation.rows: rows written whole or not at all and read back; KeyedLog: records kept as they arrive
— a torn last line is cut and redone, a damaged line elsewhere is an error naming file:line (nothing cut), and a
non-writing process keeps memory only."""

from __future__ import annotations

import json

import pytest

from aya_jax.data.sources import DataError
from aya_jax.evaluation import rows


def test_a_torn_last_line_is_cut_and_a_damaged_middle_line_is_named(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    log = rows.KeyedLog(path)
    log.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    log.append([{"key": "c", "v": "ü"}])
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # killed mid-write
    again = rows.KeyedLog(path)
    assert sorted(again.records) == ["a", "b"] and "c" not in again
    assert "torn last record" in caplog.text
    assert path.read_bytes() == whole[: whole.index(b'{"key": "c"')]  # cut back to the last whole record
    again.append([{"key": "c", "v": "ü"}])
    assert path.read_bytes() == whole

    lines = whole.decode().splitlines(keepends=True)
    path.write_text(lines[0] + "{not json\n" + lines[2], encoding="utf-8")
    with pytest.raises(DataError, match=r"log\.jsonl:2: not a record of this log"):
        rows.KeyedLog(path)
    assert path.read_text(encoding="utf-8") == lines[0] + "{not json\n" + lines[2]  # nothing cut


def test_only_the_writer_writes(tmp_path):
    path = tmp_path / "log.jsonl"
    rows.KeyedLog(path, writer=False).append([{"key": "x"}])
    assert not path.exists()
    writer = rows.KeyedLog(path)
    writer.append([{"key": "x", "answer": "1"}])
    reader = rows.KeyedLog(path, writer=False)
    assert "x" in reader and reader.records["x"]["answer"] == "1" and len(reader) == 1
    assert json.loads(path.read_text())["key"] == "x"


def test_written_rows_read_back_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "train.jsonl"
    records = [{"inputs": "Wie spät ist es?", "targets": "Es ist 9 Uhr."}, {"inputs": "今何時？", "n": 2}]
    assert rows.write_rows(path, records) == path
    assert [row for _, row in rows.read_rows(path)] == records
    assert "今何時" in path.read_text(encoding="utf-8")  # UTF-8 as is, not \u escapes
    with pytest.raises(TypeError):  # not JSON-able: nothing replaces the file, nothing is left beside it
        rows.write_rows(path, [{"inputs": "x"}, {"bad": object()}])
    assert [row for _, row in rows.read_rows(path)] == records
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]
