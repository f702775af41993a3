"""Where a job writes: workdirs that belong to one job, output folders replaced only as a whole, and writability
checked before any work starts.

* **Ownership.** A training job records in `<workdir>/aya_jax_run.json` which job made the workdir and the
  identity of its model (the config fields that fix the shapes of the checkpointed state), with its first
  checkpoint. Another job, or the same job with another model, refuses the workdir with one line naming the
  field before it touches anything — a DPO or RLOO run pointed at its own SFT run's workdir would otherwise
  "resume" from the SFT checkpoints and rotate them away. A workdir with checkpoints but no record (written
  before records existed) is adopted.
* **One run at a time.** While a run lives it holds an exclusive `flock` on `<workdir>/.aya_jax.lock`; a second
  run on the same workdir refuses with one line. The kernel drops the lock when the process dies, SIGKILL
  included, so a crashed run never leaves a stale lock. (Local filesystems only: remote `gs://` workdirs are
  skipped.)
* **Output folders** (Hugging Face exports): the folder must be new, empty, or a previous output of the same
  kind (marked by `.aya_jax_output.json`). The new output is written into a staging folder beside it and
  swapped in by renames at the end, so a reader sees the old output or the new one, never a mix of stale and
  new files (a sharded index from an earlier export beside a new single-file model), and a failed export leaves
  the old one intact.
* **Writability** of every output location is probed (create the folder, write and delete a file) at the start,
  so a read-only location costs one line, not a finished run whose results are then lost.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pathlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

RECORD = "aya_jax_run.json"
LOCK = ".aya_jax.lock"
OUTPUT_MARK = ".aya_jax_output.json"


class WorkdirError(ValueError):
    """A workdir or output folder that this job must not use; the message names it and the field that set it."""


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def check_writable(path: str | os.PathLike, field: str) -> pathlib.Path:
    """Create folder `path` (and parents) and write and delete a probe file in it; WorkdirError naming `field`
    (e.g. "--workdir", "config.hf_convert.out_dir") if that fails. Remote paths are left to their client."""
    if is_remote(path):
        return pathlib.Path(os.fspath(path))
    folder = pathlib.Path(path)
    probe = folder / f".aya_jax_write_probe.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise WorkdirError(f"{field}: {folder} is not writable ({reason})") from e
    return folder


def check_parent_writable(path: str | os.PathLike, field: str) -> None:
    """Check that file `path` can be created: its folder exists or can be made, and is writable."""
    check_writable(pathlib.Path(path).parent, field)


# ---------------------------------------------------------------------------------------------------------
# Ownership and the run lock
# ---------------------------------------------------------------------------------------------------------


def read_record(workdir: str | os.PathLike) -> dict[str, Any] | None:
    path = pathlib.Path(workdir) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WorkdirError(f"--workdir: {path} is not a readable run record ({e}); move it away") from e


def recorded_job(path: str | os.PathLike) -> str | None:
    """The job recorded for a run given by its workdir, its checkpoints/ folder or one step folder; None if
    no record is found."""
    if is_remote(path):
        return None
    p = pathlib.Path(path)
    for folder in (p, p.parent, p.parent.parent):
        if (folder / RECORD).is_file():
            return (read_record(folder) or {}).get("job")
    return None


def claim(
    workdir: str | os.PathLike, job: str, identity: dict[str, Any], *, has_checkpoints: bool
) -> dict[str, Any] | None:
    """Refuse `workdir` if it holds another job's run or a run of another model (`identity`: field -> value,
    each key a config field name such as "config.model.preset"). Returns the record that makes this job its
    owner — to be written with `write_record` once the run writes its first checkpoint — or None if the
    workdir's record already says so."""
    if is_remote(workdir):
        return None
    workdir = pathlib.Path(workdir)
    record = read_record(workdir)
    if record is None:
        if has_checkpoints:
            log.warning("%s holds checkpoints but no run record: adopting it as a %s run", workdir, job)
        return {"job": job, "identity": identity, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if record.get("job") != job:
        raise WorkdirError(
            f"--workdir: {workdir} holds a {record.get('job')!r} run, not a {job!r} run; a {job} job would resume "
            "from or overwrite its checkpoints — use another --workdir"
            + (
                " (start from that run with config.checkpoint.init_from)"
                if job in ("dpo", "rloo", "reward")
                else ""
            )
        )
    saved = record.get("identity", {})
    for field, value in identity.items():
        if field in saved and saved[field] != value:
            raise WorkdirError(
                f"{field}: {value!r}, but --workdir {workdir} holds a {job} run with {saved[field]!r}; its "
                "checkpoints cannot resume this model — use another --workdir"
            )
    merged = {**saved, **identity}
    return None if merged == saved else {**record, "identity": merged}


def write_record(workdir: pathlib.Path, record: dict[str, Any]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / f"{RECORD}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, workdir / RECORD)


@contextlib.contextmanager
def run_lock(workdir: str | os.PathLike) -> Iterator[None]:
    """Hold the workdir's exclusive lock for the block; WorkdirError if another live process holds it."""
    if is_remote(workdir):
        yield
        return
    path = pathlib.Path(workdir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise WorkdirError(
                f"--workdir: {workdir} is in use by a running job ({owner}); wait for it or use another --workdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing drops the flock


class Lock:
    """`run_lock` held until `release()` (for objects whose lifetime is not one `with` block)."""

    def __init__(self, workdir: str | os.PathLike):
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(run_lock(workdir))

    def release(self) -> None:
        self._stack.close()


# ---------------------------------------------------------------------------------------------------------
# Output folders replaced as a whole
# ---------------------------------------------------------------------------------------------------------


def check_output_dir(out_dir: str | os.PathLike, kind: str, field: str) -> pathlib.Path:
    """Refuse `out_dir` unless it is new, empty or a previous `kind` output; check its parent is writable."""
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise WorkdirError(f"{field}: {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        mark = out / OUTPUT_MARK
        previous = None
        if mark.is_file():
            with contextlib.suppress(OSError, ValueError):
                previous = json.loads(mark.read_text(encoding="utf-8")).get("kind")
        if previous != kind:
            what = f"a {previous!r} output" if previous else "files that are not an aya_jax output"
            raise WorkdirError(
                f"{field}: {out} holds {what}; give a new or empty folder (a previous {kind} output there is "
                "replaced as a whole)"
            )
    check_writable(out.parent if out.parent != out else out, field)
    return out


@contextlib.contextmanager
def replace_output(out_dir: str | os.PathLike, kind: str, field: str) -> Iterator[pathlib.Path]:
    """Yield a staging folder beside `out_dir` to write the new output into; on success it replaces `out_dir`
    as a whole (two renames), on failure it is removed and `out_dir` is untouched."""
    out = check_output_dir(out_dir, kind, field)
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        yield stage
        (stage / OUTPUT_MARK).write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
