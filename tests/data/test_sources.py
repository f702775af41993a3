"""Validated reading of Aya-format jsonl: every bad-row reason counted, strict mode names path:line."""

import gzip
import json
import logging

import pytest

from aya_jax.data import source_files, sources


def _good(i):
    return json.dumps({"inputs": f"question {i}", "targets": f"answer {i}", "language_code": "eng"}).encode()


# (line bytes, reason) in file order; None = a good row.
LINES = [
    (_good(0), None),
    (b'{"inputs": "a", "targets": "b", "language_code": "fra"', "malformed JSON"),
    (b'["inputs", "targets"]', "not a JSON object"),
    (b'{"targets": "b", "language_code": "fra"}', "missing field 'inputs'"),
    (_good(1), None),
    (b'{"inputs": "a", "targets": "b"}', "missing field 'language_code'"),
    (b'{"inputs": "a", "targets": 7, "language_code": "fra"}', "field 'targets' is not a string"),
    (b'{"inputs": "a", "targets": "  ", "language_code": "fra"}', "empty targets"),
    (b'{"inputs": "caf\xe9", "targets": "b", "language_code": "fra"}', "non-UTF-8 bytes"),
    (b"", None),  # blank lines are skipped silently
    (
        b'{"inputs": "a", "targets": "b", "language_code": "fra", "user_id": 12}',
        "field 'user_id' is not a string",
    ),
    (b'{"targets": "x", "language_code": "fra"}', "missing field 'inputs'"),
    (_good(2), None),
]


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in LINES) + b"\n")
    return path


def test_lenient_mode_counts_each_reason(bad_file, caplog):
    reader = sources.AyaJsonlReader([str(bad_file)], strict=False)
    with caplog.at_level(logging.WARNING, logger="aya_jax.data.sources"):
        rows = list(reader)
    assert [r["inputs"] for r in rows] == ["question 0", "question 1", "question 2"]
    assert rows[0] == {
        "inputs": "question 0", "targets": "answer 0", "language_code": "eng",
        "language": "", "annotation_type": "", "user_id": "",
    }  # fmt: skip
    expected = {}
    for number, (_, reason) in enumerate(LINES, start=1):
        if reason:
            expected.setdefault(reason, [0, f"{bad_file}:{number}"])[0] += 1
    assert dict(reader.stats.counts) == {reason: n for reason, (n, _) in expected.items()}
    assert reader.stats.first == {reason: where for reason, (_, where) in expected.items()}
    assert reader.stats.rows == 3 and reader.stats.bad_rows == 9
    # One warning line per reason, at the end of the pass, naming the first offending line.
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(expected)
    assert f"skipped 2 row(s): missing field 'inputs' (first at {bad_file}:4)" in "\n".join(warnings)


def test_strict_mode_raises_at_the_first_bad_row(bad_file):
    reader = sources.AyaJsonlReader([str(bad_file)], strict=True)
    with pytest.raises(sources.DataError, match=rf"^{bad_file}:2: malformed JSON \(") as info:
        list(reader)
    assert isinstance(info.value, ValueError)
    # Each reason in strict mode, alone in a file, with its exact line.
    for number, (line, reason) in enumerate(LINES, start=1):
        if reason:
            path = bad_file.with_name(f"one_{number}.jsonl")
            path.write_bytes(_good(0) + b"\n\n" + line + b"\n")
            with pytest.raises(sources.DataError, match=rf"^{path}:3: {reason}"):
                list(sources.AyaJsonlReader([str(path)], strict=True))


def test_gzip_and_several_files(tmp_path):
    plain, packed = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    plain.write_bytes(_good(0) + b"\n" + _good(1) + b"\n")
    with gzip.open(packed, "wb") as f:
        f.write(_good(2) + b"\n" + b"{broken\n")
    reader = sources.AyaJsonlReader([str(plain), str(packed)], strict=False)
    assert [r["inputs"] for r in reader] == ["question 0", "question 1", "question 2"]
    assert reader.stats.first == {"malformed JSON": f"{packed}:2"}
    with pytest.raises(sources.DataError, match=rf"^{packed}:2: malformed JSON"):
        list(sources.AyaJsonlReader([str(plain), str(packed)], strict=True))


def test_shards_are_disjoint_and_cover_every_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(_good(i) for i in range(11)) + b"\n")
    shards = [
        [r["inputs"] for r in sources.AyaJsonlReader([str(path)], strict=True, shard_index=i, num_shards=3)]
        for i in range(3)
    ]
    assert shards[1] == ["question 1", "question 4", "question 7", "question 10"]
    assert sorted(sum(shards, [])) == sorted(f"question {i}" for i in range(11))
    # A host never parses other hosts' lines: a bad line in shard 1 is invisible to shard 0.
    path.write_bytes(_good(0) + b"\n{broken\n" + _good(2) + b"\n")
    assert len(list(sources.AyaJsonlReader([str(path)], strict=True, shard_index=0, num_shards=2))) == 2
    with pytest.raises(sources.DataError, match=":2: malformed JSON"):
        list(sources.AyaJsonlReader([str(path)], strict=True, shard_index=1, num_shards=2))


def _skip_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]


def test_each_bad_row_is_reported_once_per_process(tmp_path, caplog):
    # Bad rows in fra and eng lines: one malformed, one over-long (with max_chars 60), one without inputs.
    fra = json.dumps({"inputs": "bonjour " * 10, "targets": "salut", "language_code": "fra"}).encode()
    lines = [_good(0), b'{"inputs": "a", "language_code": "fra"', _good(1), fra, _good(2), b'{"targets": "b", "language_code": "eng"}']  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected = {
        "malformed JSON": f"{path}:2",
        "over-long row": f"{path}:4",
        "missing field 'inputs'": f"{path}:6",
    }
    paths = [str(path)]
    with caplog.at_level(logging.WARNING):
        # The passes of one training process, in the pipeline's order: the row count when the source is
        # registered (twice: the second from its cache), vocabulary training (no max_chars), two epochs of two
        # hosts' shards, a language's rows, and an eval split read again on every repeat.
        for _ in range(2):
            counts = source_files.count_rows(
                paths, sources.AYA_DATASET, strict=False, max_chars=60, cache_dir=tmp_path / "counts"
            )
        assert counts.bad == {reason: 1 for reason in expected}
        vocab_pass = sources.RowReader(paths, strict=False)
        assert len(list(vocab_pass)) == 4 and vocab_pass.stats.bad_rows == 2  # the long row is kept here
        for _epoch in range(2):
            for shard in range(2):
                list(sources.RowReader(paths, strict=False, shard_index=shard, num_shards=2, max_chars=60))
        list(sources.RowReader(paths, strict=False, language="fra", max_chars=60))
        eval_reader = sources.RowReader(paths, strict=False, max_chars=60)
        for _ in range(3):
            assert len(list(eval_reader)) == 3
            assert eval_reader.stats.first == expected  # a pass's stats still count every bad row
    # Once each, by the first (uncached) count.
    assert sorted(_skip_warnings(caplog)) == sorted(
        f"{path}: skipped 1 row(s): {reason} (first at {where})" for reason, where in expected.items()
    )


def test_partial_passes_report_their_rows_once(tmp_path, caplog):
    lines = [_good(0), b"{broken", _good(1), b"[1]", _good(2), b'{"targets": "b", "language_code": "eng"}']
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    def read(**kw):
        caplog.clear()
        list(sources.RowReader([str(path)], strict=False, **kw))
        return _skip_warnings(caplog)

    with caplog.at_level(logging.WARNING):
        # Host 1 of 2 sees lines 2, 4 and 6; host 0 none of them; a rerun of either reports nothing new.
        assert len(read(shard_index=1, num_shards=2)) == 3
        assert read(shard_index=0, num_shards=2) == []
        assert read(shard_index=1, num_shards=2) == []
        assert read(shard_index=1, num_shards=3) == []  # lines 2 and 5: only line 2 is bad, and reported
        assert read() == []  # the whole file: every bad row was reported by a partial pass
        # A lower limit makes rows over-long that no pass has reported: those, and only those.
        assert read(max_chars=10) == [f"{path}: skipped 3 row(s): over-long row (first at {path}:1)"]
        assert read(max_chars=10, shard_index=0, num_shards=2) == []


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such data file"):
        list(sources.AyaJsonlReader([str(tmp_path / "nope.jsonl")], strict=False))


# ---- other formats and schemas -----------------------------------------------------------------------------


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_collection_rows_and_row_numbers(tmp_path):
    rows = [
        {
            "id": 7,
            "inputs": "Q1",
            "targets": "A1",
            "language": "French",
            "dataset_name": "d",
            "template_id": 2,
        },
        {"id": 8, "inputs": "Q2", "targets": None, "language": "fra", "dataset_name": "d", "template_id": 2},
        {"id": 9, "inputs": "Q3", "targets": "A3", "language": "zsm", "dataset_name": "e", "template_id": 1},
    ]
    path = _parquet(tmp_path / "train-00000-of-00001.parquet", rows)
    reader = sources.RowReader([str(path)], strict=False, schema=sources.AYA_COLLECTION)
    got = list(reader)
    # A language name or any accepted code becomes the table's ISO 639-3 code; numbers become text.
    assert [(r["language_code"], r["id"], r["template_id"]) for r in got] == [
        ("fra", "7", "2"),
        ("msa", "9", "1"),
    ]
    assert reader.stats.first == {"missing field 'targets'": f"{path}:2"}
    with pytest.raises(sources.DataError, match=rf"^{path}:2: missing field 'targets'"):
        list(sources.RowReader([str(path)], strict=True, schema=sources.AYA_COLLECTION))
    where = sources.RowReader(
        [str(path)], strict=False, schema=sources.AYA_COLLECTION, where={"dataset_name": ["e"]}
    )
    assert [r["inputs"] for r in where] == ["Q3"]


def test_preference_and_prompt_schemas(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [
        {"prompt": "p", "chosen": "c", "rejected": "r", "language": "de", "category": "chat"},
        {"prompt": "p", "chosen": "c", "rejected": "", "language": "de"},
        {"prompt": "p", "chosen": "c", "rejected": "r"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    reader = sources.RowReader([str(path)], strict=False, schema=sources.PREFERENCE)
    assert [r["language_code"] for r in reader] == ["deu"]
    assert dict(reader.stats.counts) == {
        "empty rejected": 1,
        "missing field 'language_code' or 'language'": 1,
    }
    assert sources.PREFERENCE.source_of(lines[0]) == "chat"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"inputs": "Habari?", "language_code": "swh", "id": 3}) + "\n"
    )  # `inputs` alias
    assert list(sources.RowReader([str(prompts)], strict=True, schema=sources.PROMPTS)) == [
        {"prompt": "Habari?", "language_code": "swa", "language": "", "id": "3"}
    ]


def test_language_readers_scan_or_group_to_the_same_rows(data_dir, make_data_config, monkeypatch):
    from aya_jax.data import default_data

    path = str(default_data.split_paths(make_data_config(data_dir))["train"])
    everything = list(sources.RowReader([path], strict=True))
    for code in ("fra", "zho", "srp", "nya"):
        expected = [r for r in everything if r["language_code"] == code]
        grouped = list(sources.RowReader([path], strict=True, language=code))  # from the per-process grouping
        monkeypatch.setattr(sources, "GROUPED_CACHE_BYTES", 0)  # as if the file were too large to group
        scanned = list(sources.RowReader([path], strict=True, language=code))  # byte pre-filter, then parse
        monkeypatch.undo()
        assert grouped == scanned == expected and expected


def test_split_files_are_found_by_name_as_published(tmp_path):
    for name in ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "data/test-00000.parquet",
                 "extra/validation.jsonl.gz", "README.md", "notes/other.jsonl"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = source_files.discover_split_files(str(tmp_path))
    assert found == {
        "train": [
            f"{tmp_path}/data/train-00000-of-00002.parquet",
            f"{tmp_path}/data/train-00001-of-00002.parquet",
        ],
        "validation": [f"{tmp_path}/extra/validation.jsonl.gz"],  # validation files win over test files
    }
    single = tmp_path / "data/test-00000.parquet"
    assert source_files.discover_split_files(str(single)) == {"train": [str(single)]}
