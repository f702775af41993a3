"""What a Hugging Face architecture is to `aya_jax.hf`: the `Architecture` record (config.json <-> model config,
one `TensorMapping` per parameter leaf, export metadata) and the small helpers the built-in ones share.

Each built-in architecture module (`aya_jax/hf/cohere.py`, `aya_jax/hf/mt5.py`) defines one `ARCHITECTURE` from
these records and registers nothing; `aya_jax/hf/io.py` builds its registry from them. Imports go one way:
`architectures` <- `cohere`, `mt5` <- `io`.

An architecture names its model family (`aya_jax/models/families.py`): the family builds the flax module of a
model config and gives `model.init` its dummy inputs, so importing a checkpoint needs no model code here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from aya_jax.hf.safetensors import HfCheckpointError
from aya_jax.models import families


@dataclasses.dataclass(frozen=True)
class TensorMapping:
    """One parameter leaf <-> Hugging Face tensor(s).

    `param_path` is the leaf's path in the params tree, e.g. ("layers", "attn", "q_proj"). A `hf_name` with
    "{layer}" marks a stacked leaf: its leading axis has `num_layers` entries, one HF tensor each; `to_ours` /
    `to_hf` then convert one layer. `hf_shape` is the HF tensor's shape (one layer's), checked on import.
    """

    param_path: tuple[str, ...]
    hf_name: str
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    num_layers: int | None = None

    @property
    def stacked(self) -> bool:
        return self.num_layers is not None

    @property
    def leaf_name(self) -> str:
        """The '/'-joined parameter path, as aya_jax.merging names leaves: "layers/attn/q_proj"."""
        return "/".join(self.param_path)

    def hf_names(self) -> list[str]:
        if not self.stacked:
            return [self.hf_name]
        return [self.hf_name.format(layer=i) for i in range(self.num_layers)]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One Hugging Face `model_type` and everything import and export need to know about it:

    * `family`: the model family whose configs `config_from_hf` returns (it builds the module);
    * `config_from_hf(config_json: dict) -> model config` and `config_to_hf(model config) -> dict` (raise
      `HfCheckpointError` naming the field for anything unsupported);
    * `tensor_mappings(cfg, scan_layers) -> list[TensorMapping]`: for every parameter leaf, the HF tensor name
      (with `{layer}` for a stacked leaf) and the layout functions of one layer;
    * `optional_hf_tensors(cfg)`: HF names that may be present and are not needed (e.g. a tied
      `lm_head.weight`);
    * `generation_config(cfg)` and `tokenizer_config(tokenizer_json)`: what export writes besides the weights;
    * `eos_ids(generation_config_json, cfg)`: every stop token the checkpoint declares (used by generation);
    * `config_for_tensors(config_json, tensor_names)`: config.json corrected by what the weights show (e.g. an
      `lm_head.weight` next to a config saying the head is tied), applied by `aya_jax.hf.read_config`.
    """

    family: families.Family
    model_type: str  # config.json "model_type"
    auto_class: str  # the transformers class that loads an export, for messages: "AutoModelForCausalLM"
    config_from_hf: Callable[[dict[str, Any]], Any]
    config_to_hf: Callable[[Any], dict[str, Any]]
    tensor_mappings: Callable[[Any, bool], list[TensorMapping]]  # (cfg, scan_layers)
    optional_hf_tensors: Callable[[Any], set[str]] = lambda cfg: set()
    generation_config: Callable[[Any], dict[str, Any]] = lambda cfg: {}
    tokenizer_config: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda tokenizer_json: None
    eos_ids: Callable[[dict[str, Any], Any], tuple[int, ...]] = lambda hf_config, cfg: ()
    config_for_tensors: Callable[[dict[str, Any], set[str]], dict[str, Any]] | None = None


# ------------------------------------------------------------------------------------------------------------
# Helpers shared by the built-in architectures
# ------------------------------------------------------------------------------------------------------------


def identity(x: np.ndarray) -> np.ndarray:
    return x


def transpose(x: np.ndarray) -> np.ndarray:
    """torch Linear [out, in] <-> ours [in, out] (the einsums read [in, ...] naturally)."""
    return x.T


def required(config_json: dict[str, Any], key: str) -> Any:
    if key not in config_json or config_json[key] is None:
        raise HfCheckpointError(f"config.json: {key} is missing")
    return config_json[key]


def first_id(value: Any, default: int) -> int:
    """A token id field that may be absent, one id, or a list of ids (the first is the model's own)."""
    if value is None:
        return default
    if isinstance(value, list | tuple):
        return int(value[0]) if value else default
    return int(value)


def declared_eos_ids(generation_json: dict[str, Any], default: int) -> tuple[int, ...]:
    """Every stop token of generation_config.json's (or config.json's) `eos_token_id`, which may list several."""
    value = generation_json.get("eos_token_id", default)
    ids = value if isinstance(value, list | tuple) else [value]
    return tuple(int(i) for i in ids if i is not None and int(i) >= 0)
