"""Hugging Face checkpoints: the public interface of `aya_jax.hf.io` and `aya_jax.hf.safetensors`."""

from aya_jax.hf.io import *  # noqa: F403
from aya_jax.hf.safetensors import (  # noqa: F401
    DEFAULT_MAX_SHARD_BYTES,
    EXPORT_DTYPES,
    INDEX_FILE,
    SINGLE_FILE,
    HfCheckpointError,
    SafetensorsReader,
    SafetensorsWriter,
    read_header,
)
