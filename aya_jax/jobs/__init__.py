"""Trainers and jobs by name (`config.job`). Each entry: a function (config, workdir) -> summary."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import ml_collections

# name -> "module:function"; imported lazily so that `main --help` stays fast.
JOBS: dict[str, str] = {
    "sft": "aya_jax.jobs.sft:train",
    "model_info": "aya_jax.jobs.model_info:run",
    "aot_compile": "aya_jax.jobs.aot:run",
    "data_stats": "aya_jax.jobs.data_stats:run",
    "train_vocab": "aya_jax.jobs.train_vocab:run",
    "generate": "aya_jax.jobs.generate:run",
    "serve": "aya_jax.jobs.serve:run",
    "hf_export": "aya_jax.jobs.hf_convert:export",
    "hf_import": "aya_jax.jobs.hf_convert:import_",
    "merge": "aya_jax.jobs.merge:run",
    "reward": "aya_jax.jobs.reward:train",
    "dpo": "aya_jax.jobs.dpo:train",
    "rloo": "aya_jax.jobs.rloo:train",
    "eval_global_mmlu": "aya_jax.jobs.evaluate:global_mmlu",
    "eval_m_rewardbench": "aya_jax.jobs.evaluate:m_rewardbench",
    "eval_perplexity": "aya_jax.jobs.evaluate:perplexity",
    "eval_battles": "aya_jax.jobs.evaluate:battles",
    "eval_win_rate": "aya_jax.jobs.evaluate:win_rate",
    "eval_prompt_priority": "aya_jax.jobs.evaluate:prompt_priority",
    "eval_harness": "aya_jax.jobs.eval_harness:run",
    "select_diverse": "aya_jax.jobs.curate:select_diverse",
    "arbitrage": "aya_jax.jobs.curate:run_arbitrage",
    "active_inheritance": "aya_jax.jobs.curate:run_active_inheritance",
    "aya_expanse": "aya_jax.jobs.recipe:run",
}
# What a job needs beyond the core dependencies: the extra that installs it.
EXTRAS = {"eval_harness": "eval"}


def get_job(name: str) -> Callable[[Any, str], Any]:
    if name not in JOBS:
        raise ValueError(f"config.job: unknown job {name!r} (known: {', '.join(sorted(JOBS))})")
    module, fn = JOBS[name].split(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except ModuleNotFoundError as e:
        if name not in EXTRAS:
            raise
        raise ValueError(
            f"config.job: {name!r} needs the package {e.name!r}: pip install -e '.[{EXTRAS[name]}]'"
        ) from None


def config_for(
    config: ml_collections.ConfigDict, job: str, vocab_path: str | None = None
) -> ml_collections.ConfigDict:
    """An unlocked copy of `config` that runs `job` from inside another job (which may then change its fields).

    `vocab_path` (`data.pipeline.trained_vocab` of the first job's data) pins the SentencePiece vocabulary when
    the copy would train one: a model fine-tuned on other data keeps its starting model's vocabulary."""
    copy = ml_collections.ConfigDict(config.to_dict())
    copy.job = job
    if vocab_path and copy.data.vocab.kind == "sentencepiece" and not copy.data.vocab.path:
        copy.data.vocab.path = vocab_path
    return copy
