"""Where generated data and trained vocabularies live, and how they are written.

Several processes (the hosts of a multi-host job, or pytest workers) may build the same file at once. Each
writes a private temporary file in the destination folder and `os.replace`s it into place: readers see either
no file or a complete one, and since every builder writes the same bytes, the last rename wins harmlessly.
"""

import os
import pathlib
import tempfile

ENV_DATA_DIR = "AYA_DATA_DIR"


def data_dir(data_config) -> pathlib.Path:
    """`config.data.data_dir`, else $AYA_DATA_DIR, else ~/.cache/aya_jax/data (created if missing)."""
    path = data_config.data_dir or os.environ.get(ENV_DATA_DIR) or "~/.cache/aya_jax/data"
    path = pathlib.Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
