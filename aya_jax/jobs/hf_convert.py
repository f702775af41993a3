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
directory, else config.data.vocab.path when it is a tokenizer.json; a run on one of the project's SentencePiece
vocabularies (the quickstart's; or a `.model` given as config.hf_convert.tokenizer) gets it converted to a
tokenizer.json that encodes, the chat format included, to the ids the run was trained on
(aya_jax/hf/tokenizer_files.py), and generation_config.json stops at its end-of-turn marker. Weights stream both
ways (aya_jax/hf/io.py).

config.hf_convert.out_dir must be new, empty, or an earlier output of the same job; it is checked before
anything is loaded, the new output is written beside it and replaces it as a whole at the end
(aya_jax/workdirs.py), so an export never leaves the shards of an earlier one beside its own, and a failed one
leaves the earlier output as it was.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax

from aya_jax import defaults, hf, pretrained, sharding, workdirs
from aya_jax.data import pipeline
from aya_jax.hf import io as hf_io  # output_folder, EXPORT_KIND (not re-exported by aya_jax.hf)
from aya_jax.hf import tokenizer_files
from aya_jax.models import families

log = logging.getLogger(__name__)


SECTIONS = ("model", "mesh", "data", "hf_convert")
OUT_DIR_FIELD = "config.hf_convert.out_dir"
# The kind of output folder (aya_jax/workdirs.py) an import writes; an export's is hf_io.EXPORT_KIND.
IMPORT_KIND = "hf_import"


def export(config: Any, workdir: str) -> pathlib.Path:
    del workdir  # everything goes to config.hf_convert.out_dir
    c = config.hf_convert
    defaults.validate(config, SECTIONS)
    # Before the checkpoint is read: a folder of someone else's files (or an unwritable one) costs one line.
    # Every process checks, so that all of them stop, not only the one that writes.
    out_dir = workdirs.check_output_dir(c.out_dir, hf_io.EXPORT_KIND, OUT_DIR_FIELD)
    mesh, rules = sharding.setup(config.mesh)
    run = pretrained.resolve_run(c.checkpoint_dir)
    recorded = pretrained.recorded_hf_source(run.workdir)
    tokenizer = c.tokenizer or (recorded[1] if recorded else "")
    spec = None
    if recorded:
        vocab_size = None
    else:
        # The run's vocabulary decides the embedding size of presets sized by the data, and is the tokenizer.
        spec = pipeline.prepare(config.data)
        vocab_size = int(config.model.overrides.vocab_size or spec.vocab_size)
    if not tokenizer and config.data.vocab.kind == "hf_tokenizer":
        tokenizer = config.data.vocab.path
    sentencepiece_model = str(tokenizer) if str(tokenizer).endswith(".model") else ""
    if sentencepiece_model and not pathlib.Path(sentencepiece_model).is_file():
        raise FileNotFoundError(
            f"config.hf_convert.tokenizer: no SentencePiece model at {sentencepiece_model}"
        )
    if not tokenizer and spec is not None and config.data.vocab.kind == "sentencepiece":
        sentencepiece_model = str(spec.vocab.sentencepiece_model_file)
    model, cfg = pretrained.build_model(config.model, vocab_size, recorded[0] if recorded else None)
    target = pretrained.abstract_params(model, mesh, rules)
    step, params = pretrained.load_params(
        run.checkpoints, target, step=None if int(c.step) < 0 else int(c.step),
        field="config.hf_convert.step" if int(c.step) >= 0 else "config.hf_convert.checkpoint_dir",
    )  # fmt: skip
    # Weights and tokenizer files go to a staging folder (process 0) that replaces out_dir only once complete.
    with hf_io.output_folder(out_dir, OUT_DIR_FIELD) as folder:
        hf.save(
            folder,
            params,
            cfg,  # its model family picks the architecture
            dtype=c.dtype,
            tokenizer=None if sentencepiece_model else (tokenizer or None),
            max_shard_bytes=int(float(c.max_shard_gb) * 2**30),
            scan_layers=bool(config.model.scan_layers),
        )
        if sentencepiece_model and jax.process_index() == 0:
            # The run's own SentencePiece vocabulary, as tokenizer files transformers loads (same ids).
            max_length = families.family_of(cfg).max_positions(cfg) or int(config.data.seq_len)
            stop_ids = tokenizer_files.write(sentencepiece_model, folder, max_length)
            _set_stop_ids(folder, stop_ids)
            log.info(
                "tokenizer: %s converted to tokenizer.json (stops at ids %s)", sentencepiece_model, stop_ids
            )
    if not sentencepiece_model and not tokenizer:
        log.warning("no tokenizer to export (set config.hf_convert.tokenizer): %s has weights only", out_dir)
    log.info("exported step %d of %s to %s", step, run.checkpoints, out_dir)
    return out_dir


def _set_stop_ids(out: pathlib.Path, stop_ids: tuple[int, ...]) -> None:
    """generation_config.json's eos_token_id: every id a completion ends with (transformers' generate stops
    at any of them), so a chat-format model stops at its end-of-turn marker there as here."""
    path = out / "generation_config.json"
    generation = json.loads(path.read_text()) if path.is_file() else {}
    declared = generation.get("eos_token_id", [])
    declared = declared if isinstance(declared, list) else [declared]
    generation["eos_token_id"] = list(dict.fromkeys([*stop_ids, *declared]))
    path.write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")


def import_(config: Any, workdir: str) -> pathlib.Path:
    del workdir  # everything goes to config.hf_convert.out_dir
    c = config.hf_convert
    defaults.validate(config, SECTIONS)
    out_dir = workdirs.check_output_dir(c.out_dir, IMPORT_KIND, OUT_DIR_FIELD)  # before any tensor is read
    mesh, rules = sharding.setup(config.mesh)
    if jax.process_count() > 1 and out_dir.is_dir() and any(out_dir.iterdir()):
        # orbax saves collectively into one path that every process names alike; the staging folder's name is
        # per process (workdirs.replace_output), so several processes can only write into a new folder.
        raise workdirs.WorkdirError(
            f"{OUT_DIR_FIELD}: {out_dir} holds an earlier import; on several processes give a new or empty folder"
        )
    loaded = hf.load(
        c.hf_dir,
        mesh,
        rules,
        dtype=pretrained.dtype_from_name(config.model.dtype, "config.model.dtype"),
        param_dtype=pretrained.dtype_from_name(config.model.param_dtype, "config.model.param_dtype"),
        scan_layers=bool(config.model.scan_layers),
    )
    if jax.process_count() > 1:
        pretrained.save_params(out_dir, loaded.params, {"source": "hf_import"})
        pretrained.record_hf_source(out_dir, c.hf_dir)
        if jax.process_index() == 0:  # marked as replace_output marks it, so a later import may replace it
            (out_dir / workdirs.OUTPUT_MARK).write_text(
                json.dumps({"kind": IMPORT_KIND}) + "\n", encoding="utf-8"
            )
    else:
        # Written beside out_dir and swapped in whole: an earlier import's checkpoints never mix with these.
        with workdirs.replace_output(out_dir, IMPORT_KIND, OUT_DIR_FIELD) as stage:
            pretrained.save_params(stage, loaded.params, {"source": "hf_import"})
            pretrained.record_hf_source(stage, c.hf_dir)
    checkpoints = out_dir / "checkpoints"
    log.info("imported %s into %s (params only, step 0)", c.hf_dir, checkpoints)
    return checkpoints
