"""What the checkpoint digests cost (aya_jax/checkpoint.py): the digest pass on save and the verification pass on
restore, against the save and restore they belong to, in one run.

    python benchmarks/checkpoint_digests.py                 # the quickstart's train state, then a 1B-param state
    python benchmarks/checkpoint_digests.py --billions 0.25 --repeats 2

States: (1) the quickstart's model (configs/quickstart.py: cohere-tiny, the embedded vocabulary size) with its
AdamW moments — the state `sft` saves; (2) N x 10^9 float32 parameters in 1,024-row tensors, params only (what a
merge or hf_import writes; a full train state adds two Adam moments of the same size, and the digest cost grows
with the bytes exactly as the write does). Synchronous saves into a temporary folder on the disk the run uses;
each figure is the best of --repeats. Prints the CPU model, the seconds of each part and the digest's share.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from aya_jax import checkpoint, optimizers, pretrained  # noqa: E402
from aya_jax.training import state as ts  # noqa: E402
from configs import quickstart  # noqa: E402


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def quickstart_state():
    config = quickstart.get_config()
    model, _ = pretrained.build_model(config.model, 8000)
    tx, _ = optimizers.make_optimizer(config.optimizer, 10)
    return jax.jit(ts.make_init_fn(model, tx, 16))(jax.random.PRNGKey(0))


def billion_state(billions: float):
    rows = 1024
    n_tensors = max(1, round(billions * 1e9 / (rows * 4096)))
    keys = jax.random.split(jax.random.PRNGKey(0), n_tensors)
    make = jax.jit(lambda k: jax.random.normal(k, (rows, 4096), jnp.float32))
    return {"params": {f"w{i:04d}": make(k) for i, k in enumerate(keys)}}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(name: str, state, repeats: int, root: pathlib.Path) -> None:
    leaves = jax.tree.leaves(state)
    nbytes = sum(x.nbytes for x in leaves)
    count = sum(
        x.size for x in jax.tree.leaves(state.params if hasattr(state, "params") else state["params"])
    )
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    checkpoint.tree_digests(state)  # compile once, outside the timings

    def save():
        folder = root / "ckpt"
        shutil.rmtree(folder, ignore_errors=True)
        ck = checkpoint.Checkpointer(folder, keep=1, async_save=False)
        ck.save(1, state, {})
        ck.close()

    def restore():
        ck = checkpoint.Checkpointer(root / "ckpt", keep=1, async_save=False)
        ck.restore_latest(abstract)
        ck.close()

    digest = best(lambda: checkpoint.tree_digests(state), repeats)
    saving = best(save, repeats)
    restoring = best(restore, repeats)
    print(
        f"\n{name}: {count / 1e6:,.1f} M parameters, state {nbytes / 2**30:.2f} GiB in {len(leaves)} arrays"
    )
    print(f"  digest pass          {digest:8.3f} s   ({nbytes / digest / 2**30:.1f} GiB/s)")
    print(f"  save (with digests)  {saving:8.3f} s   digests {100 * digest / saving:5.1f}% of it")
    print(f"  restore (verified)   {restoring:8.3f} s   verification {100 * digest / restoring:5.1f}% of it")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--billions", type=float, default=1.0, help="parameters of the large state, x 10^9")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default="", help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} cores); jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir or None) as tmp:
        root = pathlib.Path(tmp)
        measure("quickstart train state (params + AdamW moments)", quickstart_state(), args.repeats, root)
        big = billion_state(args.billions)
        measure(f"{args.billions:g}B-parameter float32 params", big, max(1, args.repeats - 1), root)


if __name__ == "__main__":
    main()
