"""The per-tensor arithmetic of aya_jax.merging: float32 kernels on one tensor (or one layer slice of a stacked
leaf), and the jitted per-leaf functions that apply them, keeping the first input's sharding.

The formulas and their sources (mergekit 0.1.5's `merge_methods/`, arXiv:2403.13257, and the methods' papers)
are in aya_jax/merging/methods.py's docstring; the constants below are mergekit's. Every reduction here (norms,
dots, counts) shards: nothing gathers a tensor whole, so a leaf merges on its mesh.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

SLERP_DOT_THRESHOLD = 0.9995  # mergekit's: above it the tensors count as colinear and are lerped
SLERP_EPS = 1e-8  # tensors with a smaller L2 norm are not normalised (mergekit)
L1_RESCALE_EPS = 1e-7  # below this L1 norm (before or after the drop) no rescaling happens (mergekit)
ZERO_WEIGHT_SUM = 1e-8  # |Σ w| below this cannot be normalised by


def slerp(t: Array | float, v0: Array, v1: Array) -> Array:
    """mergekit's `slerp` on one tensor: interpolate the directions of the flattened tensors and apply the
    coefficients to the originals; lerp when |cos| > SLERP_DOT_THRESHOLD (colinear: the angle is unstable)."""
    a, b = v0.astype(jnp.float32), v1.astype(jnp.float32)
    na, nb = jnp.linalg.norm(a), jnp.linalg.norm(b)
    ua = jnp.where(na > SLERP_EPS, a / na, a)
    ub = jnp.where(nb > SLERP_EPS, b / nb, b)
    dot = jnp.sum(ua * ub)
    theta = jnp.arccos(dot)
    sin_theta = jnp.sin(theta)
    theta_t = theta * t
    s0 = jnp.sin(theta - theta_t) / sin_theta
    s1 = jnp.sin(theta_t) / sin_theta
    lerp = (1 - t) * a + t * b
    return jnp.where(jnp.abs(dot) > SLERP_DOT_THRESHOLD, lerp, s0 * a + s1 * b)


def _largest_passing(passes: Callable[[Array], Array], lo: int, hi: int) -> Array:
    """The largest int32 m in [lo, hi] with passes(m) true, for a predicate true up to some point (bisection)."""

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo + 1) // 2
        ok = passes(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    steps = max(1, math.ceil(math.log2(hi - lo + 1)) + 1)
    return jax.lax.fori_loop(0, steps, body, (jnp.int32(lo), jnp.int32(hi)))[0]


def top_magnitude_mask(delta: Array, k: int) -> Array:
    """True on the k entries of largest |delta|; equal magnitudes: the first in row-major order (as a stable
    sort keeps them). No sort: a sort of a sharded tensor gathers it whole on every device. The k-th largest
    magnitude is found by bisection over float32 bit patterns (for x ≥ 0 they order as int32) with counting
    reductions, which shard; ties at that magnitude are filled in position order by a second bisection."""
    return magnitude_mask_leaf(delta, jnp.zeros_like(delta), k=k, stacked=False, out_sharding=None)


def rescale_dropped(delta: Array, mask: Array, mode: str, density: float) -> Array:
    """The masked task vector, rescaled: "l1", "density" or "none" (aya_jax.merging's docstring)."""
    masked = delta * mask
    if mode == "none":
        return masked
    if mode == "density":
        return masked / density
    before, after = jnp.sum(jnp.abs(delta)), jnp.sum(jnp.abs(masked))
    ok = (before >= L1_RESCALE_EPS) & (after >= L1_RESCALE_EPS)
    return jnp.where(ok, masked * (before / jnp.where(ok, after, 1.0)), masked)


def elect_and_mix(weighted: Sequence[Array], weights: Sequence[Array | float]) -> tuple[Array, Array]:
    """TIES sign election over weighted task vectors: (Σ kept w_i δ_i, Σ kept w_i with 0 → 1).

    The elected sign is that of Σ w_i δ_i (≥ 0 counts as +); an entry is kept where sign(w_i δ_i) equals it,
    so dropped (zero) entries never count."""
    total = functools.reduce(jnp.add, weighted)
    elected = jnp.where(total >= 0, 1.0, -1.0)
    keeps = [(jnp.sign(wd) == elected).astype(jnp.float32) for wd in weighted]
    mixed = functools.reduce(jnp.add, [wd * k for wd, k in zip(weighted, keeps, strict=True)])
    divisor = functools.reduce(jnp.add, [w * k for w, k in zip(weights, keeps, strict=True)])
    return mixed, jnp.where(divisor == 0, 1.0, divisor)


def _task_vector_slice(
    base: Array,
    tensors: tuple[Array, ...],
    drop_masks: tuple[Array | None, ...],  # bool, True = kept; None: nothing dropped
    weights: Array,  # [n]
    lambda_: Array,  # scalar
    *,
    density: tuple[float, ...],
    sign_consensus: bool,
    normalize: bool,
    rescale: str,
) -> Array:
    b = base.astype(jnp.float32)
    weighted = []
    for i, x in enumerate(tensors):
        delta = x.astype(jnp.float32) - b
        if drop_masks[i] is not None:
            delta = rescale_dropped(delta, drop_masks[i].astype(jnp.float32), rescale, density[i])
        weighted.append(weights[i] * delta)
    if sign_consensus:
        mixed, divisor = elect_and_mix(weighted, [weights[i] for i in range(len(tensors))])
    else:
        mixed = functools.reduce(jnp.add, weighted)
        divisor = jnp.sum(weights)
        divisor = jnp.where(jnp.abs(divisor) < ZERO_WEIGHT_SUM, 1.0, divisor)
    if normalize:
        mixed = mixed / divisor
    return b + lambda_ * mixed


def kept_entries(density: float, size: int) -> int:
    return int(density * size)  # mergekit: int(density * numel) entries survive


@functools.partial(jax.jit, static_argnames=("normalize", "out_dtype", "out_sharding"))
def linear_leaf(tensors, weights, *, normalize, out_dtype, out_sharding):
    total = functools.reduce(
        jnp.add, [w * x.astype(jnp.float32) for w, x in zip(weights, tensors, strict=True)]
    )
    if normalize:
        total = total / jnp.sum(weights)
    return _constrain(total.astype(out_dtype), out_sharding)


@functools.partial(jax.jit, static_argnames=("stacked", "out_dtype", "out_sharding"))
def slerp_leaf(v0, v1, t, *, stacked, out_dtype, out_sharding):
    out = jax.vmap(slerp)(t, v0, v1) if stacked else slerp(t[0], v0, v1)
    return _constrain(out.astype(out_dtype), out_sharding)


# Drop masks are made one model at a time, in calls of their own, so their temporaries (magnitudes, positions,
# random bits) exist for one model at a time; they come out as bool (a quarter of a float32 leaf).


@functools.partial(jax.jit, static_argnames=("k", "stacked", "out_sharding"))
def magnitude_threshold_leaf(x, base, *, k, stacked, out_sharding):
    """TIES, first half: (entries above the k-th largest |x − base|, entries equal to it, how many of those
    the top k still needs, how many there are), per layer slice when stacked. Its one temporary is |x − base|."""

    def one(x, base):
        magnitude = jnp.abs(x.astype(jnp.float32) - base.astype(jnp.float32))

        def at_least(bits):  # |x − base| >= the float whose bit pattern is `bits`
            return magnitude >= jax.lax.bitcast_convert_type(bits, jnp.float32)

        threshold = _largest_passing(lambda m: jnp.sum(at_least(m)) >= k, 0, 0x7F800000)  # up to +inf
        above = magnitude > jax.lax.bitcast_convert_type(threshold, jnp.float32)
        ties = at_least(threshold) & ~above
        return above, ties, k - jnp.sum(above), jnp.sum(ties)

    above, ties, need, num_ties = jax.vmap(one)(x, base) if stacked else one(x, base)
    return _constrain(above, out_sharding), _constrain(ties, out_sharding), need, num_ties


@functools.partial(jax.jit, static_argnames=("stacked", "out_sharding"))
def fill_ties_leaf(above, ties, need, *, stacked, out_sharding):
    """TIES, second half, only when equal magnitudes straddle the cut: keep the first `need` of them in
    row-major order (what a stable sort keeps), per layer slice when stacked."""

    def one(above, ties, need):
        position = sum(
            jax.lax.broadcasted_iota(jnp.int32, ties.shape, d) * math.prod(ties.shape[d + 1 :])
            for d in range(ties.ndim)
        )
        cut = _largest_passing(lambda m: jnp.sum(ties & (position < m)) <= need, 0, ties.size)
        return above | (ties & (position < cut))

    return _constrain(jax.vmap(one)(above, ties, need) if stacked else one(above, ties, need), out_sharding)


def magnitude_mask_leaf(x: Array, base: Array, *, k: int, stacked: bool, out_sharding: Any) -> Array:
    """TIES: True on the top-k magnitudes of x − base (per layer slice when stacked)."""
    above, ties, need, num_ties = magnitude_threshold_leaf(
        x, base, k=k, stacked=stacked, out_sharding=out_sharding
    )
    if bool(jnp.all(num_ties == need)):  # the usual case: every tie at the cut is kept
        return above | ties
    return fill_ties_leaf(above, ties, need, stacked=stacked, out_sharding=out_sharding)


def bernoulli_threshold(density: float) -> int:
    """P(uniform uint32 < this) = density, to 2^-32."""
    return min(round(density * 2**32), 2**32 - 1)


@functools.partial(jax.jit, static_argnames=("density", "shape", "out_sharding"))
def bernoulli_mask_leaf(key, *, density, shape, out_sharding):
    """DARE: keep each entry with probability `density`. Row r of the leading axis (a layer of a stacked
    leaf, a vocabulary row of an embedding) keeps `bits(fold_in(key, r), row shape, uint32) <
    bernoulli_threshold(density)`, drawn an eighth of the rows at a time (lax.map) so that the random bits
    never exist for the whole leaf at once."""
    threshold = jnp.uint32(bernoulli_threshold(density))
    if not shape:  # a scalar leaf: one row of shape ()
        return jax.random.bits(jax.random.fold_in(key, 0), (), jnp.uint32) < threshold

    def row(r):
        return jax.random.bits(jax.random.fold_in(key, r), shape[1:], jnp.uint32) < threshold

    rows = jnp.arange(shape[0], dtype=jnp.uint32)
    return _constrain(jax.lax.map(row, rows, batch_size=max(1, -(-shape[0] // 8))), out_sharding)


@functools.partial(
    jax.jit,
    static_argnames=(
        "stacked",
        "density",
        "sign_consensus",
        "normalize",
        "rescale",
        "out_dtype",
        "out_sharding",
    ),
)
def task_vector_leaf(
    base,
    tensors,
    masks,
    weights,
    lambda_,
    *,
    stacked,
    density,
    sign_consensus,
    normalize,
    rescale,
    out_dtype,
    out_sharding,
):
    """θ_base + λ · (sign-elected, normalised) Σ w_i · rescaled masked δ_i; per layer slice when stacked."""
    kernel = functools.partial(
        _task_vector_slice,
        density=density,
        sign_consensus=sign_consensus,
        normalize=normalize,
        rescale=rescale,
    )
    if stacked:
        out = jax.vmap(kernel, in_axes=(0, 0, 0, None, 0))(base, tensors, masks, weights, lambda_)
    else:
        out = kernel(base, tensors, masks, weights, lambda_[0])
    return _constrain(out.astype(out_dtype), out_sharding)


def _constrain(x: Array, sharding: Any) -> Array:
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)
