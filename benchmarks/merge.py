"""Merge throughput and peak host memory of the streaming merge job, per method, on the benchmark model.

    python benchmarks/merge.py                          # cohere-bench (43.7 M params), every method, 8 CPU devices
    python benchmarks/merge.py --methods linear,ties --devices 1
    python benchmarks/merge.py --workdir /tmp/bench_merge --keep   # reuse / keep the random checkpoints

Makes three random checkpoints of the `cohere-bench` preset in the SFT trainer's layout (params + AdamW state,
sharded on the mesh): a base and two "fine-tunes" (base + small noise). Each method then runs as a user runs
it — `python -m aya_jax.main --config configs/merge.py:<method>` in a fresh process — and the figures come from
its merge_report.json: parameters merged per second, and the peak resident host memory above the process's
memory when the merge started (Linux VmHWM, reset at that point), beside the size of one model and of all the
inputs a whole-model merge would load. On CPU the "devices" are the host's memory too, so everything the
merge holds is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties")
PRESET = "cohere-bench"


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    if devices > 1:
        env["XLA_FLAGS"] = (
            f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
        )
        env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def make_checkpoints(root: pathlib.Path) -> None:
    """base, ft_a, ft_b under root/<name>/checkpoints/1 (run in a child process: its memory is not counted)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from aya_jax import checkpoint, optimizers, pretrained, sharding
    from aya_jax.training import state as ts
    from configs import common

    config = common.base_config()
    config.model.preset = PRESET
    model, cfg = pretrained.build_model(config.model, None)
    tx, _ = optimizers.make_optimizer(config.optimizer, 100)
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (1, -1, 1))
    rules = sharding.normalize_rules(common.default_rules(), mesh)
    with mesh, nn.logical_axis_rules(rules):
        _, shardings = ts.state_shardings(model, tx, 16, mesh, rules)
        base = jax.jit(ts.make_init_fn(model, tx, 16), out_shardings=shardings)(jax.random.PRNGKey(0))

    @jax.jit
    def fine_tune(state, key):  # a nearby model: base + noise of 10% of the init scale
        leaves, treedef = jax.tree.flatten(state.params)
        keys = jax.random.split(key, len(leaves))
        noisy = [
            x + 0.002 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
        ]
        return state.replace(params=jax.tree.unflatten(treedef, noisy), step=state.step + 1)

    for name, state in (
        ("base", base),
        ("ft_a", fine_tune(base, jax.random.PRNGKey(1))),
        ("ft_b", fine_tune(base, jax.random.PRNGKey(2))),
    ):
        ck = checkpoint.Checkpointer(root / name / "checkpoints", keep=1, async_save=False)
        ck.save(1, state, {"position": 0})
        ck.close()
    params = sum(x.size for x in jax.tree.leaves(base.params))
    print(f"wrote 3 checkpoints of {PRESET} ({params:,} parameters) under {root}", flush=True)
    del jnp


def run_method(method: str, root: pathlib.Path, devices: int) -> dict:
    out = root / f"merged_{method}"
    shutil.rmtree(out, ignore_errors=True)
    models = f'("{root / "ft_a"}","{root / "ft_b"}")'
    cmd = [
        sys.executable,
        "-m",
        "aya_jax.main",
        "--config",
        f"{REPO / 'configs/merge.py'}:{method}",
        "--workdir",
        str(out),
        f"--config.merge.models={models}",
    ]
    if method not in ("linear", "slerp"):
        cmd.append(f"--config.merge.base_model={root / 'base'}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(devices), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{method}: merge failed\n{proc.stderr[-3000:]}")
    report = json.loads((out / "merge_report.json").read_text())
    report["process_seconds"] = time.perf_counter() - t0
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--devices", type=int, default=8, help="simulated CPU devices (mesh (1, devices, 1))")
    ap.add_argument("--workdir", default="", help="where the random checkpoints go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and merges")
    ap.add_argument("--make-checkpoints", default="", help=argparse.SUPPRESS)  # child-process entry
    args = ap.parse_args()
    if args.make_checkpoints:
        make_checkpoints(pathlib.Path(args.make_checkpoints))
        return
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown} (known: {', '.join(METHODS)})")
    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="aya_merge_bench_")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "ft_b" / "checkpoints").is_dir():
        subprocess.run(
            [sys.executable, __file__, "--make-checkpoints", str(root), "--devices", str(args.devices)],
            env=_env(args.devices),
            check=True,
        )
    try:
        rows = [(m, run_method(m, root, args.devices)) for m in methods]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    first = rows[0][1]
    model_mib = first["memory"]["model_bytes"] / 2**20
    print(
        f"\n{PRESET}: {first['parameters']:,} parameters, {model_mib:.1f} MiB per model (float32); "
        f"largest leaf {first['memory']['largest_leaf_bytes'] / 2**20:.1f} MiB; mesh {first['mesh']}"
    )
    header = (
        f"{'method':<16} {'inputs':>6} {'params/s':>12} {'merge s':>8} {'peak MiB':>9} "
        f"{'peak/model':>10} {'peak/inputs':>11} {'process s':>9}"
    )
    print(header)
    print("-" * len(header))
    for method, r in rows:
        mem = r["memory"]
        above = mem["peak_above_start_bytes"]
        print(
            f"{method:<16} {mem['inputs']:>6} {r['parameters_per_second']:>12,.0f} {r['seconds']:>8.2f} "
            f"{above / 2**20:>9.1f} {above / mem['model_bytes']:>10.2f} "
            f"{above / (mem['model_bytes'] * mem['inputs']):>11.2f} {r['process_seconds']:>9.1f}"
        )
    print(
        "\npeak: resident host memory above the merge's start (VmHWM); peak/model: over one model's size; "
        "peak/inputs: over all inputs, what loading whole models would need before any output"
    )


if __name__ == "__main__":
    main()
