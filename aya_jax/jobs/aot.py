"""Ahead-of-time compile of the SFT train step for a TPU slice, on a machine without one.

    pip install -e '.[tpu]'   # libtpu describes TPU topologies and compiles for them; no TPU is needed
    python -m aya_jax.main --config configs/aot.py:aya-expanse-8b --config.aot.topology=v5e-16

Any experiment config can be checked the same way: add `--config.job=aot_compile --config.aot.topology=...`.
The job builds the train state abstractly (no parameter is allocated), lowers the trainer's own jitted step
(`training/sft.make_train_step`, same shardings, same donation) for the topology's devices, compiles it with the TPU
compiler, and prints XLA's per-device memory figures against the device's HBM. It answers "does this config
fit?" before a slice is paid for; a config that does not fit ends with one error line (exit status 2).

`config.aot.platform = "cpu"` compiles for this machine's own devices instead (no libtpu needed): the same
program and shardings, with CPU memory figures; that is what the tests use.

Following maxtext's `train_compile.py`: topology from `jax.experimental.topologies`, mesh from its devices.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import NamedSharding

from aya_jax import defaults, optimizers, pretrained, sharding, workdirs
from aya_jax.defaults.checks import ConfigError
from aya_jax.models import families
from aya_jax.training import loop
from aya_jax.training import sft as sft_objective
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

GIB = 2**30
SECTIONS = ("model", "mesh", "data", "train", "optimizer", "aot")

# HBM per chip, GiB (Cloud TPU system architecture pages). A topology that exposes each core of a chip as a
# device (v4 in libtpu's compile-only topologies) splits it between the cores.
HBM_GIB_PER_CHIP = {"TPU v4": 32.0, "TPU v5 lite": 16.0, "TPU v5": 95.0, "TPU v6 lite": 32.0}

# Chips -> libtpu topology for gcloud accelerator types: 2D tori for v5e / v6e, 3D for v4 / v5p (whose
# accelerator-type number counts TensorCores, two per chip).
_TOPOLOGY_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_TOPOLOGY_3D = {
    4: "2x2x1",
    8: "2x2x2",
    16: "2x2x4",
    32: "2x4x4",
    64: "4x4x4",
    128: "4x4x8",
    256: "4x8x8",
    512: "8x8x8",
}
_GENERATIONS = {"v5litepod": "v5e", "v5e": "v5e", "v6e": "v6e", "v4": "v4", "v5p": "v5p"}


class AotError(ConfigError):
    """A topology that cannot be described, or a config that does not fit in HBM; one line, names the field."""


@dataclasses.dataclass
class AotReport:
    preset: str
    topology: str
    device_kind: str
    num_devices: int
    mesh: dict[str, int]
    global_batch_size: int
    seq_len: int
    argument_gib: float  # per device: inputs (train state + batch)
    output_gib: float  # per device: outputs (new state + metrics)
    alias_gib: float  # per device: outputs written in place of donated inputs
    temp_gib: float  # per device: activations, gradients and other scratch
    code_gib: float  # per device: the compiled program
    total_gib: float  # argument + output - alias + temp + code: the peak this step needs
    hbm_gib: float | None  # per device; None when unknown (CPU)
    fits: bool | None
    compile_seconds: float


def topology_name(name: str) -> str:
    """libtpu's topology name ("v5e:4x4") from itself or a gcloud accelerator type ("v5litepod-16", "v4-8")."""
    if ":" in name:
        return name
    match = re.fullmatch(r"(v5litepod|v5e|v6e|v4|v5p)-(\d+)", name)
    if not match:
        raise AotError(
            f"config.aot.topology: {name!r} is neither a gcloud accelerator type (v5litepod-16, v6e-64, v4-32, "
            "v5p-128) nor a libtpu topology (v5e:4x4, v4:2x2x4)"
        )
    generation, count = _GENERATIONS[match.group(1)], int(match.group(2))
    three_d = generation in ("v4", "v5p")
    chips = count // 2 if three_d else count
    table = _TOPOLOGY_3D if three_d else _TOPOLOGY_2D
    if chips not in table:
        raise AotError(f"config.aot.topology: no known topology for {name!r}; give libtpu's, e.g. v5e:4x4")
    return f"{generation}:{table[chips]}"


def topology_devices(aot_config: Any) -> tuple[list[jax.Device], str]:
    """(devices to compile for, topology description): a TPU topology's compile-only devices, or local ones."""
    platform = str(aot_config.platform)
    if platform == "cpu":
        return list(jax.devices()), f"local {jax.devices()[0].platform} x{jax.device_count()}"
    if platform != "tpu":
        raise AotError(f"config.aot.platform: {platform!r} is not one of tpu, cpu")
    from jax.experimental import topologies

    name = topology_name(str(aot_config.topology))
    try:
        topology = topologies.get_topology_desc(platform="tpu", topology_name=name)
    except RuntimeError as e:  # no libtpu (jax's RuntimeError), or libtpu rejects the name (JaxRuntimeError)
        raise AotError(
            f"config.aot.topology: cannot describe TPU topology {name!r}: {str(e).splitlines()[0][:300]} "
            "(install libtpu: pip install -e '.[tpu]'; or use config.aot.platform=cpu)"
        ) from None
    return list(topology.devices), name


def hbm_gib_per_device(devices: list[jax.Device], override: float) -> float | None:
    if override > 0:
        return override
    kind = devices[0].device_kind
    if kind not in HBM_GIB_PER_CHIP:
        return None
    cores_per_chip = 1 + max(int(getattr(d, "core_on_chip", 0)) for d in devices)
    return HBM_GIB_PER_CHIP[kind] / cores_per_chip


def model_without_data(model_config: Any):
    """(model, model config) as pretrained.build_model makes them; with no data here, a preset whose vocabulary comes
    from the data takes it from config.model.overrides.vocab_size."""
    vocab = model_config.overrides.vocab_size
    if vocab is None:
        try:
            return pretrained.build_model(model_config, None)
        except ValueError as e:
            raise AotError(f"{e} (set config.model.overrides.vocab_size)") from None
    # Passed as the data's vocabulary, the override fills a placeholder vocabulary and is rejected below by a
    # preset with its own (the override alone would silently resize it).
    without = model_config.copy_and_resolve_references()
    without.overrides.vocab_size = None
    model, cfg = pretrained.build_model(without, vocab)
    if cfg.vocab_size != vocab:
        raise AotError(
            f"config.model.overrides.vocab_size: preset {model_config.preset!r} has its own vocabulary "
            f"({cfg.vocab_size}); the override applies to presets whose vocabulary comes from the data"
        )
    return model, cfg


def abstract_batch(
    batch_size: int,
    lengths: dict[str, int] | int,
    batch_sharding: NamedSharding,
    encoder_decoder: bool = False,
) -> dict[str, Any]:
    """The trainer's batch as ShapeDtypeStructs: every key the family's converter yields, int32 [batch, len]
    (decoder features `lengths["targets"]` long, encoder ones `lengths["inputs"]`)."""
    if isinstance(lengths, int):
        lengths = {"inputs": lengths, "targets": lengths}
    decoder = (
        "decoder_input_tokens",
        "decoder_target_tokens",
        "decoder_loss_weights",
        "decoder_segment_ids",
        "decoder_positions",
        "decoder_language_ids",
    )
    encoder = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions") if encoder_decoder else ()
    shapes = {k: (batch_size, lengths["targets"]) for k in decoder}
    shapes.update({k: (batch_size, lengths["inputs"]) for k in encoder})
    return {k: jax.ShapeDtypeStruct(v, jnp.int32, sharding=batch_sharding) for k, v in shapes.items()}


def compile_train_step(config: Any) -> AotReport:
    """Lower and compile the SFT step of `config` for config.aot's devices; memory per device from XLA."""
    devices, topology = topology_devices(config.aot)
    shape, rules = loop.validate_config(config, SECTIONS, len(devices), process_count=1)
    model, model_cfg = model_without_data(config.model)
    seq_len, batch_size = int(config.data.seq_len), int(config.train.global_batch_size)
    mesh = sharding.make_mesh(tuple(config.mesh.axes), shape, devices=devices)
    tx, schedule = optimizers.make_optimizer(config.optimizer, int(config.train.steps))
    step_fn = sft_objective.make_train_step(
        model, tx, schedule, float(config.train.z_loss), int(config.train.grad_accum_steps)
    )
    with mesh, nn.logical_axis_rules(rules):
        abstract_state, state_sh = ts.state_shardings(model, tx, seq_len, mesh, rules)
        batch_sh = NamedSharding(mesh, sharding.batch_spec(rules, 2))
        jitted = jax.jit(
            step_fn, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None), donate_argnums=(0,)
        )
        t0 = time.perf_counter()
        lowered = jitted.lower(
            jax.tree.map(
                lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, state_sh
            ),
            abstract_batch(
                batch_size,
                families.family_of(model_cfg).feature_lengths(seq_len, int(config.data.inputs_len)),
                batch_sh,
                families.family_of(model_cfg).encoder_decoder,
            ),
        )
        hbm = hbm_gib_per_device(devices, float(config.aot.hbm_gib))
        try:
            compiled = lowered.compile()
        except Exception as e:  # noqa: BLE001 - the TPU compiler refuses programs that exceed HBM
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
                raise AotError(
                    f"config: the {config.model.preset} train step does not fit in {topology} HBM "
                    f"({hbm} GiB per device): {first[:400]}"
                ) from None
            raise
        seconds = time.perf_counter() - t0
    stats = compiled.memory_analysis()
    gib = lambda n: float(n) / GIB
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )
    return AotReport(
        preset=str(config.model.preset),
        topology=topology,
        device_kind=devices[0].device_kind,
        num_devices=len(devices),
        mesh=dict(zip(mesh.axis_names, mesh.devices.shape, strict=True)),
        global_batch_size=batch_size,
        seq_len=seq_len,
        argument_gib=gib(stats.argument_size_in_bytes),
        output_gib=gib(stats.output_size_in_bytes),
        alias_gib=gib(stats.alias_size_in_bytes),
        temp_gib=gib(stats.temp_size_in_bytes),
        code_gib=gib(stats.generated_code_size_in_bytes),
        total_gib=gib(total),
        hbm_gib=hbm,
        fits=None if hbm is None else gib(total) <= hbm,
        compile_seconds=seconds,
    )


def _size(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.1f} MiB"


def run(config: Any, workdir: str) -> AotReport:
    """The `aot_compile` job: compile, print the memory table, write <workdir>/aot_report.json."""
    defaults.validate(config, SECTIONS)
    # Before the compile (minutes for a large model): its report goes to the workdir.
    out = workdirs.check_writable(workdir, "--workdir")
    report = compile_train_step(config)
    cfg = model_without_data(config.model)[1]
    n_params = families.family_of(cfg).param_count(cfg)
    lines = [
        f"AOT compile of the SFT train step: {report.preset} ({n_params / 1e6:,.1f} M parameters)",
        f"  target        {report.topology}: {report.num_devices} x {report.device_kind}, mesh {report.mesh}",
        f"  batch         {report.global_batch_size} x {report.seq_len} tokens, remat {config.model.remat}",
        f"  compiled in   {report.compile_seconds:.1f} s",
        f"  per device    arguments {_size(report.argument_gib)} + outputs {_size(report.output_gib)} "
        f"- aliased {_size(report.alias_gib)} + temporaries {_size(report.temp_gib)} + code {_size(report.code_gib)}",
        f"  needs         {_size(report.total_gib)} per device"
        + (f" of {report.hbm_gib:.1f} GiB HBM" if report.hbm_gib else ""),
    ]
    if report.fits is not None:
        lines.append("  verdict       " + ("fits" if report.fits else "DOES NOT FIT"))
    for line in lines:
        print(line, flush=True)
    if jax.process_index() == 0:
        (out / "aot_report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    if report.fits is False:
        raise AotError(
            f"config: the {report.preset} train step needs {report.total_gib:.2f} GiB per device, more than "
            f"the {report.hbm_gib:.1f} GiB of {report.device_kind}; shard more (config.mesh.shape), remat "
            "(config.model.remat), or lower config.train.global_batch_size / config.data.seq_len"
        )
    return report
