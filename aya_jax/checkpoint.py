"""orbax checkpoints: async saves, keep-K, exact resume, fallback past corrupt steps, preemption.

A checkpoint step holds two items:
  state  the train state pytree (params, optimiser state, step, rng), restored straight onto its shardings
  data   JSON: the data-iterator position and what it depends on, so the input stream resumes exactly

Resume policy (never a silent restart from step 0):
  * no step directories             -> fresh start
  * latest step fails to restore    -> warning, try the previous one, and so on
  * step directories, none restore  -> CheckpointError naming the directory
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, for restoring straight onto the mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpointer:
    """Thin policy layer over `ocp.CheckpointManager` (see module docstring)."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise CheckpointError(f"config.checkpoint.keep: must be >= 1, got {keep}")
        self.directory = _as_path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # a save killed mid-write leaves only a tmp dir: remove it on start
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    # -- queries --------------------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    # -- save -----------------------------------------------------------------------------------------------
    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> bool:
        """Start an (async) save of `state` and the JSON `data_state` at `step`; False if already saved."""
        if step in self._manager.all_steps():
            return False
        return self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            force=True,
        )

    def wait(self) -> None:
        """Block until in-flight async saves are durable."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    # -- restore --------------------------------------------------------------------------------------------
    def restore_step(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["data"])

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Restore the newest step that loads, falling back past corrupt ones (module docstring)."""
        steps = self.all_steps()
        if not steps:
            return None
        errors = []
        for step in reversed(steps):
            try:
                state, data_state = self.restore_step(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any failure to read a step means "try an older one"
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.warning(
                    "checkpoint step %d in %s does not load (%s); trying an older one",
                    step,
                    self.directory,
                    reason[:300],
                )
                errors.append((step, reason))
                continue
            if errors:
                log.warning(
                    "resumed from step %d after skipping unreadable step(s) %s", step, [s for s, _ in errors]
                )
            return step, state, data_state
        raise CheckpointError(
            f"{self.directory}: holds checkpoint steps {steps} but none loads (latest error: {errors[0][1][:200]}); "
            "refusing to restart from step 0 — move the directory away to start fresh"
        )


def _as_path(directory: str | os.PathLike):
    text = os.fspath(directory)
    if "://" in text:  # gs://... and friends: orbax handles them through etils.epath
        from etils import epath

        return epath.Path(text)
    return pathlib.Path(text).absolute()


def load_params(
    directory: str | os.PathLike, abstract_params: Any, step: int | None = None
) -> tuple[int, Any]:
    """Params only from a train checkpoint (init_from, merging, evaluation). Returns (step, params)."""
    ckpt = Checkpointer(directory, async_save=False)
    step = step if step is not None else ckpt.latest_step()
    if step is None:
        raise CheckpointError(f"{directory}: no checkpoint steps found")
    restored = ckpt._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args=jax.tree.map(_restore_arg, {"params": abstract_params}),
                partial_restore=True,
            )
        ),
    )
    ckpt.close()
    return step, restored["state"]["params"]


def _restore_arg(x: jax.ShapeDtypeStruct) -> ocp.ArrayRestoreArgs:
    return ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)


class PreemptionWatcher:
    """Turns SIGTERM (TPU spot/preemptible VMs, maintenance events, `kill`) into a clean save-and-exit.

    The signal handler only sets a flag; the train loop asks `should_stop(step)` between steps. On several
    hosts the decision is agreed through jax's preemption sync point, so every host stops at the same step.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame) -> None:
        log.warning("SIGTERM received: will save a checkpoint and exit after the current step")
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    return True
            except RuntimeError:  # preemption service not running (e.g. CPU multi-process tests)
                pass
            return bool(multihost_utils.process_allgather(self._event.is_set()).any())
        return self._event.is_set()

    def requested_anywhere(self) -> bool:
        """Whether any host has received SIGTERM (collective on several hosts: every host must ask at the same
        point). For checks inside a long iteration; between iterations use `should_stop`."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.process_allgather(self._event.is_set()).any())
        return self._event.is_set()

    def restore_handler(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
