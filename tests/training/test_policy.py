"""Policy + frozen reference on a (data=2, fsdp=2, tensor=2) mesh: loaded from an SFT-style checkpoint onto the
rules' shardings, the reference a separate buffer that survives donation of the policy, resume from the
workdir (the reference reloaded from the recorded source step), the missing-checkpoint error, and the memory
report against a hand count."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from aya_jax import checkpoint as ckpt_lib
from aya_jax import pretrained
from aya_jax.training import loop, policy
from aya_jax.training import state as ts
from configs import quickstart

EMBED, LAYERS = 256, 2  # cohere-tiny with 2 layers


def _config(data_dir, init_from=""):
    c = quickstart.get_config()
    c.model.overrides.num_layers = LAYERS
    c.data.vocab.size = 2048
    c.data.data_dir = str(data_dir)
    c.mesh.shape = (2, 2, 2)
    c.checkpoint.init_from = str(init_from)
    c.checkpoint.async_save = False
    return c


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An SFT-style run directory: a full TrainState checkpoint at step 7 (and an older one at 3)."""
    data_dir = tmp_path_factory.mktemp("data")
    workdir = tmp_path_factory.mktemp("sft")
    config = _config(data_dir)
    from aya_jax.data import pipeline

    spec = pipeline.prepare(config.data)
    model, _ = pretrained.build_model(config.model, spec.vocab_size)
    tx = optax.adamw(1e-3)
    states = {}
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", async_save=False)
    for step, seed in ((3, 1), (7, 2)):
        states[step] = jax.jit(ts.make_init_fn(model, tx, 8))(jax.random.PRNGKey(seed))
        ckpt.save(step, states[step], {"position": 0})
    ckpt.close()
    return data_dir, workdir, jax.device_get(states[7].params), spec.vocab_size


SECTIONS = ("model", "mesh", "data", "checkpoint")


def _setup(config, workdir, tx, **kwargs):
    run = loop.Run.start(config, workdir, SECTIONS)
    return run, policy.setup_policy(run, tx, **kwargs)


def _assert_tree_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_new_run_loads_policy_and_reference_on_the_rules_shardings(source, tmp_path):
    data_dir, src, params, vocab = source
    run, setup = _setup(_config(data_dir, src), tmp_path / "rl", optax.sgd(0.1))
    assert setup.start_step == 0 and setup.resumed_state is None and setup.init_step == 7
    assert int(setup.state.step) == 0 and setup.vocab_size == vocab and 1 in setup.eos_ids
    _assert_tree_equal(setup.state.params, params)
    _assert_tree_equal(setup.ref_params, params)
    emb, ref_emb = setup.state.params["embedding"], setup.ref_params["embedding"]
    assert emb.sharding.spec == PartitionSpec("tensor", "fsdp") == ref_emb.sharding.spec
    assert dict(run.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    # The policy is donated by the update step; the reference must be its own buffer and stay as loaded.
    step = jax.jit(
        lambda s: s.replace(params=jax.tree.map(lambda p: p + 1.0, s.params)),
        in_shardings=(setup.state_shardings,),
        out_shardings=setup.state_shardings,
        donate_argnums=(0,),
    )
    new_state = step(setup.state)
    _assert_tree_equal(setup.ref_params, params)
    np.testing.assert_allclose(np.asarray(new_state.params["embedding"]), params["embedding"] + 1.0)
    run.close()


def test_rerun_resumes_the_policy_and_reloads_the_recorded_reference(source, tmp_path):
    data_dir, src, params, _ = source
    config = _config(data_dir, src)
    run, first = _setup(config, tmp_path, optax.sgd(0.1))
    moved = first.state.replace(
        step=first.state.step + 4, params=jax.tree.map(lambda p: p * 2.0, first.state.params)
    )
    # The record points at the older source step: resume must take the reference from it, not the newest.
    record = {**first.source_record(), "init_step": 3, "position": 12}
    run.checkpointer.save(4, moved, record)
    run.close()
    run, second = _setup(config, tmp_path, optax.sgd(0.1))
    assert second.start_step == 4 and int(second.state.step) == 4 and second.resumed_state["position"] == 12
    _assert_tree_equal(second.state.params, jax.tree.map(lambda p: p * 2.0, params))
    older = ckpt_lib.load_params(src / "checkpoints", jax.tree.map(jnp.asarray, params), step=3)[1]
    _assert_tree_equal(second.ref_params, older)
    assert second.init_step == 3
    run.close()


def test_missing_init_from_is_a_one_line_error_with_the_hint(source, tmp_path):
    data_dir, _, _, _ = source
    with pytest.raises(
        FileNotFoundError, match=r"config.checkpoint.init_from: no checkpoint at .*; run it first"
    ):
        _setup(
            _config(data_dir, tmp_path / "nope"), tmp_path / "rl", optax.sgd(0.1), missing_hint="run it first"
        )
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint step"):
        _setup(_config(data_dir, tmp_path / "empty"), tmp_path / "rl", optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"config.mesh.shape"):
        bad = _config(data_dir, source[1])
        bad.mesh.shape = (3, 1, 1)
        _setup(bad, tmp_path / "rl2", optax.sgd(0.1))


def test_log_memory_matches_a_hand_count(source, tmp_path, caplog):
    data_dir, src, _, vocab = source
    run, setup = _setup(_config(data_dir, src), tmp_path, optax.adam(1e-3))
    ffn, heads, kv, hd = 768, 4, 2, 64
    # Per device, by the default rules on (data=2, fsdp=2, tensor=2): embed over fsdp, vocab/mlp/heads over
    # tensor; norms and the layer axis replicated.
    per_layer = EMBED + (EMBED * heads * hd + 2 * EMBED * kv * hd + heads * hd * EMBED + 3 * EMBED * ffn) // 4
    params_bytes = 4 * (vocab * EMBED // 4 + LAYERS * per_layer + EMBED)
    with caplog.at_level(logging.INFO, logger="aya_jax.training.state"):
        report = ts.log_memory(
            {
                "policy state": (setup.state, setup.state_shardings),
                "reference": (setup.ref_params, setup.params_shardings),
            }
        )
    assert report["reference"] == params_bytes
    # Adam's two moments are sharded like the params; step counters and the rng are small replicated scalars.
    assert report["policy state"] == 3 * params_bytes + 4 + 4 + 8
    assert report["total"] == report["policy state"] + report["reference"]
    assert "memory per device: total" in caplog.text
    run.close()
