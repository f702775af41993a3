"""The `data_stats` and `train_vocab` jobs: counts against the task pipeline, proportions, outputs."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import seqio

from aya_jax.data import pipeline
from aya_jax.jobs import data_stats as stats
from aya_jax.jobs import train_vocab as vocab_training
from configs import data_stats as data_stats_config
from configs import train_vocab as train_vocab_config

REPO = pathlib.Path(__file__).resolve().parents[2]


def _job_config(module, data_config, arg=None):
    config = module.get_config(arg)
    for key, value in data_config.items():
        config.data[key] = value
    return config


def test_data_stats_on_both_aya_sources(aya_config, tmp_path, capsys):
    config = _job_config(data_stats_config, aya_config, "aya23_sft")
    config.data.task = "aya23_sft"
    config.data_stats.sample_examples = 6000
    result = stats.run(config, str(tmp_path))
    out = capsys.readouterr().out
    assert "aya23_sft: train rows per language" in out and "per source" in out
    assert set(result.per_source) == {
        "aya_dataset/original-annotations", "aya_dataset/re-annotations",
        "aya_collection/templated_ntrex128", "aya_collection/templated_ntrex128_en",
    }  # fmt: skip
    assert result.max_abs_difference() < 0.015
    assert abs(sum(result.configured.values()) - 1) < 1e-9 and abs(sum(result.sampled.values()) - 1) < 1e-9
    saved = json.loads(pathlib.Path(result.json_path).read_text())
    assert saved["per_language"]["ara"]["examples"] == result.per_language["ara"].examples > 0
    assert pathlib.Path(result.plot_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Token counts equal what the tokenizing task pipelines produce for the same rows (chat markers included).
    ukr = 0
    for task_name in ("aya_dataset_ukr", "aya_collection_ukr"):
        config.data.task = task_name
        task = seqio.get_mixture_or_task(pipeline.prepare(config.data).task_name)
        ukr += sum(
            len(ex["inputs"]) + len(ex["targets"])
            for ex in task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator()
        )
    assert result.per_language["ukr"].tokens == ukr


def test_train_vocab_balances_languages(data_dir, make_data_config, tmp_path, capsys):
    config = _job_config(train_vocab_config, make_data_config(data_dir))
    config.data.task = "aya_default"
    config.train_vocab.size = 1500
    config.train_vocab.max_rows = 4000
    summary = vocab_training.run(config, str(tmp_path))
    assert pathlib.Path(summary.model_path).name == "spm_1500.model" and summary.size == 1500
    assert sum(summary.rows_taken.values()) == 4000
    taken = sorted(summary.rows_taken.values())
    assert (
        taken[-1] < 3 * taken[len(taken) // 2]
    )  # flattened: the largest language is ~20x the median in rows
    assert "tokens/char" in capsys.readouterr().out and len(summary.tokens_per_char) > 100


def test_balanced_quotas_fill_the_budget():
    rows = {"a": 1000, "b": 100, "c": 10, "d": 0}
    # ~uniform (100 each): c has only 10, so a and b share 290; then b has only 100, so a takes the rest.
    quotas = vocab_training.balanced_quotas(rows, 300, temperature=1e9)
    assert quotas == {"a": 190, "b": 100, "c": 10, "d": 0}
    assert sum(vocab_training.balanced_quotas(rows, 10_000, 1.0).values()) == 1110  # never more than there is
    proportional = vocab_training.balanced_quotas({"a": 300, "b": 100}, 200, 1.0)
    assert proportional == {"a": 150, "b": 50}
    with pytest.raises(ValueError, match="config.train_vocab.temperature=0"):
        vocab_training.balanced_quotas(rows, 10, 0)


@pytest.mark.slow
def test_data_stats_command(data_dir, tmp_path):
    env = dict(
        os.environ,
        AYA_DATA_DIR=str(data_dir),
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(REPO),
    )
    command = [
        sys.executable, "-m", "aya_jax.main", "--config", "configs/data_stats.py", "--workdir", str(tmp_path),
        "--config.data.vocab.size=2000", "--config.data_stats.sample_examples=20000",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |configured - sampled|" in result.stdout
    assert (tmp_path / "language_distribution.png").is_file() and (tmp_path / "data_stats.json").is_file()
