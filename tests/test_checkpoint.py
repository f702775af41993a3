"""orbax checkpoints: sharded round trip, keep-K, fallback past a corrupt step, refusal when none loads; digests
(against a NumPy re-derivation, independent of the mesh), verified restore past each kind of damaged file,
retention that keeps the step a run resumed from, and no save of a non-finite state."""

import logging
import os
import pathlib
import signal

import faults  # the helper module beside this file
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
    with pytest.raises(
        checkpoint.CheckpointError, match=r"holds checkpoint steps \[5\] but none loads and verif"
    ):
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


# ---- digests --------------------------------------------------------------------------------------------------


def _numpy_digest(x: np.ndarray) -> str:
    """The digest of aya_jax/checkpoint.py re-derived in NumPy (uint32 arithmetic wraps mod 2^32 the same way)."""

    def fmix(h):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))

    width = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[x.dtype.itemsize]
    bits = np.ascontiguousarray(x).view(width).reshape(x.shape + ((2,) if x.dtype.itemsize == 8 else ()))
    bits = bits.astype(np.uint32).ravel()
    index = np.arange(bits.size, dtype=np.uint32)
    with np.errstate(over="ignore"):
        lanes = [
            int(np.sum(fmix(bits ^ (index * np.uint32(0x9E3779B9) + np.uint32(seed))), dtype=np.uint32))
            for seed in (0x243F6A88, 0x85A308D3)
        ]
    return f"{lanes[0]:08x}-{lanes[1]:08x}"


def test_digests_match_a_numpy_rederivation_on_any_mesh():
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((8, 12)).astype(np.float32),
        "bf16": jnp.asarray(rng.standard_normal((4, 6, 8)), jnp.bfloat16),
        "i32": np.arange(-20, 20, dtype=np.int32).reshape(10, 4),
        "key": np.asarray(jax.random.PRNGKey(3)),
        "scalar": np.int32(7),
    }
    expected = {k: _numpy_digest(np.asarray(v)) for k, v in arrays.items()}
    digests, nonfinite = checkpoint.tree_digests({k: jnp.asarray(v) for k, v in arrays.items()})
    assert digests == expected and nonfinite == []
    # Laid out over a 2 x 4 mesh (each device reduces its shard): the same digests.
    mesh = sharding.make_mesh(("a", "b"), (2, 4))
    spread = {
        k: jax.device_put(v, NamedSharding(mesh, PartitionSpec(*(("a", "b") if np.ndim(v) >= 2 else ()))))
        for k, v in arrays.items()
        if k != "bf16"
    }
    assert checkpoint.tree_digests(spread)[0] == {k: v for k, v in expected.items() if k != "bf16"}
    # One flipped bit, one swapped pair of elements: another digest.
    flipped = arrays["f32"].copy()
    flipped.view(np.uint32)[3, 4] ^= 1
    swapped = arrays["f32"].copy()
    swapped[0, 0], swapped[0, 1] = swapped[0, 1], swapped[0, 0]
    assert len({_numpy_digest(a) for a in (arrays["f32"], flipped, swapped)}) == 3
    nan = arrays["f32"].copy()
    nan[1, 1] = np.nan
    assert checkpoint.tree_digests({"w": jnp.asarray(nan)})[1] == ["w"]


def test_save_refuses_a_non_finite_state(tmp_path):
    state, _, _ = _sharded_state()
    bad = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    ck = checkpoint.Checkpointer(tmp_path / "ckpt")
    with pytest.raises(
        checkpoint.CheckpointError, match=r"refusing to save step 4 .*tensor params/.*non-finite"
    ):
        ck.save(4, bad, {})
    ck.close()
    assert checkpoint.Checkpointer(tmp_path / "ckpt").all_steps() == []


@pytest.mark.faults
@pytest.mark.parametrize("fault", list(faults.DAMAGE))
def test_damaged_step_is_set_aside_and_the_previous_one_restored(tmp_path, caplog, fault):
    """Each kind of damage to the newest step: a warning naming the step (and the tensor, when the bytes load),
    the previous step restored exactly, the damaged one kept as <step>.corrupt and written afresh on resave."""
    state1, abstract, shardings = _sharded_state(seed=1)
    state2, _, _ = _sharded_state(seed=2)
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    ck.save(10, state1, {"position": 10})
    ck.save(20, state2, {"position": 20})
    ck.close()
    faults.DAMAGE[fault](tmp_path / "ckpt" / "20")
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    with caplog.at_level(logging.WARNING):
        step, restored, data = ck.restore_latest(checkpoint.abstract_like(abstract, shardings))
    assert (step, data["position"]) == (10, 10)
    _assert_trees_equal(state1, restored)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("checkpoint step 20" in w and ("fails verification: tensor " in w or "does not load" in w)
               for w in warnings), warnings  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["10", "20.corrupt"]
    ck.save(20, state2, {"position": 20})  # the run writes step 20 afresh
    ck.close()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    assert ck.restore_latest(checkpoint.abstract_like(abstract, shardings))[0] == 20
    ck.close()


@pytest.mark.faults
def test_a_tensor_that_disagrees_with_its_digest_is_named(tmp_path, caplog):
    """Values that load but are not what was saved: only the digest can tell, and the warning names the tensor."""
    state1, abstract, shardings = _sharded_state(seed=1)
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    ck.save(10, state1, {"position": 10})
    ck.save(20, state1.replace(step=state1.step + 1), {"position": 20})
    ck.close()
    digests = checkpoint.Checkpointer(tmp_path / "ckpt").saved_digests(20)
    # Step 20's record as if this tensor had been saved with other values than those stored.
    record = tmp_path / "ckpt" / "20" / "digests" / "metadata"
    name = "params/embedding"
    assert name in digests, sorted(digests)[:5]
    record.write_text(record.read_text().replace(digests[name], "00000000-00000000"))
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    with caplog.at_level(logging.WARNING):
        assert ck.restore_latest(checkpoint.abstract_like(abstract, shardings))[0] == 10
    ck.close()
    assert any(f"step 20 in {tmp_path / 'ckpt'} fails verification: tensor {name}" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_retention_keeps_the_step_a_run_resumed_from(tmp_path):
    state, abstract, shardings = _sharded_state()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=2)
    for step in (1, 2):
        ck.save(step, state, {})
    ck.close()
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=2)
    assert ck.restore_latest(checkpoint.abstract_like(abstract, shardings))[0] == 2
    for step in (3, 4, 5):
        ck.save(step, state, {})
    ck.close()
    assert checkpoint.Checkpointer(tmp_path / "ckpt").all_steps() == [2, 4, 5]


def test_load_params_verifies_and_names_the_step(tmp_path, caplog):
    state, abstract, shardings = _sharded_state()
    target = checkpoint.abstract_like(abstract.params, shardings.params)
    ck = checkpoint.Checkpointer(tmp_path / "ckpt", keep=3)
    for step in (3, 6):
        ck.save(step, state, {})
    ck.close()
    faults.overwrite_middle(tmp_path / "ckpt" / "6")
    with caplog.at_level(logging.WARNING):
        step, params = checkpoint.load_params(tmp_path / "ckpt", target)
    assert step == 3
    _assert_trees_equal(state.params, params)
    assert any("checkpoint step 6" in r.getMessage() for r in caplog.records)
    # Which of the three depends on where the random bytes land (over a chunk's compressed header the store cannot
    # decode it at all); each names the step.
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"checkpoint step 6 (fails verification|holds non-finite|does not load)",
    ):
        checkpoint.load_params(tmp_path / "ckpt", target, step=6)
    with pytest.raises(checkpoint.CheckpointError, match=r"has no checkpoint step 7 \(steps: 3, 6\)"):
        checkpoint.load_params(tmp_path / "ckpt", target, step=7)
