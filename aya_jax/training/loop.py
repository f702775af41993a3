"""The one training loop, and what every training job sets up the same way around it.

    with loop.Run.start(config, workdir, SECTIONS) as run:   # validated config, mesh, checkpointer, writer
        ...                                                    # the objective's data, model and steps
        restored = run.restore(abstract_state, state_shardings)  # the newest loadable checkpoint, or None
        state = restored.state if restored else <the objective's init>
        return loop.train(run, objective, state, start=restored.step if restored else 0)

`Run.start` validates the config sections the job reads (aya_jax/defaults/), starts jax.distributed on
multi-host runtimes and builds the mesh and rules (`sharding.setup`, with the configured timeouts), checks that
the global batch splits over the data-parallel devices, the hosts and the data shards, and only then creates
the checkpointer (`config.checkpoint.*`), the metric writer (JSONL + TensorBoard) and the SIGTERM watcher — so a
bad config fails with one line and leaves nothing behind.

`train` runs an `Objective` from `start` to `objective.total` iterations. An iteration is what the objective
calls one step: an optimiser step for SFT, the reward model and offline DPO; sample -> score -> update for
RLOO and an online DPO iteration. Around every iteration the loop does what is the same for all of them:

* metrics every `config.train.log_every` iterations (and at the last) to metrics.jsonl / TensorBoard, with
  tokens/s and MFU when the objective counts its tokens and FLOPs; the progress bar and its postfix;
* evaluation when the objective asks for it (by default every `config.train.eval_every` iterations), at the
  start of a new run if it wants a baseline, and once at the end if the last iteration was not evaluated;
* a checkpoint every `config.checkpoint.every` iterations, at the last one and wherever the objective asks
  (e.g. the end of a DPO stage), with the objective's JSON state (data position, stage, ...) beside it;
* the non-finite guard: a non-finite `loss` or `grad_norm` of an iteration is handled by
  `config.train.nonfinite` — "stop" (default) raises NonFiniteError before anything of that iteration is saved
  (main exits 3 with one line naming the iteration and the metric; the checkpoints stay as they were), "skip"
  counts it and goes on (the update itself was already dropped inside the step: TrainState.apply_gradients),
  stopping after `config.train.max_skipped` in a row. The check reads one scalar per iteration, one iteration
  late so that the host never waits for the device between steps — except before a save, an evaluation, a log
  line and the end, which check the iteration just run;
* preemption: SIGTERM (spot VMs, maintenance, `kill`) saves a checkpoint after the current iteration and the
  run exits 0 — on several hosts every host stops after the same iteration; an objective whose iteration is
  long may stop inside it (it returns None) and redo it on the rerun;
* the end: plots, and one summary box saying what happened and where every output went.

Rerunning the same command resumes from the newest loadable checkpoint (model, optimiser, step, rng and the
objective's JSON state); a checkpoint directory with steps none of which loads is an error, never a silent
restart (aya_jax/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from tqdm import tqdm

from aya_jax import checkpoint as ckpt_lib
from aya_jax import defaults, metrics, sharding, workdirs

log = logging.getLogger(__name__)

ConfigError = defaults.ConfigError


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient norm (config.train.nonfinite)."""


# ============================================================================================================
# The run: config, mesh, checkpoints, metrics
# ============================================================================================================


@dataclasses.dataclass(frozen=True)
class DataShards:
    """The logical data shards this host reads (see aya_jax/data/pipeline.py HostTrainIterator)."""

    num_shards: int  # in all
    shard_batch: int  # rows of each global batch that one shard gives
    host_shards: range  # this host's


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    saved: dict[str, Any]  # the objective's JSON state written with the checkpoint


def validate_config(
    config: Any, sections: Iterable[str], num_devices: int, process_count: int
) -> tuple[tuple[int, ...], sharding.Rules]:
    """Everything that can be checked without data or compilation: the sections' own checks, the mesh shape
    for `num_devices`, the rules' axes, and that the global batch splits over the data-parallel devices x
    gradient accumulation, the hosts and the data shards. Returns (mesh shape, rules)."""
    sections = tuple(sections)
    defaults.validate(config, sections)
    shape = sharding.resolve_mesh_shape(config.mesh.axes, config.mesh.shape, num_devices)
    axes = dict(zip(tuple(config.mesh.axes), shape, strict=True))
    rules = sharding.normalize_rules(config.mesh.rules)
    for name, target in rules:
        for a in target if isinstance(target, tuple) else (target,):
            if a is not None and a not in axes:
                raise ConfigError(
                    f"config.mesh.rules: {name!r} -> unknown mesh axis {a!r} (mesh axes: {tuple(axes)})"
                )
    if "train" in sections:
        batch_axes = dict(rules).get("act_batch")
        batch_axes = batch_axes if isinstance(batch_axes, tuple) else (batch_axes,)
        dp = int(np.prod([axes[a] for a in batch_axes if a is not None])) if batch_axes else 1
        gb, accum = int(config.train.global_batch_size), int(config.train.grad_accum_steps)
        if gb % (dp * accum):
            raise ConfigError(
                f"config.train.global_batch_size: {gb} is not divisible by data-parallel size {dp} x "
                f"grad_accum_steps {accum} = {dp * accum}"
            )
        if gb % process_count:
            raise ConfigError(
                f"config.train.global_batch_size: {gb} is not divisible by {process_count} hosts"
            )
        num_shards = int(config.data.num_shards) or process_count
        if gb % num_shards:
            raise ConfigError(
                f"config.data.num_shards: {config.data.num_shards} must be 0 (one per host) or a positive "
                f"divisor of config.train.global_batch_size {gb}"
            )
    return shape, rules


@dataclasses.dataclass
class Run:
    """What every training job sets up the same way (module docstring). Made by `Run.start`."""

    config: Any
    workdir: pathlib.Path
    mesh: Mesh
    rules: sharding.Rules
    checkpointer: ckpt_lib.Checkpointer
    writer: metrics.MetricWriter
    watcher: ckpt_lib.PreemptionWatcher
    lock: workdirs.Lock | None = None  # the workdir's run lock (process 0)
    owner: dict[str, Any] | None = None  # the ownership record to write with the first checkpoint
    created: list[pathlib.Path] = dataclasses.field(default_factory=list)  # folders `start` made
    _closed: bool = False

    @classmethod
    def start(cls, config: Any, workdir: str | pathlib.Path, sections: Iterable[str]) -> Run:
        sections = tuple(sections)
        defaults.validate(config, sections)  # before jax.distributed: a typo costs no cluster start-up
        sharding.initialize_distributed(config.mesh)
        shape, rules = validate_config(config, sections, jax.device_count(), jax.process_count())
        mesh = sharding.make_mesh(tuple(config.mesh.axes), shape)
        workdir = pathlib.Path(workdir)
        c = config.checkpoint
        # A separate checkpoint directory may be remote (gs://, for multi-host pods); pathlib would mangle "://".
        checkpoint_dir = str(c.directory) or workdir / "checkpoints"
        local = [workdir] + ([] if workdirs.is_remote(checkpoint_dir) else [pathlib.Path(checkpoint_dir)])
        created = [p for p in local if not p.exists()]
        lock, owner = _claim_workdir(config, workdir, checkpoint_dir)
        try:
            checkpointer = ckpt_lib.Checkpointer(
                checkpoint_dir, keep=int(c.keep), async_save=bool(c.async_save)
            )
        except BaseException:
            if lock is not None:
                lock.release()
            _remove_if_empty(created)
            raise
        writer = metrics.MetricWriter(
            workdir, jsonl=bool(config.metrics.jsonl), tensorboard=bool(config.metrics.tensorboard)
        )
        return cls(config, workdir, mesh, sharding.normalize_rules(rules, mesh), checkpointer, writer,
                   ckpt_lib.PreemptionWatcher(), lock, owner, created)  # fmt: skip

    # -- placement -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """`with mesh, nn.logical_axis_rules(rules)`: the models' logical constraints resolve on this mesh.
        Keep one context around a whole phase: a nested one is a new tracing context and recompiles."""
        with self.mesh, nn.logical_axis_rules(self.rules):
            yield

    def row_sharding(self, ndim: int) -> NamedSharding:
        """[rows, ...] arrays split by rows over the data-parallel devices (`act_batch`), the rest replicated."""
        return NamedSharding(self.mesh, sharding.batch_spec(self.rules, ndim))

    def global_rows(self, x: np.ndarray) -> jax.Array:
        """A host array that every host holds whole (same values) -> a global array sharded by rows."""
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, self.row_sharding(x.ndim), lambda index: x[index])

    def global_batch(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Each host's own rows (its data shards, in order) -> global arrays sharded by rows."""
        return sharding.global_batch_from_host(host_batch, self.mesh, self.rules)

    def local_rows(self, x: jax.Array) -> np.ndarray:
        """The rows of a global row-sharded array that this host's devices hold (`host_rows`), as NumPy."""
        if x.is_fully_addressable:
            rows = self.host_rows(x.shape[0])
            return np.asarray(jax.device_get(x))[rows.start : rows.stop]
        spec = sharding.batch_spec(self.rules, x.ndim)
        return np.asarray(multihost_utils.global_array_to_host_local_array(x, self.mesh, spec))

    def from_local_rows(self, local: np.ndarray, num_rows: int) -> jax.Array:
        """This host's rows (`host_rows(num_rows)`) of a global [num_rows, ...] array -> the global array."""
        local = np.asarray(local)
        return jax.make_array_from_process_local_data(
            self.row_sharding(local.ndim), local, (num_rows, *local.shape[1:])
        )

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run's files (metrics, plots): process 0."""
        return jax.process_index() == 0

    @property
    def data_parallel_size(self) -> int:
        """How many ways the batch (row) dimension is split."""
        return sharding.data_parallel_size(self.mesh, self.rules)

    def host_rows(self, num_rows: int) -> range:
        """The rows of a global [num_rows, ...] row-sharded array held by this host's devices."""
        return sharding.process_batch_rows(self.mesh, self.rules, num_rows)

    to_host = staticmethod(sharding.to_host)  # every leaf whole on every host (metrics, scores)

    # -- data ------------------------------------------------------------------------------------------------
    def data_shards(self, global_batch: int | None = None) -> DataShards:
        """The shards that cover the rows of a global batch (config.train.global_batch_size) this host holds."""
        global_batch = global_batch or int(self.config.train.global_batch_size)
        process_count = jax.process_count()
        num_shards = int(self.config.data.num_shards) or process_count
        shard_batch = global_batch // num_shards
        rows = self.host_rows(global_batch)
        if rows.start % shard_batch or rows.stop % shard_batch:
            raise ConfigError(
                f"config.data.num_shards: {num_shards} shards of {shard_batch} rows do not tile this host's batch "
                f"rows [{rows.start}, {rows.stop}); use a multiple of the host count {process_count}"
            )
        shards = DataShards(
            num_shards, shard_batch, range(rows.start // shard_batch, rows.stop // shard_batch)
        )
        log.info(
            "data: process %d of %d reads shards [%d, %d) of %d, %d rows of each global batch",
            jax.process_index(), process_count, shards.host_shards.start, shards.host_shards.stop, num_shards,
            len(shards.host_shards) * shard_batch,
        )  # fmt: skip
        return shards

    # -- checkpoints -----------------------------------------------------------------------------------------
    def restore(self, abstract_state: Any, state_shardings: Any) -> Restored | None:
        """The newest checkpoint that loads, straight onto `state_shardings`; None for a new run."""
        restored = self.checkpointer.restore_latest(ckpt_lib.abstract_like(abstract_state, state_shardings))
        if restored is None:
            return None
        step, state, saved = restored
        log.info("resumed from %s step %d", self.checkpointer.directory, step)
        return Restored(int(step), state, saved)

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Checkpoint `state` (async); the first save also records the workdir's owner (aya_jax/workdirs.py)."""
        if self.owner is not None and self.is_writer:
            workdirs.write_record(self.workdir, self.owner)
        self.owner = None
        self.checkpointer.save(step, state, data_state)

    def close(self, failed: bool = False) -> None:
        """Wait for in-flight checkpoint saves, close the writers, give SIGTERM back (idempotent). A run that
        `failed` removes the folders it made if it wrote nothing into them."""
        if not self._closed:
            self._closed = True
            try:
                self.checkpointer.close()
            finally:
                self.writer.close()
                self.watcher.restore_handler()
                if self.lock is not None:
                    self.lock.release()
                if failed and self.is_writer:
                    _remove_if_empty(self.created)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(failed=exc_type is not None)


def model_identity(config: Any) -> dict[str, Any]:
    """The config fields that fix the shapes of a run's checkpointed state: a workdir's checkpoints resume
    only a run that agrees on them (aya_jax/workdirs.py)."""
    m = config.model
    identity = {
        f"config.model.{f}": str(m[f]) if f != "scan_layers" else bool(m[f])
        for f in ("preset", "hf_init_dir", "scan_layers", "param_dtype")
    }
    identity.update({f"config.model.overrides.{k}": v for k, v in m.overrides.items() if v is not None})
    identity.update({f"config.data.vocab.{k}": config.data.vocab[k] for k in ("kind", "path", "size")})
    return identity


def _claim_workdir(
    config: Any, workdir: pathlib.Path, checkpoint_dir: Any
) -> tuple[workdirs.Lock | None, dict[str, Any] | None]:
    """Before anything is written (aya_jax/workdirs.py): config.checkpoint.init_from is not a reward model, the
    workdir is this job's and this model's, it is writable and no other run holds it. Process 0 decides;
    on several hosts every process learns the outcome, so all stop together. Returns (the lock, the owner
    record to write with the first checkpoint)."""
    lock, owner, error = None, None, None
    if jax.process_index() == 0:
        try:  # the read-only checks first: a refused workdir is not touched at all
            if config.checkpoint.init_from:
                source = workdirs.recorded_job(config.checkpoint.init_from)
                if source == "reward":
                    raise workdirs.WorkdirError(
                        f"config.checkpoint.init_from: {config.checkpoint.init_from} is a reward model (a 'reward' "
                        "run); start from a policy: an SFT, DPO, RLOO or merge run"
                    )
            has_checkpoints = not workdirs.is_remote(checkpoint_dir) and any(
                p.name.isdigit() for p in pathlib.Path(checkpoint_dir).glob("*")
            )
            owner = workdirs.claim(
                workdir, str(config.job), model_identity(config), has_checkpoints=has_checkpoints
            )
            workdirs.check_writable(workdir, "--workdir")
            lock = workdirs.Lock(workdir)
        except workdirs.WorkdirError as e:
            error = e
            if lock is not None:
                lock.release()
    if jax.process_count() > 1:
        failed = multihost_utils.process_allgather(np.int32(error is not None))
        if error is None and failed.any():
            raise workdirs.WorkdirError("--workdir: refused by process 0 (its log says why)")
    if error is not None:
        raise error
    return lock, owner


def _remove_if_empty(folders: list[pathlib.Path]) -> None:
    """Remove folders a failed start made, innermost first, if nothing but the run lock is in them."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            (folder / workdirs.LOCK).unlink(missing_ok=True)
            folder.rmdir()  # only an empty folder: anything written stays


def check_data_state(saved: dict[str, Any], identity: dict[str, Any]) -> int:
    """The saved data position, if the stream it indexes is the one this run would read (`identity`: what the
    stream depends on: seed, shards, batch, lengths, task). A changed shard count restarts the stream (each
    shard's stream depends on it); other changes keep the position with a warning."""
    for key, value in identity.items():
        saved_value = saved.get(key)
        if key == "num_shards":
            saved_value = saved.get(key, saved.get("process_count"))  # older checkpoints: one per host
            if saved_value != value:
                log.warning(
                    "checkpoint was written with %s data shards, now %s: the data stream restarts from a new "
                    "position (some examples will repeat or be skipped; see README and config.data.num_shards)",
                    saved_value, value,
                )  # fmt: skip
                return 0
        elif saved_value != value:
            log.warning(
                "data.%s changed since the checkpoint (%r -> %r): data position kept, but the stream differs "
                "from the original run",
                key, saved_value, value,
            )  # fmt: skip
    return int(saved.get("position", saved.get("data_position", 0)))


# ============================================================================================================
# The objective: what differs
# ============================================================================================================


@dataclasses.dataclass
class Step:
    """What one iteration reports: its metrics (device arrays or floats) and how to log them."""

    metrics: dict[str, Any]
    kind: str = "train"  # the metrics.jsonl `kind`
    step: int | None = None  # the metrics' step axis; None: the iteration number
    always_log: bool = False  # log even between config.train.log_every


@dataclasses.dataclass
class Throughput:
    """Tokens an iteration processes and their model FLOPs, for tokens/s and MFU in the log."""

    tokens_per_iteration: int
    flops_per_token: float
    dtype: str  # the compute dtype (for the peak FLOP/s table)


class Objective:
    """What one training objective adds to the loop (see SFT, reward, DPO and RLOO in aya_jax/training/).
    Subclasses set `title`, `total` and implement `step`; the rest has defaults."""

    title = "training"  # the summary box's "<title> finished at step N"
    unit = "step"  # the progress bar's unit
    eval_at_start = False  # evaluate before the first iteration of a new run (a baseline)
    total: int = 0  # iterations in the whole run
    throughput: Throughput | None = None

    def step(self, state: Any, iteration: int) -> tuple[Any, Step] | None:
        """Run iteration `iteration` (0-based); None: interrupted by SIGTERM inside it (redone on rerun)."""
        raise NotImplementedError

    def evaluate(self, state: Any, iteration: int) -> dict[str, Any] | None:
        """Held-out evaluation after `iteration` iterations (0: before any); written as kind "eval"."""
        return None

    def should_evaluate(self, iteration: int, config: Any) -> bool:
        return iteration % int(config.train.eval_every) == 0

    def policy_params(self, state: Any) -> Any:
        """The language model's params in `state` that config.evals scores (the policy's)."""
        return state.params

    def should_save(self, iteration: int) -> bool:
        """A checkpoint after `iteration` besides config.checkpoint.every and the last one."""
        return False

    def checkpoint_state(self, iteration: int) -> dict[str, Any]:
        """The JSON saved beside the train state (data position, stage, ...)."""
        return {}

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """The progress bar's live values."""
        return {"loss": f"{metrics['loss']:.3f}"} if "loss" in metrics else {}

    def log_line(self, iteration: int, metrics: dict[str, float]) -> str | None:
        """An info line for a logged iteration (None: the progress bar is enough)."""
        return None

    def finish(self, run: Run, state: Any, summary: RunSummary) -> None:
        """At the end, on every process: the summary box's own lines (`summary.lines`) and, on process 0
        (`run.is_writer`), plots (into `summary.outputs`)."""


# ============================================================================================================
# The loop
# ============================================================================================================


@dataclasses.dataclass
class RunSummary:
    title: str
    workdir: str
    start_step: int
    end_step: int
    preempted: bool
    checkpoint_dir: str
    metrics_jsonl: str
    tensorboard_dir: str
    first: dict[str, float] = dataclasses.field(default_factory=dict)  # the first logged train metrics
    last: dict[str, float] = dataclasses.field(default_factory=dict)  # the last logged train metrics
    evaluations: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # this run's, in order
    tokens_per_second: float | None = None  # median over the log windows
    mfu: float | None = None
    lines: list[str] = dataclasses.field(default_factory=list)  # the objective's own summary lines
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)  # label -> path of plots and files
    results: dict[str, Any] = dataclasses.field(default_factory=dict)  # the objective's figures


class _Rate:
    """Tokens/s and MFU over the windows between logged iterations (the first, compiling, one excluded)."""

    def __init__(self, run: Run, throughput: Throughput | None):
        self.throughput, self.history = throughput, []
        self.t0, self.iterations = time.perf_counter(), 0
        self.total_peak = None
        if throughput is not None:
            peak, source = metrics.peak_flops_per_device(
                throughput.dtype, float(run.config.metrics.peak_flops_per_device)
            )
            # Simulated CPU devices share one host's cores: the measured host peak is the whole budget.
            self.total_peak = peak if jax.devices()[0].platform == "cpu" else peak * jax.device_count()
            log.info(
                "peak %.1f GFLOP/s per device (%s); %.2f MFLOP per token",
                peak / 1e9, source, throughput.flops_per_token / 1e6,
            )  # fmt: skip

    def restart(self) -> None:
        self.t0, self.iterations = time.perf_counter(), 0

    def window(self) -> dict[str, float]:
        now, out = time.perf_counter(), {}
        if self.throughput is not None and self.iterations:
            tps = self.throughput.tokens_per_iteration * self.iterations / (now - self.t0)
            self.history.append(tps)
            out = {"tokens_per_second": tps, "mfu": tps * self.throughput.flops_per_token / self.total_peak}
        self.t0, self.iterations = now, 0
        return out


GUARDED = ("loss", "grad_norm")  # the metrics whose non-finite values stop or skip (module docstring)


@jax.jit
def _all_finite(*values: Any) -> jax.Array:
    return jnp.all(jnp.isfinite(jnp.stack([jnp.asarray(v, jnp.float32) for v in values])))


class _Guard:
    """The non-finite guard (module docstring): `watch` an iteration's metrics, `check` the one watched."""

    def __init__(self, run: Run):
        self.run, self.policy = run, str(run.config.train.nonfinite)
        self.max_skipped = int(run.config.train.max_skipped)
        self.pending: tuple[int, Any, dict[str, Any]] | None = None
        self.skipped = self.in_a_row = 0

    def watch(self, iteration: int, metrics: dict[str, Any]) -> None:
        """Start checking `iteration`'s metrics (a device scalar, not read yet); check the previous one. Every
        kind of iteration counts: an online DPO iteration's updates as much as an offline step's."""
        guarded = [metrics[k] for k in GUARDED if k in metrics]
        self.check()
        if guarded:
            flag = _all_finite(*guarded)
            self.pending = (iteration, flag, metrics)

    def check(self) -> None:
        if self.pending is None:
            return
        iteration, flag, metrics = self.pending
        self.pending = None
        if bool(self.run.to_host(flag)):
            self.in_a_row = 0
            return
        values = {
            k: float(v) for k, v in self.run.to_host({k: metrics[k] for k in GUARDED if k in metrics}).items()
        }
        bad = ", ".join(f"{k} {v}" for k, v in values.items() if not np.isfinite(v))
        latest = self.run.checkpointer.latest_step()
        kept = f"checkpoints as they were (newest: step {latest})" if latest is not None else "no checkpoint"
        if self.policy == "skip":
            self.skipped += 1
            self.in_a_row += 1
            if self.in_a_row <= self.max_skipped:
                log.warning("step %d: non-finite %s: update skipped (%d in a row, %d in all)", iteration, bad,
                            self.in_a_row, self.skipped)  # fmt: skip
                return
            raise NonFiniteError(
                f"step {iteration}: non-finite {bad} for {self.in_a_row} steps in a row (config.train.max_skipped "
                f"= {self.max_skipped}); stopped, {kept}"
            )
        raise NonFiniteError(
            f"step {iteration}: non-finite {bad}; stopped without saving (config.train.nonfinite = 'stop'), {kept}"
        )


def progress_bar(config: Any, start: int, total: int, unit: str, desc: str) -> tqdm | None:
    """A tqdm bar on stderr (process 0, config.train.progress_bar), or None."""
    if not bool(config.train.progress_bar) or jax.process_index() != 0:
        return None
    return tqdm(total=total, initial=start, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                mininterval=1.0)  # fmt: skip


def train(run: Run, objective: Objective, state: Any, start: int, benchmarks: Any = None) -> RunSummary:
    """Run `objective` from iteration `start` to `objective.total` (module docstring). `benchmarks`
    (aya_jax/evaluation/periodic.py, config.evals): scored on the policy's params when due, as "eval" rows."""
    config, total = run.config, int(objective.total)
    log_every = int(config.train.log_every)
    summary = RunSummary(
        title=objective.title, workdir=str(run.workdir.absolute()), start_step=start, end_step=start,
        preempted=False, checkpoint_dir=str(run.checkpointer.directory),
        metrics_jsonl=str(run.writer.jsonl_path.absolute()) if config.metrics.jsonl else "",
        tensorboard_dir=str(run.writer.tb_dir.absolute()) if config.metrics.tensorboard else "",
    )  # fmt: skip
    rate = _Rate(run, objective.throughput if start < total else None)  # a finished run measures nothing
    progress = progress_bar(config, start, total, objective.unit, objective.title.split()[0].lower())
    guard = _Guard(run)
    last_evaluated = None

    def evaluate(iteration: int) -> None:
        nonlocal last_evaluated
        result = objective.evaluate(state, iteration)
        last_evaluated = iteration
        if result is not None:
            run.writer.write(iteration, result, kind="eval")
            summary.evaluations.append(result)

    def benchmark(iteration: int) -> None:
        if benchmarks is not None and benchmarks.due(iteration, iteration == total):
            result = benchmarks(objective.policy_params(state))
            run.writer.write(iteration, result, kind="eval")
            summary.results["benchmarks"] = result

    def save(iteration: int) -> None:
        run.save(iteration, state, objective.checkpoint_state(iteration))

    it = start
    try:
        with run.context():
            if start == 0 and objective.eval_at_start:
                evaluate(0)
            t_first = time.perf_counter()
            while it < total:
                done = objective.step(state, it)
                if done is None:  # SIGTERM inside the iteration: it is redone on the rerun
                    summary.preempted = True
                    break
                state, result = done
                it += 1
                rate.iterations += 1
                guard.watch(it, result.metrics)
                if it == start + 1:
                    jax.block_until_ready(result.metrics)
                    log.info(
                        "first %s compiled and ran in %.1f s", objective.unit, time.perf_counter() - t_first
                    )
                    rate.restart()
                saving = it % int(config.checkpoint.every) == 0 or it == total or objective.should_save(it)
                logging_now = (
                    result.always_log or result.kind != "train" or it % log_every == 0 or it == total
                )
                evaluating = objective.should_evaluate(it, config)
                if saving or logging_now or evaluating:
                    guard.check()  # this iteration's: nothing of a non-finite one is logged as fine or saved
                if logging_now:
                    m = {k: float(v) for k, v in run.to_host(result.metrics).items()}
                    if result.kind == "train":
                        m.update(rate.window())
                        summary.first = summary.first or m
                        summary.last = m
                    run.writer.write(result.step if result.step is not None else it, m, kind=result.kind)
                    line = objective.log_line(it, m)
                    if line:
                        log.info(line)
                    if progress is not None and result.kind == "train":
                        progress.set_postfix(objective.postfix(m))
                if progress is not None:
                    progress.update(1)
                if evaluating:
                    evaluate(it)
                benchmark(it)
                if saving:
                    save(it)
                if run.watcher.should_stop(it):
                    guard.check()
                    save(it)
                    run.checkpointer.wait()
                    log.warning("preempted: saved step %d to %s; rerun the same command to resume", it,
                                run.checkpointer.directory)  # fmt: skip
                    summary.preempted = True
                    break
            guard.check()
            if not summary.preempted and it > start and last_evaluated != it:
                evaluate(it)
    finally:
        if progress is not None:
            progress.close()
    run.close()  # the last checkpoint durable, metrics flushed, before the summary says where they are
    summary.end_step = it
    if guard.skipped:
        summary.lines.append(
            f"  skipped       {guard.skipped} update(s) with a non-finite loss or gradient norm"
        )
        summary.results["skipped_updates"] = guard.skipped
    if "benchmarks" in summary.results:
        shown = {k: v for k, v in summary.results["benchmarks"].items() if "/" not in k or k.count("/") == 1
                 and k.split("/")[1] in ("accuracy", "CS", "CA")}  # fmt: skip
        summary.lines.append("  benchmarks    " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    if rate.history:
        summary.tokens_per_second = float(np.median(rate.history))
        tp = objective.throughput
        summary.mfu = summary.tokens_per_second * tp.flops_per_token / rate.total_peak
    with run.context():  # every process: an objective's finish may run collectives (e.g. sampling)
        objective.finish(run, state, summary)
    log_summary(summary)
    return summary


def log_summary(s: RunSummary) -> None:
    """The end-of-run box: "<title> finished at step N (started at M)", the objective's lines, then where
    each output went."""
    outputs = [
        ("checkpoints", s.checkpoint_dir),
        ("metrics", s.metrics_jsonl),
        ("tensorboard", f"tensorboard --logdir {s.tensorboard_dir}" if s.tensorboard_dir else ""),
        *s.outputs.items(),
    ]
    lines = [
        "=" * 72,
        f"{s.title} finished at step {s.end_step} (started at {s.start_step})"
        + ("  [PREEMPTED]" if s.preempted else ""),
        *s.lines,
        *(f"  {label:<13} {path}" for label, path in outputs if path),
        "=" * 72,
    ]
    for line in lines:
        log.info(line)
