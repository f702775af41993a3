"""Hugging Face checkpoints: the public interface of `aya_jax/hf/` — import/export and the architecture registry
(`io.py`), the `Architecture` / `TensorMapping` records (`architectures.py`) and the safetensors format
(`safetensors.py`). The built-in architectures themselves are `aya_jax.hf.cohere` and `aya_jax.hf.mt5`."""

from aya_jax.hf.architectures import Architecture, TensorMapping
from aya_jax.hf.io import (
    BUILTIN_ARCHITECTURES,
    CONFIG_FILE,
    TOKENIZER_FILES,
    LoadedModel,
    abstract_params,
    architecture,
    architecture_of,
    architectures,
    check_tensors,
    export_tokenizer,
    load,
    load_params,
    model_config,
    read_config,
    read_leaf,
    register,
    save,
)
from aya_jax.hf.safetensors import (
    DEFAULT_MAX_SHARD_BYTES,
    EXPORT_DTYPES,
    INDEX_FILE,
    SINGLE_FILE,
    HfCheckpointError,
    SafetensorsReader,
    SafetensorsWriter,
    read_header,
)

__all__ = [
    "BUILTIN_ARCHITECTURES",
    "CONFIG_FILE",
    "DEFAULT_MAX_SHARD_BYTES",
    "EXPORT_DTYPES",
    "INDEX_FILE",
    "SINGLE_FILE",
    "TOKENIZER_FILES",
    "Architecture",
    "HfCheckpointError",
    "LoadedModel",
    "SafetensorsReader",
    "SafetensorsWriter",
    "TensorMapping",
    "abstract_params",
    "architecture",
    "architecture_of",
    "architectures",
    "check_tensors",
    "export_tokenizer",
    "load",
    "load_params",
    "model_config",
    "read_config",
    "read_header",
    "read_leaf",
    "register",
    "save",
]
