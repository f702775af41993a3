"""Ahead-of-time compile of the SFT step: topology names, XLA's memory figures, the fit verdict.

The CPU tests compile for the 8 simulated local devices (conftest). The TPU test needs libtpu (the `[tpu]`
extra, not a TPU) and skips without it.
"""

import json
import os

import jax
import numpy as np
import pytest

from aya_jax.jobs import aot
from aya_jax.training import state as ts
from configs import aot as aot_config


def _tiny_config(**aot_fields):
    config = aot_config.get_config("cohere-tiny")
    config.model.overrides.vocab_size = 512
    config.model.overrides.num_layers = 2
    config.model.dtype = "float32"
    config.data.seq_len = 32
    config.train.global_batch_size = 8
    config.mesh.shape = (2, 2, 2)
    config.aot.platform = "cpu"
    for key, value in aot_fields.items():
        config.aot[key] = value
    return config


@pytest.mark.parametrize(
    "name, expected",
    [
        ("v5litepod-16", "v5e:4x4"),
        ("v5e-4", "v5e:2x2"),
        ("v6e-256", "v6e:16x16"),
        ("v4-8", "v4:2x2x1"),  # v4 counts TensorCores: 8 cores = 4 chips
        ("v4-32", "v4:2x2x4"),
        ("v5p-128", "v5p:4x4x4"),
        ("v5e:2x4", "v5e:2x4"),  # libtpu's own names pass through
    ],
)
def test_topology_names(name, expected):
    assert aot.topology_name(name) == expected


def test_unknown_topology_is_one_line_naming_the_field():
    with pytest.raises(aot.AotError, match="config.aot.topology"):
        aot.topology_name("v5litepod-12")
    with pytest.raises(aot.AotError, match="config.aot.topology"):
        aot.topology_name("a100")


def test_cpu_compile_reports_the_state_and_batch_it_holds(tmp_path):
    config = _tiny_config()
    report = aot.run(config, str(tmp_path))
    assert report.num_devices == 8 and report.mesh == {"data": 2, "fsdp": 2, "tensor": 2}
    # Independent of XLA: the train state's largest shard per leaf, plus the 5 int32 batch features the step
    # reads (jit drops the unused decoder_language_ids) of [8 / (data*fsdp), 32] on each device.
    model, _ = aot.model_without_data(config.model)
    tx = aot.optimizers.make_optimizer(config.optimizer, 10)[0]
    mesh = aot.sharding.make_mesh(config.mesh.axes, config.mesh.shape)
    with mesh:
        abstract, shardings = ts.state_shardings(
            model, tx, 32, mesh, aot.sharding.normalize_rules(config.mesh.rules)
        )
    expected = ts.per_device_bytes(abstract, shardings) + 5 * (8 // 4) * 32 * 4
    np.testing.assert_allclose(report.argument_gib * aot.GIB, expected, rtol=0, atol=0)
    assert report.alias_gib > 0  # the state is donated, as in the trainer
    assert report.total_gib >= report.argument_gib + report.temp_gib - report.alias_gib
    assert report.hbm_gib is None and report.fits is None
    saved = json.loads((tmp_path / "aot_report.json").read_text())
    assert saved["total_gib"] == report.total_gib


def test_cpu_compile_of_the_mt5_step_holds_both_stacks_inputs(tmp_path):
    config = _tiny_config()
    config.model.preset = "mt5-tiny"
    config.model.overrides.num_layers = None
    config.data.inputs_len = 48
    report = aot.run(config, str(tmp_path))
    model, _ = aot.model_without_data(config.model)
    tx = aot.optimizers.make_optimizer(config.optimizer, 10)[0]
    mesh = aot.sharding.make_mesh(config.mesh.axes, config.mesh.shape)
    with mesh:
        abstract, shardings = ts.state_shardings(
            model, tx, 32, mesh, aot.sharding.normalize_rules(config.mesh.rules)
        )
    # The state, 5 decoder features [2, 32] and 3 encoder features [2, 48] per device (language ids unused).
    expected = ts.per_device_bytes(abstract, shardings) + (5 * 32 + 3 * 48) * (8 // 4) * 4
    np.testing.assert_allclose(report.argument_gib * aot.GIB, expected, rtol=0, atol=0)


def test_a_step_over_the_hbm_budget_is_an_error_after_the_report(tmp_path, capsys):
    config = _tiny_config(hbm_gib=1e-4)  # ~100 KiB: far below the tiny model's state
    with pytest.raises(aot.AotError, match="more than the 0.0 GiB"):
        aot.run(config, str(tmp_path))
    assert "DOES NOT FIT" in capsys.readouterr().out


def _has_libtpu() -> bool:
    if os.environ.get("TPU_LIBRARY_PATH"):
        return True
    try:
        import libtpu  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_libtpu(), reason="libtpu not installed (pip install -e '.[tpu]')")
def test_tpu_topology_compile_without_a_tpu(tmp_path):
    config = _tiny_config(platform="tpu", topology="v5e-4")
    config.mesh.shape = (1, 4, 1)
    report = aot.run(config, str(tmp_path))
    assert (report.topology, report.num_devices, report.device_kind) == ("v5e:2x2", 4, "TPU v5 lite")
    assert report.hbm_gib == 16.0 and report.fits is True
    assert jax.devices()[0].platform == "cpu"  # nothing ran on a TPU
