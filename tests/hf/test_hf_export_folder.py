"""Exports replace their folder as a whole (`aya_jax.hf.io.output_folder`, the hf_export and merge jobs' way of
calling `hf.save`): a sharded export followed by a single-file one leaves only the new files, so `hf.load` reads
the new weights; a folder of the user's files is refused untouched; a failed export leaves the previous one.

A tiny random Cohere model built by aya_jax itself (no torch needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import hf, workdirs
from aya_jax.hf import io as hf_io
from aya_jax.models import cohere

FIELD = "config.hf_convert.out_dir"
CFG = cohere.PRESETS["cohere-tiny"].replace(
    vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, bos_id=5, eos_id=1
)


def _params(seed: int):
    tokens = jnp.zeros((1, 4), jnp.int32)
    return nn.unbox(jax.jit(cohere.CohereLM(CFG).init)(jax.random.PRNGKey(seed), tokens)["params"])


def _export(out_dir, params, **kw):
    with hf_io.output_folder(out_dir, FIELD) as folder:
        hf.save(folder, params, CFG, dtype="float32", **kw)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _assert_same(got, want):
    got, want = jax.tree.map(np.asarray, got), jax.tree.map(np.asarray, want)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(g, w)


def test_a_single_file_export_replaces_a_sharded_one_as_a_whole(tmp_path):
    old, new = _params(0), _params(1)
    out = tmp_path / "export"
    _export(out, old, max_shard_bytes=8 * 1024)  # several shard files and an index
    assert (out / hf.INDEX_FILE).is_file() and len(list(out.glob("model-*.safetensors"))) > 1

    _export(out, new)  # one model.safetensors
    fresh = tmp_path / "fresh"
    hf.save(fresh, new, CFG, dtype="float32")
    # Exactly what an export into a new folder holds (plus the output mark): no stale shard, no stale index.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(p.name for p in fresh.iterdir()), workdirs.OUTPUT_MARK]
    )
    assert (out / hf.SINGLE_FILE).read_bytes() == (fresh / hf.SINGLE_FILE).read_bytes()
    _assert_same(hf.load(out).params, new)  # with the stale index, load read the old weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "fresh"]  # no staging folder left


@pytest.mark.bad_input
def test_a_folder_of_the_users_files_is_refused_and_left_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    with pytest.raises(workdirs.WorkdirError) as e:
        _export(out, _params(0))
    message = str(e.value)
    assert message.startswith(f"{FIELD}: ") and str(out) in message and "\n" not in message
    assert _snapshot(out) == {"notes.txt": b"my notes\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_failed_export_leaves_the_previous_one_intact(tmp_path):
    old = _params(0)
    out = tmp_path / "export"
    _export(out, old, max_shard_bytes=8 * 1024)
    before = _snapshot(out)
    # The tokenizer is copied after every weight is written: the export fails with its shards already out.
    with pytest.raises(hf.HfCheckpointError, match="tokenizer not found"):
        _export(out, _params(1), tokenizer=tmp_path / "missing" / "tokenizer.json")
    assert _snapshot(out) == before
    _assert_same(hf.load(out).params, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # the staging folder is gone
