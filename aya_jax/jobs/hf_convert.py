"""Conversion jobs between Hugging Face directories and aya_jax (orbax) checkpoints.

    # After fine-tuning (e.g. configs/sft.py:hf): the newest checkpoint -> a directory transformers loads
    python -m aya_jax.main --config configs/hf_convert.py:export \\
        --config.hf_convert.checkpoint_dir=workdirs/sft_hf --config.hf_convert.out_dir=/out/my-aya
    # An HF directory -> a params-only orbax checkpoint (for config.checkpoint.init_from, merging, generate)
    python -m aya_jax.main --config configs/hf_convert.py:import \\
        --config.hf_convert.hf_dir=/ckpt/aya-expanse-8b --config.hf_convert.out_dir=workdirs/aya-expanse-8b

Export rebuilds the model from the run's recorded Hugging Face config.json (runs started with
config.model.hf_init_dir record it, see aya_jax/pretrained.py), else from config.model and config.data (pass
the run's overrides). The tokenizer is copied from config.hf_convert.tokenizer, else the recorded source
directory, else config.data.vocab.path when it is a tokenizer.json. Weights stream both ways (aya_jax/hf/io.py).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

from aya_jax import defaults, hf, pretrained, sharding
from aya_jax.data import pipeline

log = logging.getLogger(__name__)


SECTIONS = ("model", "mesh", "data", "hf_convert")


def _mesh(config: Any):
    defaults.validate(config, SECTIONS)
    return sharding.setup(config.mesh)


def export(config: Any, workdir: str) -> pathlib.Path:
    del workdir
    c = config.hf_convert
    mesh, rules = _mesh(config)
    run = pretrained.resolve_run(c.checkpoint_dir)
    recorded = pretrained.recorded_hf_source(run.workdir)
    tokenizer = c.tokenizer or (recorded[1] if recorded else "")
    if recorded:
        vocab_size = None
    elif config.model.overrides.vocab_size:
        vocab_size = int(config.model.overrides.vocab_size)
    else:
        # The run's vocabulary decides the embedding size of presets sized by the data.
        vocab_size = pipeline.prepare(config.data).vocab_size
    if not tokenizer and config.data.vocab.kind == "hf_tokenizer":
        tokenizer = config.data.vocab.path
    model, cfg = pretrained.build_model(config.model, vocab_size, recorded[0] if recorded else None)
    target = pretrained.abstract_params(model, mesh, rules)
    step, params = pretrained.load_params(
        run.checkpoints, target, step=None if int(c.step) < 0 else int(c.step)
    )
    out = hf.save(
        c.out_dir,
        params,
        cfg,  # its model family picks the architecture
        dtype=c.dtype,
        tokenizer=tokenizer or None,
        max_shard_bytes=int(float(c.max_shard_gb) * 2**30),
        scan_layers=bool(config.model.scan_layers),
    )
    if not tokenizer:
        log.warning("no tokenizer.json to copy (set config.hf_convert.tokenizer): %s has weights only", out)
    log.info("exported step %d of %s to %s", step, run.checkpoints, out)
    return out


def import_(config: Any, workdir: str) -> pathlib.Path:
    del workdir
    c = config.hf_convert
    mesh, rules = _mesh(config)
    loaded = hf.load(
        c.hf_dir,
        mesh,
        rules,
        dtype=pretrained.dtype_from_name(config.model.dtype, "config.model.dtype"),
        param_dtype=pretrained.dtype_from_name(config.model.param_dtype, "config.model.param_dtype"),
        scan_layers=bool(config.model.scan_layers),
    )
    out = pathlib.Path(c.out_dir)
    checkpoints = pretrained.save_params(out, loaded.params, {"source": "hf_import"})
    pretrained.record_hf_source(out, c.hf_dir)
    log.info("imported %s into %s (params only, step 0)", c.hf_dir, checkpoints)
    return checkpoints
