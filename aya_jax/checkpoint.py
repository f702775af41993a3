"""orbax checkpoints: async saves, keep-K, verified resume, fallback past corrupt steps, preemption.

A checkpoint step holds three items:
  state    the train state pytree (params, optimiser state, step, rng), restored straight onto its shardings
  data     JSON: the data-iterator position and what it depends on, so the input stream resumes exactly
  digests  JSON: a digest of every array of `state`, computed from the arrays being saved

Digests. orbax checks the structure of what it reads, not the bytes: a checkpoint whose data file had bytes
overwritten can load "fine" with wrong values (the run then trains on garbage and rotates the good checkpoints
away). Each array's digest is two 32-bit lanes of  Σ_i mix(bits_i XOR (i·φ + seed))  mod 2^32  over its
elements (bits_i: the element's bit pattern; i: its flat index; mix: MurmurHash3's 32-bit finaliser, which
flips each output bit with probability ~1/2 for any input change, so a changed or moved element changes the
term pseudo-randomly; φ: the golden-ratio constant; one seed per lane). A sum of per-element terms is independent of how the array is laid
out over devices and hosts — every device reduces its shard and the mesh adds the partial sums — so a
checkpoint written on one mesh verifies on another, and it costs one read of the state on the devices that hold
it (no host gather). Integer arithmetic makes it exact on every backend. A random corruption goes unnoticed
with probability ~2^-64. The same pass flags non-finite floating-point values: a state holding NaN or inf is
never written and never resumed from.

Resume policy (never a silent restart from step 0):
  * no step directories                      -> fresh start
  * latest step fails to restore or verify   -> warning naming the step and the tensor, try the previous one;
                                                the failed steps are moved aside (`<step>.corrupt`), so the run
                                                writes those steps afresh and nothing is deleted
  * step directories, none restores          -> CheckpointError naming the directory
  * a step written before digests existed    -> restored, checked finite, said to be unverified

Retention: `keep` newest steps, plus the step the run resumed from — verified on restore — for as long as the
run lives. Every saved step was finite (saves of non-finite states are refused), so a run that goes wrong after
a resume can never rotate away the last state known to be good.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

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
        self._retention = _Retention(keep)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=self._retention,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # a save killed mid-write leaves only a tmp dir: remove it on start
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    # -- queries --------------------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    # -- save -----------------------------------------------------------------------------------------------
    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> bool:
        """Start an (async) save of `state`, its digests and the JSON `data_state` at `step`; False if already
        saved. A state holding non-finite values is refused (CheckpointError naming the tensor)."""
        if step in self._manager.all_steps():
            return False
        digests, nonfinite = tree_digests(state)
        if nonfinite:
            raise CheckpointError(
                f"refusing to save step {step} to {self.directory}: tensor {nonfinite[0]} holds non-finite values"
                + (f" (and {len(nonfinite) - 1} more)" if len(nonfinite) > 1 else "")
            )
        with self._write_errors(f"step {step}"):
            return self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave(data_state),
                    digests=ocp.args.JsonSave({"format": DIGEST_FORMAT, "tensors": digests}),
                ),
                force=True,
            )

    def wait(self) -> None:
        """Block until in-flight async saves are durable."""
        with self._write_errors("the step being saved"):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()

    @contextlib.contextmanager
    def _write_errors(self, what: str) -> Iterator[None]:
        """A failed write (a full disk, a lost mount, no permission) as one CheckpointError line. orbax writes
        into a temporary directory and renames it when complete, so the steps written before are intact; the
        temporary one is removed when the next run starts."""
        try:
            yield
        except Exception as e:
            reason = _write_failure(e)
            if reason is None:
                raise
            steps = self.all_steps()
            raise CheckpointError(
                f"checkpoint {what} could not be written to {self.directory} ({reason}); the steps written "
                f"before it are intact (newest: {steps[-1] if steps else 'none'})"
            ) from e

    # -- restore --------------------------------------------------------------------------------------------
    def restore_step(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["data"])

    def saved_digests(self, step: int) -> dict[str, str] | None:
        """The digests written with `step`; None for a step written before digests existed."""
        if not (_as_path(self.directory) / str(step) / "digests").exists():
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(digests=ocp.args.JsonRestore()))
        return dict(restored["digests"]["tensors"])

    def verify(self, step: int, tree: Any) -> str | None:
        """None if `tree` (restored from `step`, or a subtree of it) matches the digests saved with the step and
        is finite; else why not, naming the tensor."""
        return mismatch(tree, self.saved_digests(step), f"step {step}")

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Restore the newest step that loads and verifies, falling back past corrupt ones and moving them aside
        (module docstring). The step restored is kept by retention for the life of this checkpointer."""
        steps = self.all_steps()
        if not steps:
            return None
        errors = []
        for step in reversed(steps):
            try:
                state, data_state = self.restore_step(step, abstract_state)
                problem = self.verify(step, state)
            except Exception as e:  # noqa: BLE001 - any failure to read a step means "try an older one"
                problem = f"does not load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            if problem:
                log.warning(
                    "checkpoint step %d in %s %s; falling back to an older step",
                    step,
                    self.directory,
                    problem[:300],
                )
                errors.append((step, problem))
                continue
            if errors:
                self._set_aside([s for s, _ in errors])
                log.warning(
                    "resumed from step %d after setting aside corrupt step(s) %s as <step>.corrupt",
                    step, [s for s, _ in errors],
                )  # fmt: skip
            self._retention.protected.add(step)
            return step, state, data_state
        raise CheckpointError(
            f"{self.directory}: holds checkpoint steps {steps} but none loads and verifies (newest: step "
            f"{errors[0][0]} {errors[0][1][:200]}); refusing to restart from step 0 — move the directory away to "
            "start fresh"
        )

    def _set_aside(self, steps: Sequence[int]) -> None:
        """Rename corrupt step directories to `<step>.corrupt` (process 0; every process waits): the run writes
        those steps afresh, and the bytes stay for inspection."""
        if jax.process_index() == 0:
            root = _as_path(self.directory)
            for step in steps:
                target = root / f"{step}.corrupt"
                n = 1
                while target.exists():
                    n += 1
                    target = root / f"{step}.corrupt{n}"
                (root / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("aya_jax checkpoint set-aside")
        self._manager.reload()


def _write_failure(error: BaseException) -> str | None:
    """The OS-level reason of a failed write, or None if `error` is not one: an OSError in the exception chain,
    or tensorstore's ValueError carrying `[os_error_code='28']` (how orbax's array writes report ENOSPC)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError):
            return cause.strerror or str(cause)
        code = re.search(r"os_error_code='?(\d+)", str(cause))
        if code:
            return os.strerror(int(code.group(1)))
        cause = cause.__cause__ or cause.__context__
    return None


def _as_path(directory: str | os.PathLike):
    text = os.fspath(directory)
    if "://" in text:  # gs://... and friends: orbax handles them through etils.epath
        from etils import epath

        return epath.Path(text)
    return pathlib.Path(text).absolute()


def load_params(
    directory: str | os.PathLike, abstract_params: Any, step: int | None = None
) -> tuple[int, Any]:
    """Params only from a train checkpoint (init_from, merging, evaluation), verified against the step's
    digests. Returns (step, params). Without `step`: the newest step that verifies (a warning for each newer
    one that does not); a given `step` that does not verify is a CheckpointError naming it and the tensor."""
    ckpt = Checkpointer(directory, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise CheckpointError(f"{directory}: no checkpoint steps found")
        if step is not None and step not in steps:
            raise CheckpointError(
                f"{directory}: has no checkpoint step {step} (steps: {', '.join(map(str, steps))})"
            )
        candidates = [step] if step is not None else list(reversed(steps))
        for candidate in candidates:
            try:
                restored = ckpt._manager.restore(
                    candidate,
                    args=ocp.args.Composite(
                        state=ocp.args.PyTreeRestore(
                            item={"params": abstract_params},
                            restore_args=jax.tree.map(_restore_arg, {"params": abstract_params}),
                            partial_restore=True,
                        )
                    ),
                )
            except Exception as e:  # noqa: BLE001 - damaged files fail in many ways; shape mismatches are not that
                text = str(e)
                if "not compatible with the stored shape" in text:  # the caller's model, not the files
                    raise
                problem = f"does not load ({type(e).__name__}: {text.splitlines()[0][:200] if text else ''})"
                restored = None
            else:
                problem = ckpt.verify(candidate, restored["state"])
            if problem is None:
                return candidate, restored["state"]["params"]
            if step is not None or candidate == candidates[-1]:
                raise CheckpointError(f"{directory}: checkpoint step {candidate} {problem}")
            log.warning("checkpoint step %d in %s %s; reading an older step", candidate, directory, problem)
        raise AssertionError("unreachable")
    finally:
        ckpt.close()


# ------------------------------------------------------------------------------------------------------------
# Digests (module docstring)
# ------------------------------------------------------------------------------------------------------------

ITEMS = ("state", "data", "digests")
DIGEST_FORMAT = 1
_PHI = 0x9E3779B9
_SEEDS = (0x243F6A88, 0x85A308D3)  # one per lane (digits of pi)


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _bits(x: jax.Array) -> jax.Array:
    """The elements' bit patterns as uint32 (64-bit elements as two words, typed PRNG keys as their data)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)


def _leaf_digest(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """([2] uint32 digest, all finite) of one array."""
    bits = _bits(x)
    index = jnp.zeros(bits.shape, jnp.uint32)
    for axis in range(bits.ndim):  # the flat (row-major) index, built from iotas: no [size] constant
        index = index * jnp.uint32(bits.shape[axis]) + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis)
    spread = index * jnp.uint32(_PHI)
    lanes = [jnp.sum(_fmix32(bits ^ (spread + jnp.uint32(seed))), dtype=jnp.uint32) for seed in _SEEDS]
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
    return jnp.stack(lanes), finite


@jax.jit
def _digest_leaves(leaves: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
    out = [_leaf_digest(x) for x in leaves]
    return [d for d, _ in out], [f for _, f in out]


def leaf_names(tree: Any) -> list[str]:
    """ "params/decoder/layers/mlp/kernel"-style names of a pytree's leaves, in leaf order."""

    def name(key: Any) -> str:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    return ["/".join(name(k) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def tree_digests(tree: Any) -> tuple[dict[str, str], list[str]]:
    """(tensor name -> digest "xxxxxxxx-xxxxxxxx", names of tensors holding non-finite values) of a pytree of
    arrays, computed where the arrays live (collective on several hosts: every process calls it)."""
    names, leaves = leaf_names(tree), jax.tree.leaves(tree)
    if not leaves:
        return {}, []
    digests, finite = _digest_leaves([jnp.asarray(x) if not isinstance(x, jax.Array) else x for x in leaves])
    digests = [np.asarray(d.addressable_data(0)) for d in digests]  # replicated: every host holds the value
    finite = [bool(np.asarray(f.addressable_data(0))) for f in finite]
    return (
        {n: f"{int(d[0]):08x}-{int(d[1]):08x}" for n, d in zip(names, digests, strict=True)},
        [n for n, ok in zip(names, finite, strict=True) if not ok],
    )


def mismatch(tree: Any, saved: dict[str, str] | None, what: str) -> str | None:
    """None if `tree` is finite and each of its tensors matches `saved` (None: nothing saved to compare with —
    finiteness only, and a log line that `what` is unverified); else the first problem, naming the tensor."""
    digests, nonfinite = tree_digests(tree)
    if saved is not None:
        for name, digest in digests.items():
            if name not in saved:
                return f"fails verification: tensor {name} has no saved digest"
            if saved[name] != digest:
                return f"fails verification: tensor {name} reads as digest {digest}, saved as {saved[name]} (corrupt bytes)"
    if nonfinite:
        return f"holds non-finite values in tensor {nonfinite[0]}"
    if saved is None:
        log.info("%s has no digests (written before they existed): restored unverified", what)
    return None


@dataclasses.dataclass
class _Retention:
    """orbax preservation policy: the newest `n` steps, and every step in `protected` (module docstring)."""

    n: int
    protected: set[int] = dataclasses.field(default_factory=set)

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        newest = set(sorted(c.step for c in checkpoints)[-self.n :])
        return [c.step in newest or c.step in self.protected for c in checkpoints]


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
            return bool(multihost_utils.process_allgather(self._event.is_set()).any())
        return self._event.is_set()

    def restore_handler(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
