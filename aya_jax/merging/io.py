"""The merge job's inputs and output, one params leaf at a time.

Inputs: aya_jax orbax checkpoints and Hugging Face directories. A source has `label`, `path`, `step`, `leaves`
({name: LeafInfo}, names '/'-joined as in aya_jax/merging/methods.py) and `read(name, sharding) -> jax.Array`.
Nothing but the requested leaf is loaded: orbax restores a partial tree (`state/params/<name>` of the step
directory, skipping optimiser state and every other leaf); a Hugging Face directory is read by
`aya_jax.hf.read_leaf`, the same per-leaf reader `hf.load` uses (one safetensors tensor, one layer, at a time,
converted to this repository's layout by the architecture's tensor mappings), in float32.

Output: each merged leaf gets the partition spec the first input saved it with, on the job's mesh, and is
written by orbax partial saves (`orbax.checkpoint.experimental.v1.partial`) into one step directory, which is
then finalised in the trainers' layout (`state` + `data`).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from orbax.checkpoint.experimental import v1 as ocp_v1  # partial saves (orbax >= 0.12)

from aya_jax import checkpoint, hf, sharding
from aya_jax.defaults.checks import ConfigError
from aya_jax.merging import methods as merging

log = logging.getLogger(__name__)


class MergeConfigError(ConfigError):
    """A merge config value or input that cannot work, found before any tensor is merged; names the field."""


@dataclasses.dataclass(frozen=True)
class LeafInfo:
    shape: tuple[int, ...]
    dtype: np.dtype
    spec: (
        tuple[Any, ...] | None
    )  # the partition spec it was saved with (or its logical rules give); None: replicate


# ------------------------------------------------------------------------------------------------------------
# orbax checkpoints of aya_jax runs
# ------------------------------------------------------------------------------------------------------------


def step_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    """Finalised step directories, oldest first (orbax renames a finished save to its step number)."""
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if d.name.isdigit() and (d / "state").is_dir()]
    return sorted(found, key=lambda d: int(d.name))


def resolve_checkpoints(path: str, field: str, last: int = 1) -> list[pathlib.Path]:
    """The newest `last` step directories of a run (`<workdir>` or `<workdir>/checkpoints`), or the one step
    directory given."""
    p = pathlib.Path(path).expanduser()
    if p.name.isdigit() and (p / "state").is_dir():
        if last > 1:
            raise MergeConfigError(
                f"config.merge.last_steps: {last} needs a run directory, but {field} is a step directory"
            )
        return [p]
    steps = step_dirs(p / "checkpoints") or step_dirs(p)
    if not steps:
        raise FileNotFoundError(
            f"{field}: no orbax checkpoint under {path} (expected a run directory, its checkpoints/ or "
            "checkpoints/<step>, or a Hugging Face directory)"
        )
    if len(steps) < last:
        raise MergeConfigError(
            f"config.merge.last_steps: {last}, but {field} ({path}) has {len(steps)} checkpoint steps"
        )
    return steps[-last:]


class OrbaxSource:
    """The params of one checkpoint step, read leaf by leaf (orbax partial restore)."""

    def __init__(self, label: str, step_dir: pathlib.Path):
        self.label, self.step_dir, self.step = label, step_dir.absolute(), int(step_dir.name)
        self.path = str(self.step_dir)
        self._handler = ocp.PyTreeCheckpointHandler()
        tree = self._handler.metadata(self.step_dir / "state").tree
        if "params" not in tree:
            raise MergeConfigError(f"{label}: {self.step_dir} holds no params (it has {sorted(tree)})")
        self.leaves: dict[str, LeafInfo] = {}
        for name, meta in merging.flatten(tree["params"]).items():
            spec = getattr(meta.sharding, "partition_spec", None)
            self.leaves[name] = LeafInfo(
                tuple(meta.shape), np.dtype(meta.dtype), tuple(spec) if spec is not None else None
            )

    def read(self, name: str, target: NamedSharding) -> jax.Array:
        info = self.leaves[name]
        keys = ("params", *name.split("/"))
        item: Any = jax.ShapeDtypeStruct(info.shape, info.dtype, sharding=target)
        restore_arg: Any = ocp.ArrayRestoreArgs(sharding=target, global_shape=info.shape, dtype=info.dtype)
        for key in reversed(keys):
            item, restore_arg = {key: item}, {key: restore_arg}
        restored = self._handler.restore(
            self.step_dir / "state",
            args=ocp.args.PyTreeRestore(item=item, restore_args=restore_arg, partial_restore=True),
        )
        for key in keys:
            restored = restored[key]
        return restored


# ------------------------------------------------------------------------------------------------------------
# Hugging Face directories (through aya_jax.hf)
# ------------------------------------------------------------------------------------------------------------


def is_hf_directory(path: pathlib.Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors*"))


class HfSource:
    """A Hugging Face model directory, read one parameter leaf at a time (one HF tensor per layer) in float32 by
    `aya_jax.hf.read_leaf`."""

    def __init__(
        self, label: str, directory: pathlib.Path, field: str, mesh: Mesh, rules: Any, scan_layers: bool
    ):
        self.label, self.path, self.step = label, str(directory.absolute()), None
        try:
            self.architecture, self.model_config, _ = hf.model_config(directory)
            model = self.architecture.family.build(
                self.model_config,
                dtype=jnp.float32,
                param_dtype=jnp.float32,
                remat="none",
                scan_layers=scan_layers,
            )
            target = hf.abstract_params(self.architecture, model, self.model_config, mesh, rules)
            self._reader = hf.SafetensorsReader(directory)
            mappings = self.architecture.tensor_mappings(self.model_config, scan_layers)
            hf.check_tensors(self._reader, self.architecture, self.model_config, mappings)
        except hf.HfCheckpointError as e:
            raise MergeConfigError(f"{field}: {e}") from None
        self._mappings = {m.leaf_name: m for m in mappings}
        self.leaves = {
            name: LeafInfo(tuple(x.shape), np.dtype(np.float32), tuple(x.sharding.spec))
            for name, x in merging.flatten(target).items()
        }

    def read(self, name: str, target: NamedSharding) -> jax.Array:
        host = hf.read_leaf(self._reader, self._mappings[name], self.leaves[name].shape, dtype=np.float32)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])


def open_sources(
    path: str, label: str, field: str, mesh: Mesh, rules: Any, *, last: int = 1, scan_layers: bool = True
) -> list[Any]:
    """The source(s) a config entry names: a Hugging Face directory, or the newest `last` steps of a run."""
    p = pathlib.Path(path).expanduser()
    if is_hf_directory(p):
        if last > 1:
            raise MergeConfigError(
                f"{field}: last_steps needs an orbax run, but {path} is a Hugging Face directory"
            )
        return [HfSource(label, p, field, mesh, rules, scan_layers)]
    steps = resolve_checkpoints(path, field, last)
    return [OrbaxSource(f"{label}@{d.name}" if len(steps) > 1 else label, d) for d in steps]


# ============================================================================================================
# Output: shardings and the partial-save writer
# ============================================================================================================


def target_sharding(name: str, info: LeafInfo, mesh: Mesh) -> NamedSharding:
    """The leaf's saved partition spec on `mesh` (axes the mesh lacks are replicated); checked to divide."""
    spec: list[Any] = []
    for entry in info.spec or ():
        axes = entry if isinstance(entry, tuple | list) else (entry,)
        kept = tuple(a for a in axes if a is not None and a in mesh.axis_names)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else kept)
    result = NamedSharding(mesh, PartitionSpec(*spec[: len(info.shape)]))
    sharding.check_divisible({name: jax.ShapeDtypeStruct(info.shape, info.dtype)}, {name: result})
    return result


def check_output(workdir: pathlib.Path, report_name: str) -> None:
    """Refuse a workdir that already holds a checkpoint or a report (a merge never overwrites one). Reads only,
    so the merge job calls it first, before any input is opened."""
    if step_dirs(workdir / "checkpoints") or (workdir / report_name).exists():
        raise MergeConfigError(
            f"--workdir: {workdir} already holds a checkpoint or merge report; choose a new one"
        )


def prepare_output(workdir: pathlib.Path, step: int, report_name: str) -> pathlib.Path:
    """`<workdir>/checkpoints/<step>`, refusing a workdir that already holds a checkpoint or a report."""
    check_output(workdir, report_name)
    root = workdir / "checkpoints"
    for leftover in root.glob(f"{step}.partial_save*") if root.is_dir() else []:
        log.warning("removing %s, left by an interrupted merge", leftover)
        shutil.rmtree(leftover)
    root.mkdir(parents=True, exist_ok=True)
    return root / str(step)


class OutputWriter:
    """Writes merged leaves in groups of at least `flush_bytes` with orbax partial saves, then finalises the
    step in the trainers' layout (`state` + `data` + `digests`, so that whatever reads it verifies it)."""

    def __init__(self, step_dir: pathlib.Path, flush_bytes: int):
        self._partial = ocp_v1.partial
        self.step_dir, self.flush_bytes = step_dir, flush_bytes
        self._buffer: dict[str, jax.Array] = {}
        self._bytes = 0
        self.saves = 0
        self._digests: dict[str, str] = {}  # the trainers' per-array digests (aya_jax/checkpoint.py)

    def add(self, name: str, value: jax.Array) -> None:
        self._buffer[name] = value
        self._bytes += value.nbytes
        if self._bytes >= self.flush_bytes:
            self.flush()

    def flush(self, extra: dict[str, Any] | None = None) -> None:
        tree: dict[str, Any] = dict(extra or {})
        if self._buffer:
            tree["params"] = merging.unflatten(self._buffer)
        if tree:
            digests, nonfinite = checkpoint.tree_digests(tree)
            if nonfinite:
                raise checkpoint.CheckpointError(
                    f"the merge produced non-finite values in tensor {nonfinite[0]}"
                )
            self._digests.update(digests)
            self._partial.save(self.step_dir, tree)
            self.saves += 1
        self._buffer, self._bytes = {}, 0

    def finalize(self, rng_seed: int, data: dict[str, Any]) -> None:
        self.flush({"step": jnp.zeros((), jnp.int32), "rng": jax.random.PRNGKey(rng_seed)})
        self._partial.finalize(self.step_dir)
        json_items = {
            "data": data,
            "digests": {"format": checkpoint.DIGEST_FORMAT, "tensors": self._digests},
        }
        for item, value in json_items.items():
            ocp.Checkpointer(ocp.JsonCheckpointHandler()).save(
                self.step_dir / item, args=ocp.args.JsonSave(value)
            )
