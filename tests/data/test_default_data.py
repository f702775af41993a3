"""The embedded default data: real multilingual text, Aya Dataset schema, generated once and reused."""

import collections
import json
import threading
import time
import unicodedata

import pytest

from aya_jax.data import default_data, languages, sources


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def generated(data_dir, make_data_config):
    config = make_data_config(data_dir)
    start = time.perf_counter()
    manifest = default_data.ensure_default_data(config)
    seconds = time.perf_counter() - start
    paths = default_data.split_paths(config)
    rows = {split: _rows(path) for split, path in paths.items()}
    n_rows, n_languages = sum(map(len, rows.values())), len(manifest["rows_per_language"])
    megabytes = sum(f["bytes"] for f in manifest["files"].values()) / 1e6
    print(
        f"\ndefault data: {n_rows} rows in {n_languages} languages, {megabytes:.1f} MB, ensured in "
        f"{seconds:.1f}s (generation {manifest['seconds']}s)"
    )
    return manifest, paths, rows


def _scripts(text):
    """Unicode script-ish names of the letters in `text` (first word of each character's name)."""
    return {unicodedata.name(ch, "?").split()[0] for ch in text if ch.isalpha()}


def test_schema(generated):
    _, paths, rows = generated
    for split, split_rows in rows.items():
        assert split_rows, split
        for row in split_rows:
            assert set(row) == set(sources.FIELDS)
            assert all(isinstance(v, str) for v in row.values())
            assert row["targets"].strip() and row["inputs"].strip()
            lang = languages.lookup(row["language_code"])
            assert (row["language_code"], row["language"]) == (lang.iso639_3, lang.name)
            assert row["annotation_type"] in ("templated-cldr", "chatterbot-dialogue")
            assert len(row["user_id"]) == 16
        # The files are valid for the strict reader too.
        assert sources.AyaJsonlReader([str(paths[split])], strict=True).count_rows().rows == len(split_rows)


def test_real_multilingual_text(generated):
    manifest, _, rows = generated
    everything = rows["train"] + rows["validation"]
    per_language = collections.Counter(r["language_code"] for r in everything)
    assert len(per_language) >= 100, per_language
    assert per_language == collections.Counter(manifest["rows_per_language"])
    dialogue_languages = {
        r["language_code"] for r in everything if r["annotation_type"] == "chatterbot-dialogue"
    }
    assert len(dialogue_languages) >= 20
    scripts = set().union(*(_scripts(r["targets"]) for r in everything))
    expected = "LATIN CYRILLIC ARABIC DEVANAGARI CJK HIRAGANA HANGUL GREEK HEBREW THAI ETHIOPIC GEORGIAN"
    for script in expected.split() + ["ARMENIAN", "BENGALI", "TAMIL", "CHEROKEE"]:
        assert script in scripts, script
    assert 5_000 <= len(everything) <= 50_000
    validation_share = len(rows["validation"]) / len(everything)
    assert 0.01 < validation_share < 0.06


def test_cldr_answers_are_each_locales_own(generated):
    _, _, rows = generated
    by_prompt = {(r["language_code"], r["inputs"]): r["targets"] for r in rows["train"] + rows["validation"]}
    months = [t for (code, p), t in by_prompt.items() if code == "fra" and "month" in p and "," in t]
    assert months == [
        "janvier, février, mars, avril, mai, juin, juillet, août, septembre, octobre, novembre et décembre"
    ]
    # Regression: Babel's merged data hands later locales another locale's inherited names (Frisian weekdays);
    # each locale's own names must differ.
    wednesdays = [t for (_, p), t in by_prompt.items() if "Wednesday" in p and "date" not in p]
    assert len(wednesdays) > 80
    assert collections.Counter(wednesdays).most_common(1)[0][1] < 10


def test_split_is_disjoint_and_stable(generated):
    _, _, rows = generated
    key = lambda r: (r["inputs"], r["targets"], r["language_code"])
    train, validation = {key(r) for r in rows["train"]}, {key(r) for r in rows["validation"]}
    assert not train & validation
    assert len(train) == len(rows["train"])  # no duplicates
    for split, split_rows in rows.items():
        assert all(default_data.split_of(r) == split for r in split_rows)


def test_written_once_and_reused(generated, data_dir, make_data_config):
    manifest, paths, _ = generated
    mtimes = {split: path.stat().st_mtime_ns for split, path in paths.items()}
    assert default_data.ensure_default_data(make_data_config(data_dir)) == manifest
    assert {split: path.stat().st_mtime_ns for split, path in paths.items()} == mtimes


def test_regeneration_is_identical(tmp_path, make_data_config, generated, monkeypatch):
    manifest, _, _ = generated
    config = make_data_config(tmp_path)
    # Two builders racing on one directory both finish, and leave complete files.
    results = []
    threads = [threading.Thread(target=lambda: results.append(default_data.ensure_default_data(config)))]
    threads.append(threading.Thread(target=lambda: results.append(default_data.ensure_default_data(config))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    fresh = default_data.ensure_default_data(config)
    assert fresh["files"] == manifest["files"]  # same bytes (sha256) as the session's copy
    assert not list((tmp_path / "aya_default").glob(".*tmp"))  # no temporary files left behind
    # A new data version regenerates.
    monkeypatch.setattr(default_data, "DATA_VERSION", default_data.DATA_VERSION + 1)
    regenerated = default_data.ensure_default_data(config)
    assert regenerated["version"] == default_data.DATA_VERSION
    assert (
        json.loads((tmp_path / "aya_default" / "manifest.json").read_text())["version"]
        == regenerated["version"]
    )
