"""Where the jobs write: every output location is checked before any model or data is loaded, and Hugging Face
conversions replace their out_dir as a whole (aya_jax/workdirs.py).

In-process calls of the job functions (what `aya_jax.main` dispatches to), with the checkpoint or data pointed at
nothing where the output check must come first; one subprocess run shows the exit status and the one line."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import runs  # the helper module beside this file
from flax import linen as nn

from aya_jax import hf, workdirs
from aya_jax.jobs import aot, data_stats, generate, hf_convert, train_vocab
from aya_jax.models import cohere
from configs import aot as aot_config
from configs import data_stats as data_stats_config
from configs import generate as generate_config
from configs import hf_convert as hf_convert_config
from configs import train_vocab as train_vocab_config

CFG = cohere.PRESETS["cohere-tiny"].replace(
    vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, bos_id=5, eos_id=1
)


@pytest.fixture
def unwritable(tmp_path):
    """A folder no job can create or write in, and a check that nothing changed there. Root ignores permission
    bits, so as root it lies under a regular file (NotADirectoryError for everyone); otherwise it is inside a
    read-only folder."""
    if os.geteuid() == 0:
        blocker = tmp_path / "a_file"
        blocker.write_text("not a folder\n")
        path = blocker / "workdir"
    else:
        blocker = tmp_path / "read_only"
        blocker.mkdir()
        blocker.chmod(0o500)
        path = blocker / "workdir"
    before = _listing(tmp_path)
    yield path
    assert _listing(tmp_path) == before  # nothing written, nothing deleted
    if blocker.is_dir():
        blocker.chmod(0o700)


def _listing(root: pathlib.Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))
    }


def _assert_one_line(error: BaseException, field: str, path) -> None:
    message = str(error)
    assert message.startswith(f"{field}: ") and str(path) in message and "\n" not in message, message


# ------------------------------------------------------------------------------------------------------------
# Unwritable outputs: refused before any model or data is loaded
# ------------------------------------------------------------------------------------------------------------


def _generate_config(tmp_path):
    config = generate_config.get_config()
    # Loading it would fail: the output check must come first.
    config.generate.checkpoint_dir = str(tmp_path / "no_such_run")
    config.generate.prompt = "Bonjour"
    config.generate.max_new_tokens = 2
    return config


@pytest.mark.bad_input
def test_generate_refuses_an_unwritable_workdir_before_loading_the_model(tmp_path, unwritable):
    with pytest.raises(workdirs.WorkdirError) as e:
        generate.run(_generate_config(tmp_path), str(unwritable))
    _assert_one_line(e.value, "--workdir", unwritable)


@pytest.mark.bad_input
def test_generate_refuses_an_unwritable_output_file_before_loading_the_model(tmp_path, unwritable):
    config = _generate_config(tmp_path)
    config.generate.output_file = str(unwritable / "generations.jsonl")
    with pytest.raises(workdirs.WorkdirError) as e:
        generate.run(config, str(tmp_path / "workdir"))
    _assert_one_line(e.value, "config.generate.output_file", unwritable)
    assert not (tmp_path / "workdir").exists()  # the workdir is not where this run writes


def _data_stats_config(tmp_path):
    config = data_stats_config.get_config()
    config.data.data_dir = str(tmp_path / "no_data")
    return config


def _train_vocab_config(tmp_path):
    config = train_vocab_config.get_config()
    config.data.data_dir = str(tmp_path / "no_data")
    return config


def _aot_config(tmp_path):
    del tmp_path
    # For a v5e-16 (no libtpu here: an error naming config.aot.topology): the output check must come first.
    return aot_config.get_config("cohere-tiny")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "job, make_config",
    [(data_stats.run, _data_stats_config), (train_vocab.run, _train_vocab_config), (aot.run, _aot_config)],
    ids=["data_stats", "train_vocab", "aot_compile"],
)
def test_jobs_writing_to_the_workdir_refuse_an_unwritable_one_first(tmp_path, unwritable, job, make_config):
    with pytest.raises(workdirs.WorkdirError) as e:
        job(make_config(tmp_path), str(unwritable))
    _assert_one_line(e.value, "--workdir", unwritable)


@pytest.mark.slow
@pytest.mark.bad_input
def test_generate_in_an_unwritable_workdir_exits_2_with_one_line_and_prints_nothing(
    tmp_path, data_dir, unwritable
):
    proc = runs.run(
        "configs/generate.py", unwritable, data_dir, f"--config.generate.checkpoint_dir={tmp_path / 'no_such_run'}",
        "--config.generate.prompt=Bonjour", "--config.generate.max_new_tokens=2", timeout=180,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --workdir: ") and str(unwritable) in last, proc.stderr[-3000:]
    assert proc.stdout.strip() == ""  # no completion printed and then lost


# ------------------------------------------------------------------------------------------------------------
# Hugging Face conversions: out_dir checked first, replaced as a whole
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.bad_input
def test_hf_export_refuses_a_folder_of_user_files_before_reading_the_checkpoint(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    config = hf_convert_config.get_config("export")
    config.hf_convert.checkpoint_dir = str(tmp_path / "no_such_run")
    config.hf_convert.out_dir = str(out)
    with pytest.raises(workdirs.WorkdirError) as e:
        hf_convert.export(config, str(tmp_path / "workdir"))
    _assert_one_line(e.value, "config.hf_convert.out_dir", out)
    assert _listing(tmp_path) == {"mine": None, "mine/notes.txt": b"my notes\n"}


def _hf_source(folder: pathlib.Path, seed: int):
    """A Hugging Face directory of a random tiny Cohere model (weights, config, a placeholder tokenizer.json)."""
    params = jax.jit(cohere.CohereLM(CFG).init)(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))
    params = nn.unbox(params["params"])
    hf.save(folder, params, CFG, dtype="float32")
    (folder / "tokenizer.json").write_text(json.dumps({"added_tokens": [], "seed": seed}))  # copied as is
    return params


def test_hf_import_and_export_replace_their_out_dir_as_a_whole(tmp_path):
    first, second = _hf_source(tmp_path / "src_a", 0), _hf_source(tmp_path / "src_b", 1)
    run = tmp_path / "run"
    imp = hf_convert_config.get_config("import")
    imp.hf_convert.out_dir = str(run)
    imp.hf_convert.hf_dir = str(tmp_path / "src_a")
    hf_convert.import_(imp, str(tmp_path / "workdir"))
    imp.hf_convert.hf_dir = str(tmp_path / "src_b")
    hf_convert.import_(imp, str(tmp_path / "workdir"))  # replaces the first import
    assert json.loads((run / "hf_config.json").read_text())["model_type"] == "cohere"

    out = tmp_path / "exported"
    exp = hf_convert_config.get_config("export")
    exp.hf_convert.checkpoint_dir = str(run)
    exp.hf_convert.out_dir = str(out)
    exp.hf_convert.dtype = "float32"
    exp.hf_convert.max_shard_gb = 8 * 1024 / 2**30  # several shard files and an index
    hf_convert.export(exp, str(tmp_path / "workdir"))
    assert (out / hf.INDEX_FILE).is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    exp.hf_convert.max_shard_gb = 4.0  # one model.safetensors
    hf_convert.export(exp, str(tmp_path / "workdir"))

    assert sorted(p.name for p in out.iterdir()) == sorted(
        [workdirs.OUTPUT_MARK, hf.CONFIG_FILE, "generation_config.json", hf.SINGLE_FILE, "tokenizer.json"]
    )
    assert json.loads((out / "tokenizer.json").read_text())["seed"] == 1  # the second import's source
    loaded = hf.load(out).params  # with the first export's index left behind, this read its shards
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert not np.array_equal(np.asarray(second["embedding"]), np.asarray(first["embedding"]))
    assert not [p.name for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name]
