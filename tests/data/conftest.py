"""Shared fixtures for the data tests: one generated default data set and one small vocabulary per session."""

import pytest

from configs import common


def _make_data_config(data_dir, **overrides):
    config = common.base_config().data
    config.data_dir = str(data_dir)
    config.vocab.size = 2000  # small: trains in about a second (1000 cannot cover the Han characters)
    config.seq_len = 128
    config.shuffle_buffer = 1000  # the first batch waits for the buffer to fill
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("aya_data")


@pytest.fixture
def data_config(data_dir):
    """A fresh config each test (tests may change fields) over the session's data directory."""
    return _make_data_config(data_dir)


@pytest.fixture(scope="session")
def make_data_config():
    """`make_data_config(data_dir, **overrides)`: a data config like `data_config` for another directory."""
    return _make_data_config


@pytest.fixture(scope="session")
def default_vocab_path(data_dir):
    """The session's 2000-piece SentencePiece model of the default data (trained once, then cached)."""
    from aya_jax.data import default_data, sources, vocab

    config = _make_data_config(data_dir)
    train = default_data.split_paths(config)["train"]
    return vocab.vocabulary(
        config, train_rows=sources.AyaJsonlReader([str(train)], strict=True)
    ).sentencepiece_model_file


@pytest.fixture(scope="session")
def aya_files(shared_data, tmp_path_factory):
    """The Aya-format fixtures of `aya_fixtures` (from ../shared/data), written once per session."""
    import aya_fixtures

    root = tmp_path_factory.mktemp("aya_files")
    files = {
        "root": root,
        "aya_dataset": aya_fixtures.write_aya_dataset(root / "aya_dataset", shared_data),
        "aya_collection": aya_fixtures.write_aya_collection(root / "aya_collection", shared_data),
        "preference": aya_fixtures.preference_rows(shared_data),
        "prompts": aya_fixtures.prompt_lines(shared_data),
    }
    aya_fixtures.write_jsonl_gz(root / "preference_pairs/train.jsonl.gz", files["preference"][:200])
    aya_fixtures.write_jsonl_gz(root / "preference_pairs/test.jsonl.gz", files["preference"][200:])
    (root / "prompts").mkdir()
    (root / "prompts/train.jsonl").write_bytes(b"\n".join(files["prompts"]) + b"\n")
    return files


@pytest.fixture
def aya_config(data_dir, aya_files, default_vocab_path):
    """A data config over the Aya fixtures, with the default data's SentencePiece model (no training)."""
    config = _make_data_config(data_dir)
    config.aya_dataset_dir = str(aya_files["root"] / "aya_dataset")
    config.aya_collection_dir = str(aya_files["root"] / "aya_collection")
    config.preference_dir = str(aya_files["root"] / "preference_pairs")
    config.prompts_dir = str(aya_files["root"] / "prompts")
    config.vocab.path = default_vocab_path
    config.seq_len = 256
    return config
