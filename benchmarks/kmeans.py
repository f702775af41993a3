"""k-means time and peak memory: aya_jax's `curation.clustering.kmeans` (JAX) against faiss-cpu's `faiss.Kmeans`
on the same vectors, in one run.

    python benchmarks/kmeans.py                                  # 1M x 1024 float32, K 1024, 10 iterations
    python benchmarks/kmeans.py --n 200000 --d 256 --k 256       # a quicker look

Vectors: Gaussian blobs (2K centres drawn with sd 1, points at sd 0.5 around them), float32, generated from a
fixed seed in each side's process, so both cluster the same vectors. Both sides train on the same budget: a
sample of 256 vectors per centroid (faiss's `max_points_per_centroid` default; ours `sample_per_centroid`),
exactly `--iterations` Lloyd iterations (our tol 0), one initialisation each (faiss: random vectors; ours:
random too, and greedy k-means++ reported apart with `--plus-plus`), then every vector assigned. Each side runs in
its own process; "peak" is that process's peak resident memory (ru_maxrss), vectors included (N x d x 4 bytes).
Inertia is Σ squared distance to the nearest centroid over all N vectors, computed by each library. Shared
machines are noisy: compare the ratio within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def vectors(n: int, d: int, k: int, seed: int = 0):
    import numpy as np  # noqa: PLC0415  (each side's process imports only what it measures)

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2 * k, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for begin in range(0, n, 65536):  # in blocks: no float64 copy of the whole array
        m = min(65536, n - begin)
        out[begin : begin + m] = centres[rng.integers(0, 2 * k, m)]
        out[begin : begin + m] += rng.normal(scale=0.5, size=(m, d)).astype(np.float32)
    return out


def run_side(args) -> dict:
    x = vectors(args.n, args.d, args.k)
    start = time.perf_counter()
    if args.side == "faiss":
        import faiss  # noqa: PLC0415

        km = faiss.Kmeans(args.d, args.k, niter=args.iterations, seed=1, max_points_per_centroid=256)
        km.train(x)
        dist, _ = km.index.search(x, 1)
        inertia = float(dist.sum(dtype="float64"))
    else:
        from aya_jax.curation import clustering  # noqa: PLC0415

        out = clustering.kmeans(
            x, args.k, iterations=args.iterations, tol=0.0, init=args.side, sample_per_centroid=256, seed=1
        )
        inertia = out.inertia
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"side": args.side, "seconds": seconds, "peak_gib": peak, "inertia": inertia}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--plus-plus", action="store_true", help="also ours with greedy k-means++ seeding")
    parser.add_argument("--side", choices=["faiss", "random", "k-means++"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args)))
        return
    from machine import describe  # noqa: PLC0415

    print(describe())
    print(f"vectors {args.n} x {args.d} float32 ({args.n * args.d * 4 / 2**30:.2f} GiB), K {args.k}, "
          f"{args.iterations} iterations, 256 training vectors per centroid")  # fmt: skip
    sides = ["faiss", "random"] + (["k-means++"] if args.plus_plus else [])
    results = {}
    for side in sides:
        cmd = [sys.executable, __file__, "--side", side] + [
            f"--{name}={getattr(args, name)}" for name in ("n", "d", "k", "iterations")
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"{side}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[side]
        name = "faiss-cpu" if side == "faiss" else f"aya_jax ({side} init)"
        print(
            f"{name:26s} {r['seconds']:8.1f} s   peak {r['peak_gib']:6.2f} GiB   inertia {r['inertia']:.6g}"
        )
    ours, ref = results["random"], results["faiss"]
    print(f"ratio aya_jax / faiss: time {ours['seconds'] / ref['seconds']:.2f}x, "
          f"peak memory {ours['peak_gib'] / ref['peak_gib']:.2f}x, inertia {ours['inertia'] / ref['inertia']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
