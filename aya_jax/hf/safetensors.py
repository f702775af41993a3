"""The safetensors format, read and written without torch or the safetensors package: an 8-byte little-endian
header length, a JSON header (dtype, shape, byte offsets per tensor), then the raw little-endian bytes. bf16 goes
through `ml_dtypes`. Reading takes one tensor at a time (a plain read of its bytes, nothing memory-mapped);
writing appends tensors in a planned order, so a shard is never buffered whole. Used by `aya_jax.hf`.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 4 * 2**30


class HfCheckpointError(ValueError):
    """An HF directory that cannot be imported (or params that cannot be exported); names the tensor or file."""


# ============================================================================================================

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
EXPORT_DTYPES = {"bfloat16": _DTYPES["BF16"], "float16": _DTYPES["F16"], "float32": _DTYPES["F32"]}


def read_header(path: pathlib.Path) -> tuple[dict[str, Any], int]:
    """(header dict, byte offset where tensor data starts)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise HfCheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        n = int.from_bytes(raw, "little")
        if n > 100 * 2**20:
            raise HfCheckpointError(f"{path}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HfCheckpointError(f"{path}: unreadable safetensors header ({e})") from None
    return header, 8 + n


class SafetensorsReader:
    """The tensors of an HF directory: `model.safetensors`, or the shards named by `model.safetensors.index.json`.

    `read(name)` returns a fresh NumPy array of that one tensor (bf16 as ml_dtypes.bfloat16); nothing else of
    the shard is loaded, and the array is freed when the caller drops it.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)
        index_path, single_path = self.directory / INDEX_FILE, self.directory / SINGLE_FILE
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
            for file in files:
                if not (self.directory / file).is_file():
                    example = next(n for n, f in weight_map.items() if f == file)
                    raise HfCheckpointError(
                        f"{self.directory / file}: shard named by {INDEX_FILE} is missing (it holds e.g. {example})"
                    )
        elif single_path.is_file():
            files = [SINGLE_FILE]
        else:
            found = sorted(p.name for p in self.directory.glob("*") if p.suffix in (".bin", ".pt", ".pth"))
            hint = f" (found {found[:3]}: convert PyTorch .bin weights to safetensors first)" if found else ""
            raise HfCheckpointError(f"{self.directory}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        self._entries: dict[str, tuple[pathlib.Path, str, tuple[int, ...], int, int]] = {}
        for file in files:
            path = self.directory / file
            header, data_start = read_header(path)
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                self._entries[name] = (
                    path,
                    info["dtype"],
                    tuple(info["shape"]),
                    data_start + begin,
                    end - begin,
                )

    @property
    def names(self) -> set[str]:
        return set(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][2]

    def read(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise HfCheckpointError(f"{self.directory}: tensor {name} is missing from the checkpoint")
        path, dtype_name, shape, offset, nbytes = self._entries[name]
        if dtype_name not in _DTYPES:
            raise HfCheckpointError(f"{name} in {path.name}: unsupported safetensors dtype {dtype_name}")
        dtype = _DTYPES[dtype_name]
        count = math.prod(shape)
        if count * dtype.itemsize != nbytes:
            raise HfCheckpointError(f"{name} in {path.name}: {nbytes} bytes for shape {shape} {dtype_name}")
        with open(path, "rb") as f:
            f.seek(offset)
            array = np.fromfile(f, dtype=dtype, count=count)
        return array.reshape(shape)


class SafetensorsWriter:
    """Writes planned tensors, in plan order, into shards of at most `max_shard_bytes` (one bigger tensor gets a
    shard of its own), named like transformers' own (`model-00001-of-00002.safetensors` + index, or a single
    `model.safetensors`). Each shard's header is known from the plan, so data is appended as it arrives."""

    def __init__(
        self,
        directory: pathlib.Path,
        plan: Sequence[tuple[str, tuple[int, ...], np.dtype]],
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    ):
        self.directory = directory
        shards: list[list[tuple[str, tuple[int, ...], np.dtype]]] = [[]]
        size = 0
        for name, shape, dtype in plan:
            nbytes = math.prod(shape) * np.dtype(dtype).itemsize
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, tuple(shape), np.dtype(dtype)))
            size += nbytes
        n = len(shards)
        self.files = (
            [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        self._shards = shards
        self._order = [(i, name) for i, shard in enumerate(shards) for name, _, _ in shard]
        self._next = 0
        self._file = None
        self._file_index = -1
        self.total_bytes = sum(math.prod(s) * d.itemsize for shard in shards for _, s, d in shard)

    def _open(self, index: int) -> None:
        if self._file is not None:
            self._file.close()
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}  # transformers requires format "pt"
        offset = 0
        for name, shape, dtype in self._shards[index]:
            nbytes = math.prod(shape) * dtype.itemsize
            header[name] = {
                "dtype": _DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the reference writer does
        self._file = open(self.directory / self.files[index], "wb")
        self._file.write(len(raw).to_bytes(8, "little") + raw)
        self._file_index = index

    def write(self, name: str, array: np.ndarray) -> None:
        shard_index, expected = self._order[self._next]
        if name != expected:
            raise HfCheckpointError(f"export: wrote {name} where the plan has {expected}")
        _, shape, dtype = next(t for t in self._shards[shard_index] if t[0] == name)
        if tuple(array.shape) != shape or array.dtype != dtype:
            raise HfCheckpointError(f"export: {name} is {array.shape} {array.dtype}, planned {shape} {dtype}")
        if shard_index != self._file_index:
            self._open(shard_index)
        self._file.write(
            np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        )
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._order):
            raise HfCheckpointError(
                f"export: {len(self._order) - self._next} planned tensors were not written"
            )
        if self._file is not None:
            self._file.close()
        if len(self.files) > 1:
            weight_map = {name: self.files[i] for i, name in self._order}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
