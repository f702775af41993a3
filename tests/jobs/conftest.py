"""Shared fixtures of the end-to-end job tests: one data directory, one tiny SFT checkpoint and one tiny reward
model per test session (per xdist worker), which the preference tests (reward, DPO, RLOO, multi-host) start
from instead of each training their own."""

import pytest
import runs  # the helper module beside this file


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The default data and its vocabularies, generated once (AYA_DATA_DIR of every run here)."""
    return tmp_path_factory.mktemp("aya_data")


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, data_dir):
    """A 120-step SFT checkpoint of the shrunk quickstart (runs.tiny_sft)."""
    return runs.tiny_sft(tmp_path_factory.mktemp("sft"), data_dir)


@pytest.fixture(scope="session")
def early_sft_run(tmp_path_factory, data_dir):
    """The same recipe stopped at 40 steps (the same vocabulary): a weaker checkpoint to compare `sft_run` with."""
    return runs.tiny_sft(tmp_path_factory.mktemp("early_sft"), data_dir, steps=40)


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory, data_dir, sft_run):
    """A reward model trained 4 steps from `sft_run` on a (data=2, fsdp=2, tensor=2) mesh: enough to rank."""
    workdir = tmp_path_factory.mktemp("reward")
    proc = runs.run(
        "configs/reward.py", workdir, data_dir, "--config.data.seq_len=64", "--config.reward.prompt_len=32",
        "--config.train.steps=4", "--config.reward.max_eval_pairs=16", "--config.mesh.shape=(2,2,2)",
        f"--config.checkpoint.init_from={sft_run}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def global_mmlu_dir(tmp_path_factory):
    """A small Global-MMLU folder in the published layout (runs.write_global_mmlu)."""
    return runs.write_global_mmlu(tmp_path_factory.mktemp("global_mmlu"))
