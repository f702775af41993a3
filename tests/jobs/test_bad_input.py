"""The bad-input suite: each case is a job given one wrong input — a workdir of another job or model, a missing,
unwritable or mismatched path, a value out of range, an unknown name — and must end with the one-line error
`main` prints (exit 2) naming the culprit, before any work, with nothing written or deleted.

The jobs run in-process (the errors main turns into `error: <line>` + exit 2 are the ones in `main._ERRORS`),
so the suite costs seconds per case; `test_main_prints_one_line_and_exits_2` runs a few through
`python -m aya_jax.main` to show the same messages reach the user that way."""

from __future__ import annotations

import importlib
import pathlib
import re
import shutil

import pytest
import runs  # the helper module beside this file

from aya_jax import jobs, main

pytestmark = pytest.mark.bad_input

# runs.TINY_MODEL as config values (the model and vocabulary of the session's tiny SFT run).
TINY = {
    "model.overrides.num_layers": 2,
    "data.vocab.size": 2048,
    "data.seq_len": 64,
    "train.progress_bar": False,
    "metrics.tensorboard": False,
    "checkpoint.async_save": False,
    "train.sample_prompts": 0,
}


# What each job's own tests shrink besides (prompt and completion lengths that fit TINY's 64-token rows).
SHRUNK = {
    "dpo": {"dpo.prompt_len": 32, "dpo.max_new_tokens": 16},
    "reward": {"reward.prompt_len": 32},
    "rloo": {"rloo.max_prompt_tokens": 16, "rloo.max_new_tokens": 8},
}


def _config(name: str, overrides: dict, arg: str | None = None):
    module = importlib.import_module(f"configs.{name}")
    config = module.get_config(*([arg] if arg else []))
    for field, value in {**TINY, **SHRUNK.get(name, {}), **overrides}.items():
        *parents, leaf = field.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _snapshot(*roots: pathlib.Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime) of every file and folder under `roots`: what "nothing written or deleted" compares."""
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")] if root.exists() else []:
            st = p.stat()
            out[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def _fails(config, workdir: pathlib.Path, watched: list[pathlib.Path]) -> str:
    """Run the job; return its one-line error (an error main reports as one line with exit 2), having checked
    that nothing under `watched` (and `workdir`) was written or deleted."""
    before = _snapshot(workdir, *watched)
    with pytest.raises(main._ERRORS) as raised:
        jobs.get_job(config.job)(config, str(workdir))
    assert _snapshot(workdir, *watched) == before, "the failed job wrote or deleted something"
    message = str(raised.value)
    assert "\n" not in message.strip(), message
    return message


@pytest.fixture
def env_data(monkeypatch, data_dir):
    monkeypatch.setenv("AYA_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture
def under_a_file(tmp_path) -> pathlib.Path:
    """A workdir that cannot be created, even by root: its parent is a regular file."""
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path / "a_file" / "workdir"


# ---- a workdir that is not this run's ---------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["rloo", "dpo", "reward"])
def test_a_workdir_of_another_job_is_refused(env_data, sft_run, tmp_path, job):
    workdir = tmp_path / "sft_copy"
    shutil.copytree(sft_run, workdir)
    config = _config(job, {"checkpoint.init_from": str(sft_run)})
    message = _fails(config, workdir, [])
    assert message.startswith(f"--workdir: {workdir} holds a 'sft' run, not a '{job}' run"), message


def test_a_workdir_of_another_model_is_refused(env_data, sft_run, tmp_path):
    workdir = tmp_path / "sft_copy"
    shutil.copytree(sft_run, workdir)
    message = _fails(_config("quickstart", {"model.overrides.num_layers": 3}), workdir, [])
    assert message.startswith(f"config.model.overrides.num_layers: 3, but --workdir {workdir} holds a sft run "
                              "with 2"), message  # fmt: skip


def test_init_from_a_reward_model_is_refused(env_data, tiny_reward_model, tmp_path):
    config = _config("dpo", {"checkpoint.init_from": str(tiny_reward_model),
                             "dpo.reward_model": str(tiny_reward_model)})  # fmt: skip
    message = _fails(config, tmp_path / "dpo", [tiny_reward_model])
    assert message.startswith(f"config.checkpoint.init_from: {tiny_reward_model} is a reward model"), message


# ---- paths ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["quickstart", "reward", "rloo"])
def test_an_unwritable_workdir_is_refused_first(env_data, sft_run, under_a_file, job):
    config = _config(job, {"checkpoint.init_from": str(sft_run)} if job != "quickstart" else {})
    message = _fails(config, under_a_file, [sft_run])
    assert message.startswith(f"--workdir: {under_a_file} is not writable"), message


@pytest.mark.parametrize(
    "job, overrides, culprit",
    [
        ("quickstart", {"checkpoint.init_from": "{tmp}/no_such_run", "train.steps": 2}, "config.checkpoint.init_from"),
        ("quickstart", {"model.hf_init_dir": "{tmp}/empty", "train.steps": 2}, "config.model.hf_init_dir"),
        ("dpo", {"checkpoint.init_from": "{tmp}/no_such_run"}, "config.checkpoint.init_from"),
        ("quickstart", {"data.gin_files": ("{tmp}/no_such.gin",), "data.task": "aya_default_mixture"},
         "config.data.gin_files"),
    ],
)  # fmt: skip
def test_a_missing_path_names_its_field(env_data, sft_run, tmp_path, job, overrides, culprit):
    (tmp_path / "empty").mkdir()
    overrides = {
        k: type(v)(x.format(tmp=tmp_path, sft=sft_run) for x in v) if isinstance(v, tuple)
        else v.format(tmp=tmp_path, sft=sft_run) if isinstance(v, str) else v
        for k, v in overrides.items()
    }  # fmt: skip
    message = _fails(_config(job, overrides), tmp_path / "run", [sft_run])
    assert message.startswith(f"{culprit}: "), message


# ---- checkpoints that do not fit ---------------------------------------------------------------------------------


def test_init_from_another_architecture_names_the_field(env_data, sft_run, tmp_path):
    config = _config("quickstart", {"checkpoint.init_from": str(sft_run), "model.overrides.hidden_size": 128,
                                    "train.steps": 2})  # fmt: skip
    message = _fails(config, tmp_path / "run", [sft_run])
    assert message.startswith("config.checkpoint.init_from: ") and "do not fit the model" in message, message


def test_export_of_a_step_that_does_not_exist_names_the_steps(env_data, sft_run, tmp_path):
    config = _config("hf_convert", {"hf_convert.checkpoint_dir": str(sft_run), "hf_convert.step": 7,
                                    "hf_convert.out_dir": str(tmp_path / "out")}, arg="export")  # fmt: skip
    message = _fails(config, tmp_path / "unused", [sft_run])
    assert re.match(r"config\.hf_convert\.step: \S+: has no checkpoint step 7 \(steps: 120\)", message), (
        message
    )


# ---- values and names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job, overrides, culprit",
    [
        ("quickstart", {"train.eval_every": -1}, "config.train.eval_every"),
        ("quickstart", {"train.eval_batches": -1}, "config.train.eval_batches"),
        ("quickstart", {"train.nonfinite": "ignore"}, "config.train.nonfinite"),
        ("quickstart", {"checkpoint.keep": 0}, "config.checkpoint.keep"),
        ("quickstart", {"model.preset": "cohere-huge"}, "config.model.preset"),
        ("quickstart", {"data.task": "aya_default_mixture",
                        "data.gin_bindings": ("aya_default_mixtur/mixture_spec.temperature = 1.0",)},
         "config.data.gin_bindings"),
        ("reward", {"checkpoint.init_from": "{sft}", "reward.task": "no_such_task"}, "config.reward.task"),
        ("quickstart", {"data.task": "no_such_task"}, "config.data.task"),
        ("merge", {"merge.method": "no_such_method", "merge.models": ("{sft}", "{sft}")}, "config.merge.method"),
        ("quickstart", {"job": "no_such_job"}, "config.job"),
    ],
)  # fmt: skip
def test_a_bad_value_or_name_names_its_field(env_data, sft_run, tmp_path, job, overrides, culprit):
    def fill(v):  # "{sft}" -> the session's SFT run, also inside tuples
        if isinstance(v, tuple):
            return tuple(fill(x) for x in v)
        return v.format(sft=sft_run) if isinstance(v, str) else v

    overrides = {k: fill(v) for k, v in overrides.items()}
    message = _fails(_config(job, overrides), tmp_path / "run", [sft_run])
    assert message.startswith(f"{culprit}: "), message


# ---- through the command line -------------------------------------------------------------------------------------


def test_main_prints_one_line_and_exits_2(data_dir, sft_run, tmp_path):
    workdir = tmp_path / "sft_copy"
    shutil.copytree(sft_run, workdir)
    before = _snapshot(workdir)
    proc = runs.run(
        "configs/rloo.py", workdir, data_dir, f"--config.checkpoint.init_from={sft_run}", timeout=200
    )
    errors = runs.error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: --workdir: {workdir} holds a 'sft' run, not a 'rloo' run")
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
    assert _snapshot(workdir) == before
