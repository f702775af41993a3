"""One line describing the machine a benchmark ran on, for the top of its output.

    from machine import describe   # with benchmarks/ on sys.path (a script in benchmarks/ has it already)
    print(describe())
    # machine: Intel(R) Xeon(R) Processor; 2 cores visible; ISA avx2 avx512f avx512_bf16 amx_bf16;
    #          jax 0.10.2 cpu (cpu), 1 device(s); 2025-01-01 12:00 UTC

Shared machines differ run to run (CPU model, cores granted, matrix extensions): printed beside a benchmark's
figures it says which of them the figures can be compared with.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo() -> tuple[str | None, set[str]]:
    """(the first processor's 'model name' with its family/model numbers, its 'flags' set) from /proc/cpuinfo;
    (None, set()) where there is none. Virtual machines often report a generic name ("Intel(R) Xeon(R)
    Processor"): the numbers and the flags then say more."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break  # the end of the first processor's block
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name")
    if model and "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']} model {fields['model']})"
    return model, set(fields.get("flags", "").split())


def _lscpu_model() -> str | None:
    if shutil.which("lscpu") is None:
        return None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return None


def cpu_model() -> str:
    model, _ = _cpuinfo()
    return model or _lscpu_model() or platform.processor() or platform.machine() or "unknown CPU"


def visible_cores() -> int:
    """Cores this process may run on (the affinity mask: what a container or taskset grants), else os.cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def isa_summary() -> str:
    """Which of avx2 / avx512f / avx512_bf16 / amx_bf16 the CPU flags list ("none of ..." if none; "unknown"
    without /proc/cpuinfo)."""
    _, flags = _cpuinfo()
    if not flags:
        return "unknown"
    present = [f for f in ISA_FLAGS if f in flags]
    return " ".join(present) if present else f"none of {' '.join(ISA_FLAGS)}"


def jax_summary() -> str:
    try:
        import jax

        device = jax.devices()[0]
        return (
            f"jax {jax.__version__} {jax.default_backend()} ({device.device_kind}), "
            f"{jax.device_count()} device(s)"
        )
    except Exception as e:  # noqa: BLE001 - a description must not fail the benchmark
        return f"jax unavailable ({type(e).__name__}: {e})"


def describe() -> str:
    """One line: CPU model, visible cores, ISA summary, jax backend and device kind, the date (UTC)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"machine: {cpu_model()}; {visible_cores()} cores visible; ISA {isa_summary()}; "
        f"{jax_summary()}; {now}"
    )


if __name__ == "__main__":
    print(describe())
