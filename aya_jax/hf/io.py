"""Hugging Face checkpoints: import a local directory (config.json + safetensors shards + tokenizer.json) onto a
mesh, and export params back to a directory that `transformers`' `from_pretrained` loads.

    loaded = hf.load("/ckpt/aya-expanse-8b", mesh, rules, dtype=jnp.bfloat16)   # -> LoadedModel
    logits = loaded.model.apply({"params": loaded.params}, tokens)
    hf.save("/out/my-aya", loaded.params, loaded.config, tokenizer="/ckpt/aya-expanse-8b")

Streaming, both ways. Import reads one tensor at a time from its shard, converts it to this repository's
layout on the host and places it straight onto its target sharding with `jax.make_array_from_callback` (each
device gets only its slice). A stacked `[layers, ...]` parameter is filled one layer at a time by a donated,
jitted dynamic_update_slice, so the host never holds more than one layer's tensor (plus its converted copy):
peak host memory is about twice the largest single Hugging Face tensor, not the model. Export gathers one
layer of one parameter at a time and appends it to the current shard file. The safetensors format is read and
written by `aya_jax/hf/safetensors.py` (no torch, transformers or safetensors package needed; bf16 through
`ml_dtypes`).

Architectures are a registry keyed by config.json's `model_type`, built from `BUILTIN_ARCHITECTURES`: Cohere
(Aya 23, Aya Expanse; `aya_jax/hf/cohere.py`) and mT5 (Aya 101; `aya_jax/hf/mt5.py`). Each is an `Architecture`
record (`aya_jax/hf/architectures.py`: config.json <-> model config, one `TensorMapping` per parameter leaf,
export metadata, and the model family that builds the module). **To add one**: give its model a family in
`aya_jax/models/families.py` (with its `hf_model_type`), write `aya_jax/hf/<name>.py` defining an
`ARCHITECTURE = Architecture(family=families.family_named("<name>"), ...)` (importing only
`aya_jax.hf.architectures` and `aya_jax.hf.safetensors`, never this module), and add it to
`BUILTIN_ARCHITECTURES` below. An architecture kept outside the repository is made known with `hf.register(...)`.

Export folders. `save` writes into the folder it is given. The jobs write through `output_folder`, which hands
process 0 a staging folder that replaces the export folder as a whole when the block ends
(`aya_jax.workdirs.replace_output`): a folder of the user's files is refused, and a new export never lands
beside the stale shards and index of an earlier one (which `load` would read instead of the new weights).

Errors are `HfCheckpointError` (a ValueError: `aya_jax.main` prints it as one line): unsupported
architecture, missing shard file, missing or unexpected tensor, shape mismatch — each naming the tensor/file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import json
import logging
import os
import pathlib
import shutil
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from aya_jax import sharding, workdirs
from aya_jax.hf import cohere, mt5
from aya_jax.hf.architectures import Architecture, TensorMapping
from aya_jax.hf.safetensors import (
    DEFAULT_MAX_SHARD_BYTES,
    EXPORT_DTYPES,
    HfCheckpointError,
    SafetensorsReader,
    SafetensorsWriter,
)
from aya_jax.models import families

log = logging.getLogger(__name__)

BUILTIN_ARCHITECTURES: tuple[Architecture, ...] = (cohere.ARCHITECTURE, mt5.ARCHITECTURE)

CONFIG_FILE = "config.json"
EXPORT_KIND = "hf_export"  # the kind of output folder (aya_jax/workdirs.py) an export is
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


# ============================================================================================================
# Architectures
# ============================================================================================================


_ARCHITECTURES: dict[str, Architecture] = {arch.model_type: arch for arch in BUILTIN_ARCHITECTURES}


def register(architecture: Architecture) -> Architecture:
    """Make an architecture of one's own importable/exportable under its `model_type` (last registration
    wins, so a built-in one can be replaced)."""
    _ARCHITECTURES[architecture.model_type] = architecture
    return architecture


def architectures() -> dict[str, Architecture]:
    return dict(_ARCHITECTURES)


def architecture(model_type: str) -> Architecture:
    known = architectures()
    if model_type not in known:
        hint = ""
        if model_type == "cohere2":
            hint = " (Cohere2 is Command R7B's sliding-window decoder; Aya 23 and Aya Expanse are 'cohere')"
        raise HfCheckpointError(
            f"config.json: model_type {model_type!r} is not supported{hint}; supported: {', '.join(sorted(known))}"
        )
    return known[model_type]


def architecture_of(cfg: Any) -> Architecture:
    """The architecture a model config exports as: the registered one for its family's `hf_model_type`."""
    return architecture(families.family_of(cfg).hf_model_type)


# ============================================================================================================
# Config
# ============================================================================================================


def read_config(hf_dir: str | os.PathLike) -> dict[str, Any]:
    path = pathlib.Path(hf_dir) / CONFIG_FILE
    if not path.is_file():
        raise HfCheckpointError(f"{hf_dir}: no {CONFIG_FILE} (expected a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HfCheckpointError(f"{path}: not valid JSON ({e})") from None
    arch = architectures().get(config.get("model_type", ""))
    if arch is not None and arch.config_for_tensors is not None:
        try:
            names = SafetensorsReader(hf_dir).names
        except HfCheckpointError:  # no weights (yet): config.json is all there is
            return config
        config = arch.config_for_tensors(config, names)
    return config


def model_config(hf_dir: str | os.PathLike) -> tuple[Architecture, Any, dict[str, Any]]:
    """(architecture, this repository's model config, config.json as a dict) of an HF directory."""
    hf_config = read_config(hf_dir)
    model_type = hf_config.get("model_type")
    if not model_type:
        raise HfCheckpointError(f"{pathlib.Path(hf_dir) / CONFIG_FILE}: no model_type")
    arch = architecture(model_type)
    return arch, arch.config_from_hf(hf_config), hf_config


# ============================================================================================================
# Import
# ============================================================================================================


def abstract_params(
    arch: Architecture, model: nn.Module, cfg: Any, mesh: Mesh | None = None, rules: Any = ()
) -> Any:
    """ShapeDtypeStructs of the model's params, carrying their target shardings (from the logical axis names
    through `rules`; a single device when `mesh` is None). Nothing is allocated."""
    del cfg  # the module carries its config; kept for callers that pass (arch, model, cfg)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), *arch.family.init_inputs())["params"]
    shapes = nn.unbox(boxed)
    if mesh is None:
        device = SingleDeviceSharding(jax.devices()[0])
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
    rules = sharding.normalize_rules(rules, mesh)
    shardings = sharding.tree_shardings(nn.get_partition_spec(boxed), mesh, rules)
    sharding.check_divisible(shapes, shardings)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def _leaf(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            raise KeyError(path)
        tree = tree[key]
    return tree


def _set_leaf(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _without_leading_axis(s: jax.sharding.Sharding) -> jax.sharding.Sharding:
    if isinstance(s, NamedSharding):
        spec = tuple(s.spec) + (None,) * max(0, 1 - len(s.spec))
        return NamedSharding(s.mesh, PartitionSpec(*spec[1:]))
    return s


def _place(host: np.ndarray, target: jax.ShapeDtypeStruct) -> jax.Array:
    """A host array onto `target.sharding`: each device receives only its own slice."""
    host = host.astype(target.dtype, copy=False)
    return jax.make_array_from_callback(host.shape, target.sharding, lambda index: host[index])


def check_tensors(
    reader: SafetensorsReader, arch: Architecture, cfg: Any, mappings: Iterable[TensorMapping]
) -> None:
    """The checkpoint holds exactly the tensors `mappings` need (plus the architecture's optional ones), each
    of the shape config.json implies; else one line naming the first offending tensor."""
    mappings = list(mappings)
    where = reader.directory
    shapes = {name: m.hf_shape for m in mappings for name in m.hf_names()}
    unexpected = reader.names - set(shapes) - arch.optional_hf_tensors(cfg)
    if unexpected:
        raise HfCheckpointError(
            f"{where}: unexpected tensor(s) {sorted(unexpected)[:5]} for a {arch.model_type} model with this "
            f"config.json (wrong config, or an unsupported variant)"
        )
    missing = sorted(set(shapes) - reader.names)
    if missing:
        raise HfCheckpointError(f"{where}: tensor {missing[0]} is missing ({len(missing)} missing in all)")
    for name in sorted(shapes):
        if reader.shape(name) != shapes[name]:
            raise HfCheckpointError(
                f"{name}: shape {reader.shape(name)} in the checkpoint, but config.json implies {shapes[name]}"
            )


def read_leaf(
    reader: SafetensorsReader,
    mapping: TensorMapping,
    shape: tuple[int, ...],
    *,
    layer: int | None = None,
    dtype: Any = None,
) -> np.ndarray:
    """One parameter leaf on the host, in this repository's layout: `mapping.to_ours` of its HF tensor.

    `shape` is the leaf's shape in our layout (a mismatch is an error naming the tensor). A stacked leaf
    (`mapping.stacked`: one HF tensor per layer) gives layer `layer` alone when it is set (then `shape` is one
    layer's), else every layer on a leading axis, filled one layer at a time so that the host holds the leaf
    and one converted layer. `dtype` (None: the checkpoint's) is the returned array's; it is C-contiguous."""
    if mapping.stacked and layer is None:
        if tuple(shape[:1]) != (mapping.num_layers,):
            raise HfCheckpointError(
                f"{mapping.hf_name}: {mapping.num_layers} layers, but the model expects shape {tuple(shape)}"
            )
        out = None
        for i in range(mapping.num_layers):
            one = read_leaf(reader, mapping, tuple(shape[1:]), layer=i, dtype=dtype)
            if out is None:
                out = np.empty(tuple(shape), one.dtype)
            out[i] = one
            del one
        return out
    name = mapping.hf_name if layer is None else mapping.hf_names()[layer]
    array = mapping.to_ours(reader.read(name))
    if tuple(array.shape) != tuple(shape):
        raise HfCheckpointError(f"{name}: converts to shape {array.shape}, but the model expects {shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def load_params(
    hf_dir: str | os.PathLike,
    arch: Architecture,
    cfg: Any,
    target: Any,
    *,
    scan_layers: bool = True,
    reader: SafetensorsReader | None = None,
) -> Any:
    """Read the HF weights of `hf_dir` into a params tree shaped, typed and sharded like `target` (a tree of
    ShapeDtypeStructs with shardings, e.g. from `abstract_params`), one tensor (one layer) at a time."""
    reader = reader or SafetensorsReader(hf_dir)
    mappings = arch.tensor_mappings(cfg, scan_layers)
    check_tensors(reader, arch, cfg, mappings)

    params: dict[str, Any] = {}
    for m in mappings:
        try:
            leaf_target = _leaf(target, m.param_path)
        except KeyError:
            raise HfCheckpointError(f"{m.leaf_name}: not a parameter of the model") from None
        if not m.stacked:
            host = read_leaf(reader, m, leaf_target.shape)
            _set_leaf(params, m.param_path, _place(host, leaf_target))
            del host
            continue
        layer_target = jax.ShapeDtypeStruct(
            leaf_target.shape[1:], leaf_target.dtype, sharding=_without_leading_axis(leaf_target.sharding)
        )
        zeros = functools.partial(jnp.zeros, leaf_target.shape, leaf_target.dtype)
        stacked = jax.jit(zeros, out_shardings=leaf_target.sharding)()
        set_layer = jax.jit(
            lambda s, x, i: jax.lax.dynamic_update_index_in_dim(s, x, i, 0),
            out_shardings=leaf_target.sharding,
            donate_argnums=0,
        )
        for i in range(m.num_layers):
            host = read_leaf(reader, m, layer_target.shape, layer=i)
            stacked = set_layer(stacked, _place(host, layer_target), jnp.int32(i))
            del host
        _set_leaf(params, m.param_path, stacked)

    expected_paths = {
        tuple(str(k.key) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(target)[0]
    }
    filled = {m.param_path for m in mappings}
    if expected_paths != filled:
        raise HfCheckpointError(
            f"{arch.model_type}: parameters without an HF tensor: {sorted(expected_paths - filled)[:5]}"
        )
    return params


@dataclasses.dataclass
class LoadedModel:
    """What `load` returns: the model (a flax module built for `dtype`), its config, sharded params, and the
    HF metadata sampling needs."""

    architecture: Architecture
    config: Any
    model: nn.Module
    params: Any
    hf_config: dict[str, Any]
    eos_ids: tuple[int, ...]


def load(
    hf_dir: str | os.PathLike,
    mesh: Mesh | None = None,
    rules: Any = (),
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    scan_layers: bool = True,
) -> LoadedModel:
    """Import an HF directory: the architecture from config.json, the weights streamed onto `mesh` with the
    logical `rules` (one device when `mesh` is None). `param_dtype` defaults to `dtype` (inference); pass
    float32 for fp32 master weights when fine-tuning."""
    arch, cfg, hf_config = model_config(hf_dir)
    param_dtype = param_dtype or dtype
    model = arch.family.build(
        cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype), remat="none", scan_layers=scan_layers
    )
    target = abstract_params(arch, model, cfg, mesh, rules)
    params = load_params(hf_dir, arch, cfg, target, scan_layers=scan_layers)
    return LoadedModel(
        arch, cfg, model, params, hf_config, arch.eos_ids(_generation_json(hf_dir, hf_config), cfg)
    )


def _generation_json(hf_dir: str | os.PathLike, hf_config: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json where present (its eos_token_id may list several stop tokens), else config.json."""
    path = pathlib.Path(hf_dir) / "generation_config.json"
    if path.is_file():
        return {**hf_config, **json.loads(path.read_text())}
    return hf_config


# ============================================================================================================
# Export
# ============================================================================================================


_take_layer = jax.jit(lambda x, i: jax.lax.dynamic_index_in_dim(x, i, 0, keepdims=False))


def save(
    out_dir: str | os.PathLike,
    params: Any,
    cfg: Any,
    *,
    model_type: str | None = None,
    dtype: str | None = "bfloat16",
    tokenizer: str | os.PathLike | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    scan_layers: bool = True,
) -> pathlib.Path:
    """Export params to an HF directory: config.json, generation_config.json, safetensors shard(s) (+ index),
    and the tokenizer files when `tokenizer` (a tokenizer.json[.gz] or an HF directory) is given.

    `model_type` (None: that of `cfg`'s family) picks the architecture. `dtype`: "bfloat16" | "float16" |
    "float32", or None to keep each parameter's own dtype. On several hosts every process must call this (the
    gathers are collective); only process 0 writes. Files already in `out_dir` stay (an earlier sharded
    export's index would then shadow a new single file): give a new folder, or the one `output_folder` yields.
    """
    arch = architecture_of(cfg) if model_type is None else architecture(model_type)
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise HfCheckpointError(f"export dtype {dtype!r}: expected one of {', '.join(EXPORT_DTYPES)} or None")
    out = pathlib.Path(out_dir)
    params = nn.unbox(params)  # a freshly initialised tree may still carry logical-partitioning boxes
    writer_process = jax.process_index() == 0
    mappings = arch.tensor_mappings(cfg, scan_layers)
    plan = []
    for m in mappings:
        try:
            leaf = _leaf(params, m.param_path)
        except KeyError:
            raise HfCheckpointError(f"export: params have no {'/'.join(m.param_path)}") from None
        out_dtype = EXPORT_DTYPES[dtype] if dtype else np.dtype(leaf.dtype)
        plan += [(name, m.hf_shape, out_dtype) for name in m.hf_names()]
    if writer_process:
        out.mkdir(parents=True, exist_ok=True)
        writer = SafetensorsWriter(out, plan, max_shard_bytes)
    planned_dtype = {name: d for name, _, d in plan}
    for m in mappings:
        leaf = _leaf(params, m.param_path)
        layers: Iterable[tuple[str, Any]] = (
            [(m.hf_name, leaf)]
            if not m.stacked
            else ((name, _take_layer(leaf, jnp.int32(i))) for i, name in enumerate(m.hf_names()))
        )
        for name, value in layers:
            host = m.to_hf(sharding.to_host(value)).astype(planned_dtype[name])
            if writer_process:
                writer.write(name, host)
            del host
    if not writer_process:
        return out
    writer.close()
    hf_config = arch.config_to_hf(cfg)
    hf_config["dtype"] = plan[0][2].name  # what from_pretrained(dtype="auto") loads in
    (out / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    generation = arch.generation_config(cfg)
    if generation:
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
    if tokenizer:
        export_tokenizer(tokenizer, out, arch)
    log.info(
        "exported %d tensors (%.1f MiB, %d file(s)) to %s; load with transformers.%s.from_pretrained",
        len(plan),
        writer.total_bytes / 2**20,
        len(writer.files),
        out,
        arch.auto_class,
    )
    return out


@contextlib.contextmanager
def output_folder(out_dir: str | os.PathLike, field: str, kind: str = EXPORT_KIND) -> Iterator[pathlib.Path]:
    """The folder to `save` an export of `out_dir` into, so that it replaces `out_dir` as a whole.

    Process 0 gets a staging folder beside `out_dir` that is swapped in when the block ends without an error
    (and removed when it raises, leaving `out_dir` as it was); `out_dir` must be new, empty or an earlier
    output of `kind`, else `workdirs.WorkdirError` naming `field`. The other processes get `out_dir` itself:
    they call `save` for its collective gathers and write nothing."""
    if jax.process_index() != 0:
        yield pathlib.Path(out_dir)
        return
    with workdirs.replace_output(out_dir, kind, field) as stage:
        yield stage


def export_tokenizer(source: str | os.PathLike, out_dir: pathlib.Path, arch: Architecture) -> None:
    """Copy tokenizer files into `out_dir`. `source`: an HF directory (its tokenizer.json and, when present,
    tokenizer_config.json / special_tokens_map.json / chat_template.jinja) or a tokenizer.json[.gz] file, for
    which the architecture writes a default tokenizer_config.json (class, special tokens, chat template)."""
    source = pathlib.Path(source)
    if source.is_dir():
        if not (source / "tokenizer.json").is_file():
            raise HfCheckpointError(f"{source}: no tokenizer.json to export")
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, out_dir / name)
        if (source / "tokenizer_config.json").is_file():
            return
        data = (source / "tokenizer.json").read_bytes()
    elif source.is_file():
        data = source.read_bytes()
        if source.suffix == ".gz":
            data = gzip.decompress(data)
        (out_dir / "tokenizer.json").write_bytes(data)
    else:
        raise HfCheckpointError(f"{source}: tokenizer not found")
    tokenizer_config = arch.tokenizer_config(json.loads(data))
    if tokenizer_config:
        (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
