"""Where trained weights come from: a Hugging Face directory, or an aya_jax run's orbax checkpoints.

Shared by the jobs that start from weights: `sft` (config.model.hf_init_dir), `generate`, `hf_export`,
`hf_import`. A run whose model came from a Hugging Face directory writes that directory's config.json to
`<workdir>/hf_config.json` (with the source path under "_aya_jax_source"), so later jobs pointed at the workdir
rebuild the same architecture and find the tokenizer without being told again.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import Mesh

from aya_jax import checkpoint as ckpt_lib
from aya_jax import hf
from aya_jax.models import families
from aya_jax.training import state as ts

log = logging.getLogger(__name__)

HF_CONFIG_RECORD = "hf_config.json"
SOURCE_KEY = "_aya_jax_source"


def hf_model_config(hf_dir: str, vocab_size: int | None = None) -> tuple[hf.Architecture, Any]:
    """(architecture, model config) of an HF directory; the tokenizer's vocabulary must fit the embedding."""
    arch, cfg, _ = hf.model_config(hf_dir)
    if vocab_size and cfg.vocab_size < vocab_size:
        raise ValueError(
            f"config.model.hf_init_dir: the checkpoint's vocab_size {cfg.vocab_size} is smaller than the "
            f"tokenizer's {vocab_size} (config.data.vocab)"
        )
    return arch, cfg


def record_hf_source(workdir: str | pathlib.Path, hf_dir: str) -> None:
    """Write `<workdir>/hf_config.json` (process 0 only)."""
    if jax.process_index() != 0:
        return
    record = {**hf.read_config(hf_dir), SOURCE_KEY: str(pathlib.Path(hf_dir).absolute())}
    path = pathlib.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / HF_CONFIG_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def recorded_hf_source(workdir: str | pathlib.Path) -> tuple[dict[str, Any], str] | None:
    """(config.json dict, source directory) recorded in a workdir, or None."""
    path = pathlib.Path(workdir) / HF_CONFIG_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record, str(record.pop(SOURCE_KEY, ""))


def split_checkpoint_path(path: str) -> tuple[pathlib.Path, pathlib.Path]:
    """A run's workdir or its checkpoints/ directory -> (workdir, checkpoints directory)."""
    p = pathlib.Path(path)
    if (p / "checkpoints").is_dir():
        return p, p / "checkpoints"
    if p.is_dir():
        return p.parent, p
    raise FileNotFoundError(f"{path}: no such checkpoint directory")


def dtype_from_name(name: str, field: str) -> jnp.dtype:
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{field}: {name!r} is not one of float32, bfloat16, float16")
    return jnp.dtype(name)


def build_model(model_config: Any, vocab_size: int | None, hf_config: dict[str, Any] | None = None):
    """(model, model config) of config.model: from an HF config.json dict when given, else the preset (its
    family picks the architecture, aya_jax/models/families.py) with config.model.overrides; `vocab_size` (the
    tokenizer's) fills presets whose vocabulary comes from the data. dtypes, remat and layer scanning always
    come from config.model."""
    overrides = {k: v for k, v in model_config.overrides.to_dict().items() if v is not None}
    if hf_config is None:
        cfg = families.family_of_preset(model_config.preset).resolve(
            model_config.preset, vocab_size, overrides
        )
    else:
        if overrides:
            raise ValueError(
                f"config.model.overrides: {sorted(overrides)} cannot change an architecture read from a Hugging "
                "Face config.json (config.model.hf_init_dir)"
            )
        cfg = hf.architecture(hf_config.get("model_type", "")).config_from_hf(hf_config)
        if vocab_size and cfg.vocab_size < vocab_size:
            raise ValueError(
                f"config.data.vocab: the tokenizer has {vocab_size} tokens, the checkpoint's embedding only "
                f"{cfg.vocab_size}"
            )
    model = families.build(
        cfg,
        dtype=dtype_from_name(model_config.dtype, "config.model.dtype"),
        param_dtype=dtype_from_name(model_config.param_dtype, "config.model.param_dtype"),
        remat=model_config.remat,
        scan_layers=bool(model_config.scan_layers),
    )
    return model, cfg


def train_state_from_hf(
    hf_dir: str, model: nn.Module, tx: Any, abstract_state: Any, state_shardings: Any, rng: jax.Array
) -> ts.TrainState:
    """A fresh TrainState whose params are the HF weights of `hf_dir`, streamed straight onto their shardings
    (no random init is materialised, so the params exist once). The optimiser state is initialised from them
    and the rng is split exactly as `train_state.make_init_fn` does."""
    arch, cfg, _ = hf.model_config(hf_dir)
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state.params,
        state_shardings.params,
    )
    params = hf.load_params(hf_dir, arch, cfg, target, scan_layers=bool(model.scan_layers))
    return _train_state_from_params(params, tx, state_shardings, rng)


def train_state_from_orbax(
    path: str, tx: Any, abstract_state: Any, state_shardings: Any, rng: jax.Array
) -> tuple[int, ts.TrainState]:
    """A fresh TrainState (step 0, new optimiser state) whose params are those of another run's checkpoint
    (config.checkpoint.init_from: its workdir, checkpoints/ directory, or a merge/hf_import output), restored
    straight onto their shardings. Returns (the source step, state)."""
    _, checkpoints_dir = split_checkpoint_path(path)
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state.params,
        state_shardings.params,
    )
    step, params = load_orbax_params(checkpoints_dir, target)
    return step, _train_state_from_params(params, tx, state_shardings, rng)


def _train_state_from_params(params: Any, tx: Any, state_shardings: Any, rng: jax.Array) -> ts.TrainState:
    """Step 0, the optimiser initialised from `params`, the rng split exactly as `make_init_fn` does."""

    def init(params: Any, rng: jax.Array) -> ts.TrainState:
        _, state_rng = jax.random.split(rng)
        return ts.TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_rng
        )

    return jax.jit(init, out_shardings=state_shardings, donate_argnums=(0,))(params, rng)


def abstract_params(model: nn.Module, mesh: Mesh, rules: Any) -> Any:
    """ShapeDtypeStructs with shardings for the model's params (nothing allocated)."""
    arch = hf.architecture(families.family_of(model).hf_model_type)
    return hf.abstract_params(arch, model, model.cfg, mesh, rules)


def load_orbax_params(checkpoints_dir: pathlib.Path, target: Any, step: int | None = None) -> tuple[int, Any]:
    """Params only from an aya_jax checkpoint directory, straight onto `target`'s shardings and dtypes."""
    try:
        return ckpt_lib.load_params(checkpoints_dir, target, step=step)
    except ckpt_lib.CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax reports shape mismatches in many ways; say what to check
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ckpt_lib.CheckpointError(
            f"{checkpoints_dir}: params do not fit the model built from the config ({first[:200]}); pass the "
            "same --config.model.* (and data vocabulary) as the run that wrote them"
        ) from None


def save_orbax_params(workdir: pathlib.Path, params: Any, step: int = 0) -> pathlib.Path:
    """A params-only checkpoint at `<workdir>/checkpoints/<step>` that `load_orbax_params` (and
    config.checkpoint.init_from) read."""
    checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=1, async_save=False)
    checkpointer.save(step, {"params": params}, {"source": "hf_import"})
    checkpointer.close()
    return workdir / "checkpoints"
