"""Where an evaluation's outputs go and how they are written: `<workdir>/<eval>/` holds `results.json` (strict
JSON: a non-finite number is written as null), `results.md` (the tables a person reads) and the PNG plots.
Only process 0 writes; the folder is probed for writability before any model is loaded, so a read-only
location costs one line rather than a finished evaluation."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
from tqdm import tqdm

from aya_jax import workdirs

RESULTS = "results.json"
MARKDOWN = "results.md"


def output_dir(workdir: str | pathlib.Path, name: str, field: str = "--workdir") -> pathlib.Path:
    """`<workdir>/<name>`, checked writable now (WorkdirError naming `field` otherwise)."""
    workdirs.check_writable(workdir, field)
    return pathlib.Path(workdir) / name


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # NumPy / JAX scalars
        return _finite(value.item())
    return value


def write(out_dir: pathlib.Path, results: dict[str, Any], markdown: str) -> dict[str, pathlib.Path]:
    """Write results.json and results.md into `out_dir` (process 0); {kind: path} of what was written."""
    paths = {"results": out_dir / RESULTS, "markdown": out_dir / MARKDOWN}
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_finite(results), indent=1, ensure_ascii=False, allow_nan=False)
        paths["results"].write_text(text + "\n", encoding="utf-8")
        paths["markdown"].write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return paths


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 3 decimals, None as an em dash."""

    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return "—" if not math.isfinite(v) else f"{v:.3f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclasses.dataclass
class EvalSummary:
    name: str
    headline: str  # one line: the figure that matters, with its interval
    outputs: dict[str, str]  # what -> path
    results: dict[str, Any]
    seconds: float


def progress(total: int, unit: str, desc: str) -> tqdm:
    """The progress bar of an evaluation (stderr, process 0): items/s."""
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr, mininterval=1.0,
                disable=jax.process_index() != 0)  # fmt: skip


def finish(
    name: str, out: pathlib.Path, results: dict[str, Any], markdown: str, headline: str, t0: float,
    draw: Callable[[pathlib.Path], dict[str, pathlib.Path]] | None = None, plot: bool = True,
) -> EvalSummary:  # fmt: skip
    """Write the results (and `draw`'s PNGs), print the headline and where every output went."""
    outputs = {k: str(v) for k, v in write(out, results, markdown).items()}
    if plot and draw is not None and jax.process_index() == 0:
        outputs.update({k: str(v) for k, v in draw(out).items() if v is not None})
    seconds = time.perf_counter() - t0
    if jax.process_index() == 0:
        print(f"{name}: {headline}  ({seconds:.0f} s)")
        for what, path in outputs.items():
            print(f"  {what:<12} {path}")
    return EvalSummary(name, headline, outputs, results, seconds)
