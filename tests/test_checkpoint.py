"""orbax checkpoints: sharded round trip, keep-K, fallback past a corrupt step, refusal when none loads."""

import logging
import os
import pathlib
import signal

import jax
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import checkpoint, optimizers, pretrained, sharding
from aya_jax.training import state as ts
from configs import common


def _sharded_state(seed=0):
    config = common.base_config()
    config.model.dtype = "float32"
    model, _ = pretrained.build_model(config.model, 256)
    tx, _ = optimizers.make_optimizer(config.optimizer, 10)
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    rules = sharding.normalize_rules(common.default_rules(), mesh)
    with mesh, nn.logical_axis_rules(rules):
        abstract, shardings = ts.state_shardings(model, tx, 16, mesh, rules)
        state = jax.jit(ts.make_init_fn(model, tx, 16), out_shardings=shardings)(jax.random.PRNGKey(seed))
    return state, abstract, shardings


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_roundtrip_restores_values_and_shardings(tmp_path):
    state, abstract, shardings = _sharded_state()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=2)
    ck.save(7, state, {"position": 7, "seed": 0})
    ck.wait()
    step, restored, data = ck.restore_latest(checkpoint.abstract_like(abstract, shardings))
    ck.close()
    assert step == 7 and data == {"position": 7, "seed": 0}
    _assert_trees_equal(state, restored)
    q = restored.params["layers"]["attn"]["q_proj"]
    assert q.sharding.spec == state.params["layers"]["attn"]["q_proj"].sharding.spec


def test_keep_k(tmp_path):
    state, _, _ = _sharded_state()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=2)
    for step in (1, 2, 3):
        ck.save(step, state, {"position": step})
    ck.close()
    assert checkpoint.Checkpointer(tmp_path / "ckpt").all_steps() == [2, 3]


def _corrupt(step_dir: pathlib.Path) -> None:
    """Truncate every array data file of a step (what a crash during a non-atomic copy leaves)."""
    hit = 0
    for path in step_dir.rglob("*"):
        if path.is_file() and ("d/" in str(path) or path.name.startswith(("ocdbt", "manifest"))):
            path.write_bytes(b"\x00garbage")
            hit += 1
    assert hit, f"nothing to corrupt under {step_dir}"


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
    state1, abstract, shardings = _sharded_state(seed=1)
    state2, _, _ = _sharded_state(seed=2)
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    ck.save(10, state1, {"position": 10})
    ck.save(20, state2, {"position": 20})
    ck.close()
    _corrupt(tmp_path / "ckpt" / "20")
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    with caplog.at_level(logging.WARNING):
        step, restored, data = ck.restore_latest(checkpoint.abstract_like(abstract, shardings))
    ck.close()
    assert step == 10 and data["position"] == 10
    _assert_trees_equal(state1, restored)
    assert any(
        "checkpoint step 20" in r.getMessage() and "does not load" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_no_loadable_checkpoint_is_an_error(tmp_path):
    state, abstract, shardings = _sharded_state()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt")
    ck.save(5, state, {"position": 5})
    ck.close()
    _corrupt(tmp_path / "ckpt" / "5")
    ck = checkpoint.Checkpointer(tmp_path / "ckpt")
    with pytest.raises(checkpoint.CheckpointError, match=r"holds checkpoint steps \[5\] but none loads"):
        ck.restore_latest(checkpoint.abstract_like(abstract, shardings))


def test_empty_directory_means_fresh_start(tmp_path):
    _, abstract, shardings = _sharded_state()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt")
    assert ck.restore_latest(checkpoint.abstract_like(abstract, shardings)) is None


def test_load_params_only(tmp_path):
    state, abstract, shardings = _sharded_state()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt")
    ck.save(3, state, {"position": 3})
    ck.close()
    step, params = checkpoint.load_params(
        tmp_path / "ckpt", checkpoint.abstract_like(abstract.params, shardings.params)
    )
    assert step == 3
    _assert_trees_equal(state.params, params)


def test_sigterm_sets_the_preemption_flag():
    watcher = checkpoint.PreemptionWatcher()
    try:
        assert not watcher.should_stop(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.should_stop(1)
    finally:
        watcher.restore_handler()
