"""What every training job does around its loop, in one place: multi-host start, the logical data shards a host
reads, checking a saved data position, the progress bar, and the end-of-run summary box.

Used by the SFT, reward-model, DPO and RLOO trainers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import jax

from aya_jax import sharding

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot work; raised before any compilation, naming the field."""


def initialize_distributed(mesh_config: Any) -> None:
    """jax.distributed.initialize() on multi-host runtimes (config.mesh.distributed), with the config's
    heartbeat / initialisation / shutdown timeouts."""
    sharding.maybe_initialize_distributed(
        mesh_config.distributed,
        heartbeat_timeout_seconds=int(mesh_config.heartbeat_timeout_seconds),
        initialization_timeout_seconds=int(mesh_config.initialization_timeout_seconds),
        shutdown_timeout_seconds=int(mesh_config.shutdown_timeout_seconds),
    )


def data_shards(config: Any, mesh: jax.sharding.Mesh, rules: sharding.Rules, process_count: int):
    """(num_shards, rows per shard per step, this host's shards): the shards that cover the rows of the global
    batch this host's devices hold (see pipeline.HostTrainIterator)."""
    global_batch = int(config.train.global_batch_size)
    num_shards = int(config.data.num_shards) or process_count
    shard_batch = global_batch // num_shards
    rows = sharding.process_batch_rows(mesh, rules, global_batch)
    if rows.start % shard_batch or rows.stop % shard_batch:
        raise ConfigError(
            f"config.data.num_shards: {num_shards} shards of {shard_batch} rows do not tile this host's batch "
            f"rows [{rows.start}, {rows.stop}); use a multiple of the host count {process_count}"
        )
    return num_shards, shard_batch, range(rows.start // shard_batch, rows.stop // shard_batch)


def check_data_state(data_state: dict[str, Any], identity: dict[str, Any]) -> int:
    """The saved data position, if the stream it indexes is the one this run would read."""
    for key, value in identity.items():
        saved = data_state.get(key)
        if key == "num_shards":
            saved = data_state.get(key, data_state.get("process_count"))  # older checkpoints: one per host
        if key == "num_shards" and saved != value:
            # Each shard's stream depends on the shard count: positions don't transfer one-to-one.
            log.warning(
                "checkpoint was written with %s data shards, now %s: the data stream restarts from a new "
                "position (some examples will repeat or be skipped; see README and config.data.num_shards)",
                saved,
                value,
            )
            return 0
        if saved != value:
            log.warning(
                "data.%s changed since the checkpoint (%r -> %r): data position kept, but the stream "
                "differs from the original run",
                key,
                saved,
                value,
            )
    return int(data_state["position"])


def progress_bar(config: Any, start: int, total: int, desc: str = "train"):
    """A tqdm bar on stderr (process 0, config.train.progress_bar), or None."""
    if not bool(config.train.progress_bar) or jax.process_index() != 0:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=start,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
    )


def log_summary(
    logger: logging.Logger,
    title: str,
    start_step: int,
    end_step: int,
    preempted: bool,
    body: Sequence[str],
    outputs: Sequence[tuple[str, str | None]],
) -> None:
    """The end-of-run box: "<title> finished at step N (started at M)", the job's own lines, then where each
    output went (`(label, path)`; None = not written)."""
    lines = [
        "=" * 72,
        f"{title} finished at step {end_step} (started at {start_step})"
        + ("  [PREEMPTED]" if preempted else ""),
        *body,
        *(f"  {label:<13} {path}" for label, path in outputs if path),
        "=" * 72,
    ]
    for line in lines:
        logger.info(line)
