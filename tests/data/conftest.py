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
