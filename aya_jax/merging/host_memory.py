"""Peak resident host memory of this process over a stretch of work, as the merge job reports it.

On Linux the kernel keeps the high-water mark of the resident set (`VmHWM` in /proc/self/status) and resets it to
the current RSS when "5" is written to /proc/self/clear_refs (proc(5)), so the peak of one phase can be measured
in a process that did other work before. Elsewhere (or where clear_refs is not writable) the lifetime peak from
getrusage(2) is used, which can only over-state the phase's peak; `HostMemory.resettable` says which one holds.
"""

from __future__ import annotations

import pathlib
import resource
import sys


class HostMemory:
    """Peak resident memory of this process since `reset()` (Linux: VmHWM after clearing it through
    /proc/self/clear_refs; elsewhere the lifetime peak from getrusage, which can only over-state)."""

    def __init__(self) -> None:
        self.resettable = False
        self.start = 0

    def reset(self) -> None:
        try:
            pathlib.Path("/proc/self/clear_refs").write_text("5")
            self.resettable = True
        except OSError:
            self.resettable = False
        self.start = self.current()

    @staticmethod
    def _status(field: str) -> int | None:
        try:
            for line in pathlib.Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def current(self) -> int:
        rss = self._status("VmRSS")
        if rss is not None:
            return rss
        # Only where /proc is missing (macOS): psutil is an optional dependency, not needed on Linux.
        import psutil

        return int(psutil.Process().memory_info().rss)

    def peak(self) -> int:
        if self.resettable:
            hwm = self._status("VmHWM")
            if hwm is not None:
                return hwm
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
