"""Faults to inject into a checkpoint directory, shared by the checkpoint tests and the jobs' fault tests:
damaged step files (what bit rot, an interrupted copy or a bad sync leaves) and a full disk."""

from __future__ import annotations

import contextlib
import pathlib
import resource
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator

import numpy as np


def data_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    """The array data files of a step, largest first."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    assert files, f"no array data files under {step_dir}"
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def overwrite_middle(step_dir: pathlib.Path, path: pathlib.Path | None = None) -> None:
    """1,000 random bytes over the middle of a data file (default: the largest): the file still parses."""
    path = path or data_files(step_dir)[0]
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1000] = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def truncate(step_dir: pathlib.Path) -> None:
    path = data_files(step_dir)[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def remove_file(step_dir: pathlib.Path) -> None:
    data_files(step_dir)[0].unlink()


def garbage_metadata(step_dir: pathlib.Path) -> None:
    path = step_dir / "state" / "_METADATA"
    assert path.is_file(), path
    path.write_text("{not json")


DAMAGE: dict[str, Callable[[pathlib.Path], None]] = {
    "overwritten bytes": overwrite_middle,
    "truncated file": truncate,
    "missing file": remove_file,
    "garbage metadata": garbage_metadata,
}


def step_dirs(checkpoints: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


@contextlib.contextmanager
def full_disk(folder: pathlib.Path, free_bytes: int) -> Iterator[Callable[[], None] | None]:
    """`folder` (which holds what is already written) on a disk with `free_bytes` left: a tmpfs of that size
    mounted over it where this machine allows (root, mount permitted; the contents are copied in and back out),
    else nothing mounted and the `preexec_fn` yielded caps the size of any file the child process writes
    (RLIMIT_FSIZE: the write fails with EFBIG, as a full disk fails it with ENOSPC). Yields None when mounted."""
    keep = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.copytree(folder, keep)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={used + free_bytes}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        if mounted:
            shutil.copytree(keep, folder, dirs_exist_ok=True)
            yield None
        else:

            def cap_file_size() -> None:
                signal.signal(
                    signal.SIGXFSZ, signal.SIG_IGN
                )  # the write fails instead of killing the process
                resource.setrlimit(resource.RLIMIT_FSIZE, (free_bytes, free_bytes))

            yield cap_file_size
    finally:
        if mounted:
            written = folder.parent / f".{folder.name}.written"
            shutil.copytree(folder, written)
            subprocess.run(["umount", str(folder)], check=True)
            shutil.rmtree(folder)
            written.rename(folder)
        shutil.rmtree(keep, ignore_errors=True)
