"""Metric writers (JSONL, TensorBoard), and the peak FLOP/s behind MFU (plots of the metrics: aya_jax/plots.py)."""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter

log = logging.getLogger(__name__)

# Dense peak matmul FLOP/s per device (chip for TPU), by jax `device_kind` substring, for bf16 and fp32 inputs.
# TPU fp32 matmuls run as multi-pass bf16 on the MXU (~1/3 of peak at "highest" precision is not advertised;
# we use the bf16 figure / 3 as the fp32 peak). GPU fp32 is the non-tensor-core figure.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 3},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 3},  # v5e
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12 / 3},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 3},
    "TPU v5": {"bfloat16": 459e12, "float32": 459e12 / 3},  # v5p reports "TPU v5"
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12 / 3},  # v6e (Trillium)
    "TPU v6e": {"bfloat16": 918e12, "float32": 918e12 / 3},
    "H100": {"bfloat16": 989e12, "float32": 67e12},  # SXM, dense
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
}

_MEASURED: dict[tuple[str, str], float] = {}


def measure_matmul_peak(dtype: str = "float32", size: int = 1024, repeats: int = 10) -> float:
    """Best observed FLOP/s of a jitted square matmul chain on device 0 (used for CPUs, which have no table).

    Low-precision products accumulate in fp32 and are cast back, as the model's layers compute them on CPU
    (`layers.einsum`): a bf16-result product would time XLA:CPU's slow bf16 path, several times below the
    rate the model actually reaches, and overstate MFU."""
    key = (jax.local_devices()[0].device_kind, dtype)
    if key in _MEASURED:
        return _MEASURED[key]
    dt = jnp.dtype(dtype)
    device = jax.local_devices()[0]  # on multi-host runs devices()[0] may belong to another process
    a = jax.device_put(jnp.ones((size, size), dt) / size, device)
    b = jax.device_put(jnp.ones((size, size), dt), device)

    @jax.jit
    def chain(a, b):
        for _ in range(4):  # several dependent matmuls per call amortise dispatch
            a = jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dt)
        return a

    chain(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        chain(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    flops = 4 * 2 * size**3 / best
    _MEASURED[key] = flops
    return flops


def peak_flops_per_device(dtype: str, override: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s, where the figure came from) for the first local device."""
    if override > 0:
        return override, "config.metrics.peak_flops_per_device"
    kind = jax.local_devices()[0].device_kind
    for name, table in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return table.get(dtype, table["bfloat16"]), f"table ({name}, {dtype})"
    return measure_matmul_peak(dtype), f"measured {dtype} matmul on {kind}"


class MetricWriter:
    """Writes scalars to JSONL (one object per line) and TensorBoard; only process 0 writes. The files are
    opened at the first write, so a run that fails before it has anything to log leaves none behind."""

    def __init__(self, workdir: str | os.PathLike, *, jsonl: bool = True, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.workdir = pathlib.Path(workdir)
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self.tb_dir = self.workdir / "tensorboard"
        self._want = (jsonl, tensorboard)
        self._jsonl = None
        self._tb = None

    def _open(self) -> None:
        jsonl, tensorboard = self._want
        self._want = (False, False)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            self._tb = SummaryWriter(str(self.tb_dir))

    def write(self, step: int, scalars: dict[str, Any], *, kind: str = "train") -> None:
        """One JSONL row (and TensorBoard scalars). Non-finite values are written as `null` and their names
        listed under "nonfinite", so every row is strict JSON (bare NaN / Infinity tokens are not)."""
        if not self.enabled:
            return
        if any(self._want):
            self._open()
        clean = {k: _to_python(v) for k, v in scalars.items()}
        nonfinite = [k for k, v in clean.items() if not _all_finite(v)]
        if self._jsonl is not None:
            row = {"step": int(step), "kind": kind, **clean}
            if nonfinite:
                row.update({k: _finite_or_none(row[k]) for k in nonfinite}, nonfinite=nonfinite)
            self._jsonl.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _to_python(v: Any) -> Any:
    if isinstance(v, (jax.Array, np.ndarray, np.generic)):
        v = np.asarray(v)
        return v.item() if v.size == 1 else v.tolist()
    return v


def _all_finite(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return all(map(_all_finite, v)) if isinstance(v, list) else True


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return [_finite_or_none(x) for x in v] if isinstance(v, list) else v


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows
