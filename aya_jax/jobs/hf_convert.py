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

from aya_jax import hf, pretrained, sharding

log = logging.getLogger(__name__)


def _mesh(config: Any):
    sharding.maybe_initialize_distributed(config.mesh.distributed)
    try:
        mesh = sharding.mesh_from_config(config.mesh)
        return mesh, sharding.normalize_rules(config.mesh.rules, mesh)
    except sharding.ShardingError as e:
        raise ValueError(str(e)) from None


def export(config: Any, workdir: str) -> pathlib.Path:
    del workdir
    c = config.hf_convert
    if not c.checkpoint_dir or not c.out_dir:
        raise ValueError("config.hf_convert: export needs checkpoint_dir and out_dir")
    if c.dtype not in hf.EXPORT_DTYPES:
        raise ValueError(f"config.hf_convert.dtype: {c.dtype!r} is not one of {', '.join(hf.EXPORT_DTYPES)}")
    run_dir, checkpoints = pretrained.split_checkpoint_path(c.checkpoint_dir)
    recorded = pretrained.recorded_hf_source(run_dir)
    tokenizer = c.tokenizer or (recorded[1] if recorded else "")
    if recorded:
        vocab_size = None
    elif config.model.overrides.vocab_size:
        vocab_size = int(config.model.overrides.vocab_size)
    else:
        # The run's vocabulary decides the embedding size of presets sized by the data. The data pipeline
        # imports TensorFlow and seqio: only an export that needs the vocabulary loads them.
        from aya_jax.data import pipeline

        vocab_size = pipeline.prepare(config.data).vocab_size
    if not tokenizer and config.data.vocab.kind == "hf_tokenizer":
        tokenizer = config.data.vocab.path
    model, cfg = pretrained.build_model(config.model, vocab_size, recorded[0] if recorded else None)
    mesh, rules = _mesh(config)
    target = pretrained.abstract_params(model, mesh, rules)
    step, params = pretrained.load_orbax_params(checkpoints, target, None if int(c.step) < 0 else int(c.step))
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
    log.info("exported step %d of %s to %s", step, checkpoints, out)
    return out


def import_(config: Any, workdir: str) -> pathlib.Path:
    del workdir
    c = config.hf_convert
    if not c.hf_dir or not c.out_dir:
        raise ValueError("config.hf_convert: import needs hf_dir and out_dir")
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
    checkpoints = pretrained.save_orbax_params(out, loaded.params)
    pretrained.record_hf_source(out, c.hf_dir)
    log.info("imported %s into %s (params only, step 0)", c.hf_dir, checkpoints)
    return checkpoints
