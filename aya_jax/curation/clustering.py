"""k-means on the device mesh: the clustering step of diversity-first data selection (arXiv 2409.11378).

Lloyd's algorithm (Lloyd 1982): assign every vector to its nearest centroid (squared Euclidean distance,
‖x‖² − 2x·c + ‖c‖², a matrix product), move every centroid to the mean of its vectors, repeat until the
centroids move less than `tol` × the data's mean per-feature variance (summed squared shift: scikit-learn's
criterion) or `iterations` is reached. The vectors are sharded by rows over the mesh's data axes; the per-cluster
sums and counts are sums over rows, which XLA turns into one all-reduce of [K, d] per iteration, and the
centroids are replicated. Distances are formed `chunk` rows at a time, so the [N, K] matrix never exists.

- Initialisation: greedy `k-means++` (Arthur & Vassilvitskii 2007: each next centroid drawn with probability
  proportional to the squared distance D² to the nearest chosen one; greedy as scikit-learn's default: of
  2 + ⌊ln K⌋ such draws the one that lowers Σ D² most) or `random` (K distinct vectors, as faiss
  does). `restarts` independent runs keep the lowest inertia (scikit-learn's `n_init`).
- Training sample: like faiss (`max_points_per_centroid`, default 256), the centroids are fitted on at most
  `sample_per_centroid` × K vectors drawn without replacement, then every vector is assigned; `None` fits on all.
- Empty clusters: a centroid left with no vector moves to the vector farthest from its own centroid (the
  largest contributor to inertia), the next empty one to the next farthest: scikit-learn relocates the same way.

Everything is float32 on the device and seeded: the same vectors, K and seed give the same clustering. Every
host holds the vectors whole and places the rows its devices hold; the per-iteration [K, d] centroids and the
relocation's distances come back to every host.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from aya_jax import sharding

INITS = ("k-means++", "random")


@dataclasses.dataclass(frozen=True)
class KMeans:
    centroids: np.ndarray  # [K, d] float32
    assignments: np.ndarray  # [N] int32, the nearest centroid of every vector
    distances: np.ndarray  # [N] float32, squared distance to it
    inertia: float  # Σ distances (float64 sum)
    iterations: int  # Lloyd iterations of the kept run
    converged: bool

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.assignments, minlength=len(self.centroids))


def _nearest(x: jax.Array, centroids: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
    """(index, squared distance) of every row's nearest centroid, `chunk` rows at a time."""
    c_norm = jnp.sum(centroids * centroids, axis=-1)

    def block(xc: jax.Array) -> tuple[jax.Array, jax.Array]:
        d2 = jnp.sum(xc * xc, axis=-1, keepdims=True) - 2.0 * xc @ centroids.T + c_norm[None, :]
        return jnp.argmin(d2, axis=-1).astype(jnp.int32), jnp.maximum(jnp.min(d2, axis=-1), 0.0)

    n = x.shape[0]
    if n <= chunk:
        return block(x)
    pad = (-n) % chunk
    xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk, x.shape[1])
    index, dist = jax.lax.map(block, xp)
    return index.reshape(-1)[:n], dist.reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("chunk",))
def _lloyd_step(x, weights, centroids, *, chunk):
    index, dist = _nearest(x, centroids, chunk)
    k = centroids.shape[0]
    sums = jax.ops.segment_sum(x * weights[:, None], index, num_segments=k)
    counts = jax.ops.segment_sum(weights, index, num_segments=k)
    moved = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)
    inertia = jnp.sum(dist * weights)
    return moved, counts, inertia, jnp.where(weights > 0, dist, -1.0)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _assign(x, centroids, *, chunk):
    return _nearest(x, centroids, chunk)


@functools.partial(jax.jit, static_argnames=("k",))
def _kmeans_plus_plus(x, weights, key, *, k):
    """Greedy k-means++ seeding on the rows with weight > 0 (padding rows are never drawn): each step draws
    2 + ⌊ln k⌋ candidates with probability ∝ D² and keeps the one that lowers Σ D² most."""
    trials = 2 + int(np.log(k))
    first_key, key = jax.random.split(key)
    first = jax.random.categorical(first_key, jnp.where(weights > 0, 0.0, -jnp.inf))
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = jnp.sum((x - x[first]) ** 2, axis=-1)

    def body(i, carry):
        centroids, d2, key = carry
        key, draw = jax.random.split(key)
        logits = jnp.where((weights > 0) & (d2 > 0), jnp.log(jnp.maximum(d2, 1e-30)), -jnp.inf)
        # every vector already coincides with a chosen centroid: draw any (a duplicate centroid, whose cluster
        # Lloyd's step empties and relocates)
        logits = jnp.where(jnp.all(jnp.isinf(logits)), jnp.where(weights > 0, 0.0, -jnp.inf), logits)
        candidates = jax.random.categorical(draw, logits, shape=(trials,))
        c = x[candidates]  # [trials, d]; distances by the norm expansion: no [trials, N, d] difference tensor
        to_c = jnp.sum(x * x, -1)[None, :] - 2.0 * c @ x.T + jnp.sum(c * c, -1)[:, None]
        d2_candidates = jnp.minimum(d2[None, :], jnp.maximum(to_c, 0.0))
        best = jnp.argmin(jnp.sum(d2_candidates * weights[None, :], axis=-1))
        return centroids.at[i].set(x[candidates[best]]), d2_candidates[best], key

    centroids, _, _ = jax.lax.fori_loop(1, k, body, (centroids, d2, key))
    return centroids


def kmeans(
    vectors: np.ndarray,
    k: int,
    *,
    iterations: int = 25,
    tol: float = 1e-4,
    init: str = "k-means++",
    restarts: int = 1,
    sample_per_centroid: int | None = 256,
    seed: int = 0,
    mesh: Mesh | None = None,
    rules: sharding.Rules = (),
    chunk: int = 4096,
) -> KMeans:
    """Cluster `vectors` [N, d] into `k` clusters (module docstring); `mesh` and `rules` as
    `sharding.setup` gives them (the rows follow `act_batch`), or no mesh for one device."""
    x = np.asarray(vectors)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"k-means: vectors must be a float [N, d] array, got {x.dtype} {x.shape}")
    x = x.astype(np.float32, copy=False)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means: k={k} must be between 1 and the number of vectors ({n})")
    if not np.all(np.isfinite(x)):
        bad = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise ValueError(f"k-means: vector {bad} is not finite")
    if init not in INITS:
        raise ValueError(f"k-means: init {init!r} is not one of {', '.join(INITS)}")
    if iterations < 1 or restarts < 1:
        raise ValueError(f"k-means: iterations ({iterations}) and restarts ({restarts}) must be >= 1")
    rng = np.random.default_rng(seed)
    if sample_per_centroid is not None and n > sample_per_centroid * k:
        sample = np.sort(rng.choice(n, sample_per_centroid * k, replace=False))
        train = x[sample]
    else:
        sample, train = np.arange(n), x
    threshold = float(tol) * _mean_variance(train)
    xs, ws = _place(train, mesh, rules)

    best = None
    for restart in range(restarts):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), restart)
        with sharding.rules_context(mesh, rules):
            if init == "k-means++":
                centroids = _kmeans_plus_plus(xs, ws, key, k=k)
            else:
                centroids = jnp.asarray(train[rng.choice(len(train), k, replace=False)])
            converged, done = False, 0
            for done in range(1, iterations + 1):  # noqa: B007  (`done` reports the iterations run)
                moved, counts, _, dist = sharding.to_host(_lloyd_step(xs, ws, centroids, chunk=chunk))
                moved = _relocate_empty(moved, counts, dist, train)
                shift = float(np.sum((moved - sharding.to_host(centroids).astype(np.float64)) ** 2))
                centroids = jnp.asarray(moved)
                if shift <= threshold:
                    converged = True
                    break
            inertia = float(sharding.to_host(_lloyd_step(xs, ws, centroids, chunk=chunk)[2]))
        if best is None or inertia < best[0]:
            best = (inertia, sharding.to_host(centroids).astype(np.float32), done, converged)
    del xs, ws

    _, centroids, done, converged = best
    assignments = np.empty(n, np.int32)
    distances = np.empty(n, np.float32)
    block = min(n, _ASSIGN_BLOCK)
    for begin in range(0, n, block):  # the vectors reach the device a block at a time: no second full copy
        rows = x[begin : begin + block]
        if len(rows) < block:  # the last block padded to the same shape (one compilation)
            rows = np.concatenate([rows, np.zeros((block - len(rows), x.shape[1]), np.float32)])
        placed, _ = _place(rows, mesh, rules)
        with sharding.rules_context(mesh, rules):
            index, dist = sharding.to_host(_assign(placed, jnp.asarray(centroids), chunk=chunk))
        m = min(block, n - begin)
        assignments[begin : begin + m] = np.asarray(index)[:m]
        distances[begin : begin + m] = np.asarray(dist)[:m]
    return KMeans(
        centroids=centroids, assignments=assignments, distances=distances,
        inertia=float(np.sum(distances, dtype=np.float64)), iterations=done, converged=converged,
    )  # fmt: skip


_ASSIGN_BLOCK = 65536


def _mean_variance(x: np.ndarray) -> float:
    """Mean over features of each feature's variance, in float64, a block of rows at a time."""
    total = np.zeros(x.shape[1], np.float64)
    squares = np.zeros(x.shape[1], np.float64)
    for begin in range(0, len(x), _ASSIGN_BLOCK):
        rows = x[begin : begin + _ASSIGN_BLOCK].astype(np.float64)
        total += rows.sum(0)
        squares += (rows * rows).sum(0)
    mean = total / len(x)
    return float(np.mean(np.maximum(squares / len(x) - mean * mean, 0.0)))


def _place(x: np.ndarray, mesh: Mesh | None, rules: sharding.Rules) -> tuple[jax.Array, jax.Array]:
    """Rows padded to a multiple of the data-parallel size (padding rows weigh 0), sharded by rows."""
    pad = (-len(x)) % (sharding.data_parallel_size(mesh, rules) if mesh is not None else 1)
    weights = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)]) if pad else x
    return sharding.put_rows(x, mesh, rules), sharding.put_rows(weights, mesh, rules)


def _relocate_empty(
    centroids: np.ndarray, counts: np.ndarray, dist: np.ndarray, train: np.ndarray
) -> np.ndarray:
    """Empty clusters' centroids moved onto the training vectors farthest from their own centroids
    (`dist` is -1 on padding rows, which therefore come last)."""
    empty = np.flatnonzero(counts == 0)
    if not len(empty):
        return centroids
    far = np.argsort(-dist[: len(train)], kind="stable")[: len(empty)]
    centroids = centroids.copy()
    centroids[empty[: len(far)]] = train[far]
    return centroids
