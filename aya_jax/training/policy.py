"""The trainable policy and its frozen reference on one mesh — shared by the RLOO and DPO trainers.

    setup = setup_policy(config, workdir, tx, missing_hint="run the quickstart first: ...")
    setup.state        # TrainState of the policy (params, optimiser state, step, rng), on setup.state_shardings
    setup.ref_params   # the frozen reference: the params of config.checkpoint.init_from, same shardings
    log_memory({"policy state": (setup.state, setup.state_shardings),
                "reference": (setup.ref_params, setup.params_shardings)})

Where the params come from. Preference training always starts from another run (an SFT workdir, a merge, an
`hf_import` output): `config.checkpoint.init_from`. A new run restores the policy's params from it (fresh
optimiser, step 0) and, separately, the reference's: the two are distinct buffers because the policy's are
donated and updated every step. A rerun in the same workdir resumes the policy from its latest checkpoint
(params, optimiser, step, rng and the trainer's JSON state) and reloads the reference from `init_from` again,
at the step recorded in that JSON (`PolicySetup.source_record()`) — the reference never changes, so it is not
checkpointed twice. An `init_from` workdir that recorded a Hugging
Face source (`hf_config.json`, see aya_jax/pretrained.py) rebuilds that architecture and its tokenizer;
otherwise the model is `config.model`'s preset and the vocabulary is `config.data`'s (the quickstart's
SentencePiece model, found in the data cache).

Shardings. Policy, reference (and a reward model, aya_jax/rewards.py) are sharded by the same
`config.mesh.rules`, so the reference's forward pass reads the same layout as the policy's and no resharding
happens between them. `log_memory` reports what one device holds of each tree before anything runs.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding

from aya_jax import checkpoint as ckpt_lib
from aya_jax import pretrained, sharding
from aya_jax.jobs import generate
from aya_jax.models import cohere
from aya_jax.training import state as ts

log = logging.getLogger(__name__)


class PolicyConfigError(ValueError):
    """A config value that cannot work for a policy run; names the field."""


@dataclasses.dataclass
class PolicySetup:
    model: cohere.CohereLM
    model_cfg: cohere.CohereConfig
    mesh: Mesh
    rules: sharding.Rules
    state: ts.TrainState  # the policy: params, optimiser state, step, rng
    state_shardings: ts.TrainState
    params_shardings: Any  # = state_shardings.params; the reference (and a reward model backbone) share it
    ref_params: Any  # frozen reference params (init_from's), same shardings as the policy's
    start_step: int  # 0 for a new run, else the resumed checkpoint's step
    resumed_state: dict[str, Any] | None  # the JSON the trainer saved with the resumed checkpoint
    checkpointer: ckpt_lib.Checkpointer  # <workdir>/checkpoints (or config.checkpoint.directory)
    init_from: str  # where policy and reference params came from
    init_step: int  # the source checkpoint's step
    codec: Any  # encode(text, add_special_tokens) / decode(ids) / pad_id / eos_ids (aya_jax.jobs.generate)
    eos_ids: tuple[int, ...]  # every token that ends a completion
    vocab_size: int

    def source_record(self) -> dict[str, Any]:
        """What a trainer saves in its checkpoint JSON so that a resumed run reloads the same reference."""
        return {"init_from": self.init_from, "init_step": self.init_step}


def _mesh_and_rules(config: Any) -> tuple[Mesh, sharding.Rules]:
    try:
        shape = sharding.resolve_mesh_shape(config.mesh.axes, config.mesh.shape, jax.device_count())
        mesh = sharding.make_mesh(tuple(config.mesh.axes), shape)
        rules = sharding.normalize_rules(config.mesh.rules, mesh)
    except sharding.ShardingError as e:
        raise PolicyConfigError(str(e)) from None
    return mesh, rules


def _source_checkpoints(init_from: str, missing_hint: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(workdir, checkpoints dir) of config.checkpoint.init_from; a clear one-line error when it has none."""
    if not init_from:
        raise PolicyConfigError(f"config.checkpoint.init_from: empty; {missing_hint}".rstrip("; "))
    try:
        workdir, checkpoints = pretrained.split_checkpoint_path(init_from)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config.checkpoint.init_from: no checkpoint at {init_from}; {missing_hint}".rstrip("; ")
        ) from None
    if not any(p.name.isdigit() for p in checkpoints.iterdir()):
        raise FileNotFoundError(
            f"config.checkpoint.init_from: {checkpoints} holds no checkpoint step; {missing_hint}".rstrip(
                "; "
            )
        )
    return workdir, checkpoints


def _codec_and_model(config: Any, source_workdir: pathlib.Path) -> tuple[Any, int, Any, Any]:
    """(codec, vocab size, model, model config): an HF-recorded source rebuilds its own architecture and
    tokenizer; otherwise config.model's preset with config.data's vocabulary."""
    recorded = pretrained.recorded_hf_source(source_workdir)
    hf_config = recorded[0] if recorded else None
    if recorded and recorded[1]:
        tokenizer = pathlib.Path(recorded[1]) / "tokenizer.json"
        if not tokenizer.is_file():
            raise FileNotFoundError(
                f"config.checkpoint.init_from: {source_workdir} records the Hugging Face source {recorded[1]}, "
                f"which has no tokenizer.json"
            )
        codec = generate.HfTokenizerCodec(tokenizer)
        vocab_size = codec.tokenizer.get_vocab_size(with_added_tokens=True)
    else:
        from aya_jax.data import pipeline  # data stays off the import path of the model code

        spec = pipeline.prepare(config.data)
        codec, vocab_size = generate.SeqioCodec(spec.vocab), spec.vocab_size
    model, model_cfg = pretrained.build_model(config.model, vocab_size, hf_config)
    return codec, vocab_size, model, model_cfg


def setup_policy(
    config: Any,
    workdir: str | pathlib.Path,
    tx: optax.GradientTransformation,
    *,
    seq_len: int = 8,
    missing_hint: str = "",
) -> PolicySetup:
    """Mesh, model, policy state (resumed from `workdir` or started from config.checkpoint.init_from) and the
    frozen reference params, all on the config's shardings. `seq_len` only shapes the abstract init (params
    do not depend on it). `missing_hint` ends the error raised when init_from has no checkpoint."""
    init_from = str(config.checkpoint.init_from)
    if str(config.model.hf_init_dir):
        raise PolicyConfigError(
            "config.model.hf_init_dir: policy training starts from config.checkpoint.init_from; import a "
            "Hugging Face model first (job hf_import) and point init_from at its output"
        )
    source_workdir, source_checkpoints = _source_checkpoints(init_from, missing_hint)
    mesh, rules = _mesh_and_rules(config)
    codec, vocab_size, model, model_cfg = _codec_and_model(config, source_workdir)
    with mesh, nn.logical_axis_rules(rules):
        abstract_state, state_sh = ts.state_shardings(model, tx, seq_len, mesh, rules)
    params_target = ckpt_lib.abstract_like(abstract_state.params, state_sh.params)

    ckpt_dir = str(config.checkpoint.directory) or pathlib.Path(workdir) / "checkpoints"
    checkpointer = ckpt_lib.Checkpointer(
        ckpt_dir, keep=int(config.checkpoint.keep), async_save=bool(config.checkpoint.async_save)
    )
    restored = checkpointer.restore_latest(ckpt_lib.abstract_like(abstract_state, state_sh))
    if restored is not None:
        start_step, state, resumed_state = restored
        log.info("resumed the policy from %s step %d", checkpointer.directory, start_step)
        saved_source = resumed_state.get("init_from")
        if saved_source and saved_source != str(pathlib.Path(init_from).absolute()):
            log.warning(
                "config.checkpoint.init_from changed since this run started (%s -> %s): the reference is now "
                "the new one",
                saved_source,
                init_from,
            )
        # The reference the run started with, even if the source run has written newer steps since.
        init_step = int(resumed_state.get("init_step", _latest_step(source_checkpoints)))
    else:
        init_step, state = pretrained.train_state_from_orbax(
            init_from, tx, abstract_state, state_sh, jax.random.PRNGKey(int(config.seed))
        )
        start_step, resumed_state = 0, None
        log.info(
            "policy initialised from %s step %d (seed %d)", source_checkpoints, init_step, int(config.seed)
        )
    _, ref_params = pretrained.load_orbax_params(source_checkpoints, params_target, step=init_step)
    log.info("reference: the params of %s step %d (frozen)", source_checkpoints, init_step)
    eos_ids = tuple(dict.fromkeys(codec.eos_ids + ((model_cfg.eos_id,) if model_cfg.eos_id >= 0 else ())))
    return PolicySetup(
        model=model,
        model_cfg=model_cfg,
        mesh=mesh,
        rules=rules,
        state=state,
        state_shardings=state_sh,
        params_shardings=state_sh.params,
        ref_params=ref_params,
        start_step=int(start_step),
        resumed_state=resumed_state,
        checkpointer=checkpointer,
        init_from=str(pathlib.Path(init_from).absolute()),
        init_step=int(init_step),
        codec=codec,
        eos_ids=eos_ids,
        vocab_size=int(vocab_size),
    )


def _latest_step(checkpoints: pathlib.Path) -> int:
    return max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


# ============================================================================================================
# Memory report
# ============================================================================================================


def tree_device_bytes(tree: Any, shardings: Any) -> int:
    """Bytes the most loaded device holds of a pytree of arrays (or ShapeDtypeStructs) under `shardings`."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
    return ts.per_device_bytes(shapes, shardings)


def log_memory(named_trees: dict[str, tuple[Any, Any]]) -> dict[str, int]:
    """Log the per-device MiB of each named (tree, shardings) and their total; returns the bytes by name
    (plus "total"). Shardings may be one NamedSharding for the whole tree."""
    report: dict[str, int] = {}
    for name, (tree, shardings) in named_trees.items():
        if isinstance(shardings, NamedSharding):
            shardings = jax.tree.map(lambda _, s=shardings: s, tree)
        report[name] = tree_device_bytes(tree, shardings)
    report["total"] = sum(report.values())
    width = max(len(n) for n in report)
    for name, nbytes in report.items():
        log.info("memory per device: %-*s %10.1f MiB", width, name, nbytes / 2**20)
    return report
