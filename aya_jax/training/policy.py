"""The trainable policy and its frozen reference on one mesh — what DPO and RLOO start from.

    run = loop.Run.start(config, workdir, SECTIONS)
    policy = setup_policy(run, tx, missing_hint="run the quickstart first: ...")
    policy.state        # TrainState of the policy (params, optimiser state, step, rng), on policy.state_shardings
    policy.ref_params   # the frozen reference: the params of config.checkpoint.init_from, same shardings
    state.log_memory({"policy state": (policy.state, policy.state_shardings), ...})

Where the params come from. Preference training always starts from another run (an SFT workdir, a merge, an
`hf_import` output): `config.checkpoint.init_from`. A new run loads the policy's params from it (fresh
optimiser, step 0) and, separately, the reference's: the two are distinct buffers because the policy's are
donated and updated every step. A rerun in the same workdir resumes the policy from its latest checkpoint
(params, optimiser, step, rng and the objective's JSON state) and reloads the reference from `init_from` again,
at the step recorded in that JSON (`PolicySetup.source_record()`) — the reference never changes, so it is not
checkpointed twice. An `init_from` workdir that recorded a Hugging Face source rebuilds that architecture and
its tokenizer (aya_jax/pretrained.py `model_of_run`); otherwise the model is config.model's preset and the
vocabulary config.data's (the quickstart's SentencePiece model, found in the data cache).

Shardings. Policy, reference (and a reward model) are sharded by the same `config.mesh.rules`, so the
reference's forward pass reads the same layout as the policy's and no resharding happens between them.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import optax
from flax import linen as nn

from aya_jax import pretrained
from aya_jax.training import loop
from aya_jax.training import state as ts

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PolicySetup:
    model: nn.Module
    model_cfg: Any
    state: ts.TrainState  # the policy: params, optimiser state, step, rng
    state_shardings: ts.TrainState
    params_shardings: Any  # = state_shardings.params; the reference (and a reward model backbone) share it
    ref_params: Any  # frozen reference params (init_from's), same shardings as the policy's
    start_step: int  # 0 for a new run, else the resumed checkpoint's step
    resumed_state: dict[str, Any] | None  # the JSON the objective saved with the resumed checkpoint
    init_from: str  # where policy and reference params came from (absolute)
    init_step: int  # the source checkpoint's step
    codec: Any  # encode(text, add_special_tokens) / decode(ids) / pad_id / eos_ids (aya_jax/data/vocab.py)
    eos_ids: tuple[int, ...]  # every token that ends a completion
    vocab_size: int

    def source_record(self) -> dict[str, Any]:
        """What an objective saves in its checkpoint JSON so that a resumed run reloads the same reference."""
        return {"init_from": self.init_from, "init_step": self.init_step}


def source_run(init_from: str, missing_hint: str) -> pretrained.RunPath:
    """config.checkpoint.init_from as a run with at least one checkpoint step; a one-line error otherwise."""
    hint = f"; {missing_hint}" if missing_hint else ""
    if not init_from:
        raise loop.ConfigError(f"config.checkpoint.init_from: empty{hint}")
    try:
        source = pretrained.resolve_run(init_from)
    except FileNotFoundError:
        raise FileNotFoundError(f"config.checkpoint.init_from: no checkpoint at {init_from}{hint}") from None
    if not source.steps():
        raise FileNotFoundError(
            f"config.checkpoint.init_from: {source.checkpoints} holds no checkpoint step{hint}"
        )
    return source


def setup_policy(
    run: loop.Run, tx: optax.GradientTransformation, *, seq_len: int = 8, missing_hint: str = ""
) -> PolicySetup:
    """Model, policy state (resumed from the run's checkpoints or started from config.checkpoint.init_from) and
    the frozen reference params, all on the run's shardings. `seq_len` only shapes the abstract init (params do
    not depend on it). `missing_hint` ends the error raised when init_from has no checkpoint."""
    config = run.config
    if str(config.model.hf_init_dir):
        raise loop.ConfigError(
            "config.model.hf_init_dir: policy training starts from config.checkpoint.init_from; import a "
            "Hugging Face model first (job hf_import) and point init_from at its output"
        )
    init_from = str(config.checkpoint.init_from)
    source = source_run(init_from, missing_hint)
    model, model_cfg, codec = pretrained.model_of_run(config.model, config.data, source.workdir)
    with run.context():
        abstract_state, state_sh = ts.state_shardings(model, tx, seq_len, run.mesh, run.rules)
    params_target = pretrained.targets(abstract_state.params, state_sh.params)

    restored = run.restore(abstract_state, state_sh)
    if restored is not None:
        state, resumed_state, start_step = restored.state, restored.saved, restored.step
        log.info("resumed the policy from %s step %d", run.checkpointer.directory, start_step)
        saved_source = resumed_state.get("init_from")
        if saved_source and saved_source != str(pathlib.Path(init_from).absolute()):
            log.warning(
                "config.checkpoint.init_from changed since this run started (%s -> %s): the reference is now "
                "the new one", saved_source, init_from,
            )  # fmt: skip
        # The reference the run started with, even if the source run has written newer steps since.
        init_step = int(resumed_state.get("init_step", source.steps()[-1]))
    else:
        init_step, params = pretrained.load_params(
            source.checkpoints, params_target, step=source.step, field="config.checkpoint.init_from"
        )
        state = ts.state_from_params(params, tx, state_sh, jax.random.PRNGKey(int(config.seed)))
        start_step, resumed_state = 0, None
        log.info(
            "policy initialised from %s step %d (seed %d)", source.checkpoints, init_step, int(config.seed)
        )
    _, ref_params = pretrained.load_params(
        source.checkpoints, params_target, step=init_step, field="config.checkpoint.init_from"
    )
    log.info("reference: the params of %s step %d (frozen)", source.checkpoints, init_step)
    eos_ids = pretrained.stop_ids(codec, model_cfg)
    return PolicySetup(
        model=model, model_cfg=model_cfg, state=state, state_shardings=state_sh, params_shardings=state_sh.params,
        ref_params=ref_params, start_step=int(start_step), resumed_state=resumed_state,
        init_from=str(pathlib.Path(init_from).absolute()), init_step=int(init_step), codec=codec,
        eos_ids=eos_ids, vocab_size=int(codec.vocab_size),
    )  # fmt: skip
