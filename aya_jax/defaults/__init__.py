"""Every config field, its default and its check, in one place: one module per section of the config.

    config = defaults.base_config()            # job, workdir, seed and every section, locked
    defaults.validate(config, ("model", "mesh", "data", "train", "optimizer", "checkpoint", "metrics"))

Experiment files (`configs/*.py`) start from `base_config()` and change values only: the config is locked, so a
new (mistyped) field is an error, and `--config.<field>` on the command line can only set existing fields. Each
section module has `defaults()` and `validate(section, config)`; a job validates the sections it reads before
it loads or compiles anything, and every failure is a one-line `ConfigError` naming the field. Checks that need
the devices, the data or the checkpoints (mesh size, batch divisibility, vocabulary size) are made where those
are known (aya_jax/sharding.py, aya_jax/training/loop.py, the jobs).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

import ml_collections

from aya_jax.defaults import (
    aot,
    checkpoint,
    curation,
    data,
    data_stats,
    dpo,
    evals,
    evaluation,
    generate,
    hf_convert,
    merge,
    mesh,
    metrics,
    model,
    model_info,
    optimizer,
    pipeline,
    reward,
    rloo,
    serve,
    train,
    train_vocab,
)
from aya_jax.defaults.checks import ConfigError
from aya_jax.defaults.mesh import default_rules

__all__ = ["ConfigError", "SECTIONS", "base_config", "default_rules", "validate"]

# Section name -> its module (defaults() and validate()), in the order a config prints them.
SECTIONS: dict[str, ModuleType] = {
    "model": model,
    "mesh": mesh,
    "data": data,
    "train": train,
    "optimizer": optimizer,
    "checkpoint": checkpoint,
    "metrics": metrics,
    "reward": reward,
    "dpo": dpo,
    "rloo": rloo,
    "merge": merge,
    "generate": generate,
    "serve": serve,
    "hf_convert": hf_convert,
    "aot": aot,
    "model_info": model_info,
    "data_stats": data_stats,
    "train_vocab": train_vocab,
    "eval": evaluation,
    "evals": evals,
    "curation": curation,
    "pipeline": pipeline,
}


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "sft"  # which job runs: see aya_jax/jobs/__init__.py
    c.workdir = "workdirs/run"  # --workdir overrides
    c.seed = 0
    for name, module in SECTIONS.items():
        c[name] = module.defaults()
    c.lock()
    return c


def validate(config: ml_collections.ConfigDict, sections: Iterable[str]) -> None:
    """Run the checks of `sections` (ConfigError naming the first bad field)."""
    for name in sections:
        SECTIONS[name].validate(config[name], config)
