"""Merge methods against NumPy re-derivations of the formulas in aya_jax/merging/methods.py's docstring (mergekit
0.1.5's semantics), and their documented properties.

The references below are written from the formulas (float64 on the float32 inputs) and take nothing from the
code under test: DARE's drop masks are regenerated from the documented recipe (ref_dare_masks) with
jax.random's bits directly.
"""

import ast
import pathlib
import zlib

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from aya_jax import sharding
from aya_jax.merging import kernels as merge_kernels
from aya_jax.merging import methods as merging

TOL = dict(rtol=1e-6, atol=1e-6)
SHAPE = (4, 6, 5)  # a stacked leaf: 4 layers of [6, 5]


def _tensors(n, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


# ------------------------------------------------------------------------------------------------------------
# NumPy references (one tensor = one layer slice)
# ------------------------------------------------------------------------------------------------------------


def ref_linear(xs, w, normalize=True):
    w = np.asarray(w, np.float64)
    out = sum(wi * x.astype(np.float64) for wi, x in zip(w, xs, strict=True))
    return out / w.sum() if normalize else out


def ref_slerp(t, v0, v1):
    a, b = v0.astype(np.float64), v1.astype(np.float64)
    ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
    dot = np.sum(ua * ub)
    if abs(dot) > 0.9995:
        return (1 - t) * a + t * b
    theta = np.arccos(dot)
    return np.sin((1 - t) * theta) / np.sin(theta) * a + np.sin(t * theta) / np.sin(theta) * b


def ref_top_k_mask(delta32, k):
    order = np.argsort(-np.abs(delta32).ravel(), kind="stable")[:k]
    mask = np.zeros(delta32.size)
    mask[order] = 1.0
    return mask.reshape(delta32.shape)


def ref_rescale(delta, mask, mode, density):
    masked = delta * mask
    if mode == "density":
        return masked / density
    if mode == "l1":
        before, after = np.abs(delta).sum(), np.abs(masked).sum()
        return masked if before < 1e-7 or after < 1e-7 else masked * before / after
    return masked


def ref_task_vectors(
    base, xs, w, *, density, drop, consensus, normalize, lam=1.0, rescale="none", masks=None
):
    """Generalised task arithmetic on one tensor. drop: None | 'magnitude' | 'bernoulli' (masks given)."""
    b = base.astype(np.float64)
    weighted = []
    for i, x in enumerate(xs):
        delta32 = x - base  # float32, as the kernel computes it (the magnitude order must match)
        delta = delta32.astype(np.float64)
        if drop == "magnitude" and density[i] < 1:
            mask = ref_top_k_mask(delta32, int(density[i] * delta32.size))  # mergekit's int(density * numel)
            delta = ref_rescale(delta, mask, rescale, density[i])
        if drop == "bernoulli" and density[i] < 1:
            delta = ref_rescale(delta, masks[i], rescale, density[i])
        weighted.append(w[i] * delta)
    weighted = np.stack(weighted)
    wts = np.asarray(w, np.float64).reshape((-1,) + (1,) * base.ndim)
    if consensus:
        elected = np.where(weighted.sum(0) >= 0, 1.0, -1.0)
        keep = np.sign(weighted) == elected
        mixed = (weighted * keep).sum(0)
        divisor = (wts * keep).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(0)
        divisor = wts.sum()
    if normalize:
        mixed = mixed / divisor
    return b + lam * mixed


def ref_dare_masks(seed, name, densities, shape):
    """The documented recipe: model i's key is fold_in(fold_in(PRNGKey(seed), crc32(name)), i); row r of the
    leading axis keeps bits(fold_in(key, r), row shape, uint32) < round(density * 2^32)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()))
    masks = []
    for i, d in enumerate(densities):
        model_key = jax.random.fold_in(key, i)
        rows = [
            np.asarray(jax.random.bits(jax.random.fold_in(model_key, r), shape[1:], np.uint32))
            for r in range(shape[0])
        ]
        masks.append((np.stack(rows).astype(np.uint64) < round(d * 2**32)).astype(np.float64))
    return masks


def per_slice(fn, *arrays):
    return np.stack([fn(*(a[i] for a in arrays)) for i in range(arrays[0].shape[0])])


# ------------------------------------------------------------------------------------------------------------
# Reference values, every method
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_matches_reference(normalize):
    xs = _tensors(3)
    w = (0.5, 0.3, 1.2)
    out = merging.merge_leaf(merging.MergeSpec("linear", 3, weights=w, normalize=normalize), "embedding", xs)
    np.testing.assert_allclose(np.asarray(out), ref_linear(xs, w, normalize), **TOL)


@pytest.mark.parametrize(
    "name",
    ["layers/attn/q_proj", "decoder/layers/cross_attn/q_proj", "embedding", "encoder/final_norm/scale"],
)
def test_slerp_matches_reference_per_layer_slice(name):
    v0, v1 = _tensors(2, seed=1)
    out = np.asarray(merging.merge_leaf(merging.MergeSpec("slerp", 2, t=0.3), name, [v0, v1]))
    if (
        "layers/" in name
    ):  # stacked (Cohere's or mT5's stacks): one angle per layer, as mergekit's per-layer tensors
        expected = per_slice(lambda a, b: ref_slerp(0.3, a, b), v0, v1)
    else:  # one tensor: one angle over all of it
        expected = ref_slerp(0.3, v0, v1)
    np.testing.assert_allclose(out, expected, **TOL)


@pytest.mark.parametrize("normalize, lam", [(False, 1.0), (True, 0.7)])
def test_task_arithmetic_matches_reference(normalize, lam):
    base, *xs = _tensors(3, seed=2)
    w = (0.6, 0.9)
    spec = merging.MergeSpec("task_arithmetic", 2, weights=w, normalize=normalize, lambda_=lam)
    out = merging.merge_leaf(spec, "embedding", xs, base)
    expected = ref_task_vectors(
        base, xs, w, density=(1, 1), drop=None, consensus=False, normalize=normalize, lam=lam
    )
    np.testing.assert_allclose(np.asarray(out), expected, **TOL)


@pytest.mark.parametrize("rescale", [None, "l1"])
def test_ties_matches_reference_per_layer_slice(rescale):
    base, *xs = _tensors(4, seed=3)
    w, d = (1.0, 0.5, 0.8), (0.5, 0.3, 0.7)
    spec = merging.MergeSpec("ties", 3, weights=w, density=d, lambda_=0.9, rescale=rescale)
    out = np.asarray(merging.merge_leaf(spec, "layers/mlp/up_proj", xs, base))
    expected = per_slice(
        lambda b, *x: ref_task_vectors(
            b,
            x,
            w,
            density=d,
            drop="magnitude",
            consensus=True,
            normalize=True,
            lam=0.9,
            rescale=rescale or "none",
        ),
        base,
        *xs,
    )
    np.testing.assert_allclose(out, expected, **TOL)


@pytest.mark.parametrize(
    "method, rescale", [("dare_linear", None), ("dare_ties", None), ("dare_ties", "density")]
)
def test_dare_matches_reference(method, rescale):
    base, *xs = _tensors(3, seed=4)
    w, d, name = (0.7, 1.3), (0.4, 0.6), "layers/attn/o_proj"
    spec = merging.MergeSpec(method, 2, weights=w, density=d, rescale=rescale, seed=11)
    out = np.asarray(merging.merge_leaf(spec, name, xs, base))
    masks = ref_dare_masks(11, name, d, SHAPE)  # over the whole leaf; rescaled per layer slice
    expected = per_slice(
        lambda b, x0, x1, m0, m1: ref_task_vectors(
            b,
            (x0, x1),
            w,
            density=d,
            drop="bernoulli",
            masks=(m0, m1),
            consensus=method == "dare_ties",
            normalize=False,
            rescale=rescale or "l1",  # the documented default for dare_*
        ),
        base,
        *xs,
        *masks,
    )
    np.testing.assert_allclose(out, expected, **TOL)


# ------------------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", merging.METHODS)
def test_merging_identical_models_returns_them(method):
    (x,) = _tensors(1, seed=5)
    n = 2
    kw = {"density": (0.5, 0.5)} if method in ("ties", "dare_linear", "dare_ties") else {}
    spec = merging.MergeSpec(method, n, weights=(0.3, 0.7), **kw)
    base = x if spec.uses_base else None
    out = np.asarray(merging.merge_leaf(spec, "layers/attn/q_proj", [x, x], base))
    if spec.uses_base:
        np.testing.assert_array_equal(out, x)  # every task vector is exactly 0
    else:
        np.testing.assert_allclose(out, x, **TOL)


def test_slerp_endpoints_are_exact_and_colinear_falls_back_to_lerp():
    v0, v1 = _tensors(2, seed=6)
    for t, want in ((0.0, v0), (1.0, v1)):
        out = merging.merge_leaf(merging.MergeSpec("slerp", 2, t=t), "embedding", [v0, v1])
        np.testing.assert_array_equal(np.asarray(out), want)
    for scale in (2.5, -1.0):  # parallel and anti-parallel: the angle is 0 or π, sin θ = 0
        out = np.asarray(
            merging.merge_leaf(merging.MergeSpec("slerp", 2, t=0.25), "embedding", [v0, scale * v0])
        )
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, 0.75 * v0.astype(np.float64) + 0.25 * scale * v0, **TOL)


def test_linear_with_weights_one_zero_returns_the_first():
    x0, x1 = _tensors(2, seed=7)
    for normalize in (True, False):
        spec = merging.MergeSpec("linear", 2, weights=(1.0, 0.0), normalize=normalize)
        np.testing.assert_array_equal(np.asarray(merging.merge_leaf(spec, "embedding", [x0, x1])), x0)


def test_ties_keeps_exactly_the_top_density_fraction_per_layer():
    base, x = _tensors(2, seed=8)
    spec = merging.MergeSpec("ties", 1, density=(0.3,))
    out = np.asarray(merging.merge_leaf(spec, "layers/mlp/down_proj", [x], base))
    delta = x - base
    for layer in range(SHAPE[0]):
        kept = out[layer] != base[layer]
        assert kept.sum() == int(0.3 * delta[layer].size)
        threshold = np.sort(np.abs(delta[layer]).ravel())[::-1][kept.sum() - 1]
        assert np.all(np.abs(delta[layer][kept]) >= threshold)  # the largest magnitudes, no others
        assert np.all(np.abs(delta[layer][~kept]) <= threshold)
        np.testing.assert_allclose(
            out[layer][kept], x[layer][kept], **TOL
        )  # kept entries unchanged (÷ w = 1)


def test_top_magnitude_mask_breaks_ties_by_position_like_a_stable_sort():
    rng = np.random.default_rng(17)
    delta = rng.choice([-1.0, 1.0, 0.5, -0.5, 0.0], size=(7, 9)).astype(np.float32)  # many equal magnitudes
    for k in (1, 10, 31, 40, 63):
        got = np.asarray(merge_kernels.top_magnitude_mask(delta, k))
        np.testing.assert_array_equal(got, ref_top_k_mask(delta, k))
        assert got.sum() == k


def test_ties_keeps_only_the_elected_signs():
    base, *xs = _tensors(4, seed=9)
    w = (1.0, 2.0, 0.5)
    spec = merging.MergeSpec("ties", 3, weights=w, density=(0.6, 0.6, 0.6))
    merged_delta = np.asarray(merging.merge_leaf(spec, "embedding", xs, base)) - base
    sparse = [ref_top_k_mask(x - base, int(0.6 * base.size)) * (x - base) for x in xs]
    elected = np.where(sum(wi * s for wi, s in zip(w, sparse, strict=True)) >= 0, 1.0, -1.0)
    nonzero = merged_delta != 0
    assert nonzero.mean() > 0.5
    assert np.all(np.sign(merged_delta[nonzero]) == elected[nonzero])


def test_dare_is_reproducible_by_seed():
    base, x0, x1 = _tensors(3, seed=10)

    def run(seed):
        spec = merging.MergeSpec("dare_linear", 2, density=(0.5, 0.5), seed=seed)
        return np.asarray(merging.merge_leaf(spec, "embedding", [x0, x1], base))

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_dare_density_rescale_preserves_the_expected_value():
    base = np.zeros((200_000,), np.float32)
    delta = np.full_like(base, 0.5)
    spec = merging.MergeSpec("dare_linear", 1, density=(0.3,), rescale="density", seed=1)
    out = np.asarray(merging.merge_leaf(spec, "embedding", [base + delta], base))
    assert set(np.unique(out).tolist()) == {0.0, np.float32(0.5 / 0.3)}
    # E[out] = 0.5: 5 standard errors of the mean (0.5 / 0.3 * sqrt(0.3 * 0.7 / n) = 0.00171) as the bound.
    assert abs(out.mean() - 0.5) < 5 * 0.5 / 0.3 * np.sqrt(0.21 / base.size)
    assert abs((out != 0).mean() - 0.3) < 0.01


def test_dare_l1_rescale_preserves_each_layers_l1_norm():
    base, x = _tensors(2, seed=12)
    spec = merging.MergeSpec("dare_linear", 1, density=(0.4,), seed=2)  # rescale default: l1
    out = np.asarray(merging.merge_leaf(spec, "layers/attn/v_proj", [x], base))
    for layer in range(SHAPE[0]):
        got = np.abs(out[layer].astype(np.float64) - base[layer]).sum()
        want = np.abs(x[layer].astype(np.float64) - base[layer]).sum()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert 0.2 < (out[layer] != base[layer]).mean() < 0.6  # entries really were dropped


# ------------------------------------------------------------------------------------------------------------
# Per-tensor parameters
# ------------------------------------------------------------------------------------------------------------


def test_rules_pick_t_by_name_and_interpolate_layer_gradients():
    rules = (
        merging.ParamRule("attn", "t", 0.0),
        merging.ParamRule("mlp", "t", (0.0, 1.0)),  # gradient over the 4 layers: t = 0, 1/3, 2/3, 1
        merging.ParamRule("", "t", 1.0),
    )
    spec = merging.MergeSpec("slerp", 2, t=0.5, rules=rules)
    v0, v1 = _tensors(2, seed=13)
    np.testing.assert_array_equal(np.asarray(merging.merge_leaf(spec, "layers/attn/k_proj", [v0, v1])), v0)
    np.testing.assert_array_equal(np.asarray(merging.merge_leaf(spec, "final_norm/scale", [v0, v1])), v1)
    out = np.asarray(merging.merge_leaf(spec, "layers/mlp/gate_proj", [v0, v1]))
    for layer, t in enumerate((0.0, 1 / 3, 2 / 3, 1.0)):
        np.testing.assert_allclose(out[layer], ref_slerp(t, v0[layer], v1[layer]), **TOL)


def test_unrolled_layers_sit_on_the_gradient_by_index():
    v0, v1 = _tensors(2, shape=(6, 5), seed=14)
    spec = merging.MergeSpec("slerp", 2, rules=(merging.ParamRule("", "t", (0.2, 0.8)),))
    trees = [{f"layers_{i}": {"w": v} for i in range(3)} for v in (v0, v1)]
    out = merging.merge_pytrees(spec, trees)
    for i, t in enumerate((0.2, 0.5, 0.8)):
        np.testing.assert_allclose(np.asarray(out[f"layers_{i}"]["w"]), ref_slerp(t, v0, v1), **TOL)


def test_rules_give_per_model_weights_and_densities():
    base, x0, x1 = _tensors(3, seed=15)
    rules = (
        merging.ParamRule("embedding", "weight", (1.0, 0.0)),
        merging.ParamRule("", "density", (0.5, 0.2)),
    )
    spec = merging.MergeSpec("ties", 2, weights=(0.5, 0.5), rules=rules)
    out = np.asarray(merging.merge_leaf(spec, "embedding", [x0, x1], base))
    expected = ref_task_vectors(
        base, (x0, x1), (1.0, 0.0), density=(0.5, 0.2), drop="magnitude", consensus=True, normalize=True
    )
    np.testing.assert_allclose(out, expected, **TOL)


def test_describe_parameters_reports_globals_and_the_rules_as_applied():
    shapes = {
        "embedding": (10, 4),
        "layers/attn/q_proj": (3, 4, 2),
        "layers/mlp/up_proj": (3, 4, 6),
        "final_norm/scale": (4,),
    }
    rules = (
        merging.ParamRule("mlp", "density", 0.3),
        merging.ParamRule("", "density", (0.9, 0.8)),
        merging.ParamRule("attn", "lambda", (0.0, 1.0)),  # a gradient over the 3 layers
        merging.ParamRule("nothing", "lambda", 2.0),  # matches no leaf
        merging.ParamRule("attn", "t", 0.1),  # ties does not read t
    )
    spec = merging.MergeSpec("ties", 2, weights=(0.6, 0.4), density=(0.5, 0.7), rules=rules)
    used = merging.describe_parameters(spec, shapes)
    assert used["normalize"] is True and used["rescale"] == "none" and "t" not in used
    assert used["weight"] == {"global": [0.6, 0.4], "leaves": 4, "rules": []}
    density = used["density"]
    assert density["global"] == [0.5, 0.7] and density["leaves"] == 0  # every leaf has a rule
    assert density["rules"] == [
        {
            "index": 0,
            "filter": "mlp",
            "value": 0.3,
            "leaves": ["layers/mlp/up_proj"],
            "per_model": [0.3, 0.3],
        },
        {
            "index": 1,
            "filter": "",
            "value": [0.9, 0.8],
            "leaves": ["embedding", "layers/attn/q_proj", "final_norm/scale"],
            "per_model": [0.9, 0.8],
        },
    ]
    lam = used["lambda"]
    assert lam["global"] == 1.0 and lam["leaves"] == 3
    assert lam["rules"][0]["leaves"] == ["layers/attn/q_proj"]
    assert lam["rules"][0]["per_layer"] == {"layers/attn/q_proj": [0.0, 0.5, 1.0]}
    assert lam["rules"][1]["leaves"] == [] and "per_layer" not in lam["rules"][1]
    assert used["ignored_rules"] == [{"index": 4, "filter": "attn", "parameter": "t", "value": 0.1}]


# ------------------------------------------------------------------------------------------------------------
# Pytrees and shardings
# ------------------------------------------------------------------------------------------------------------


def test_merge_pytrees_keeps_structure_and_sharding_and_dare_ignores_the_mesh():
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    sh = NamedSharding(mesh, PartitionSpec(None, "fsdp", "tensor"))
    base, x0, x1 = _tensors(3, shape=(2, 8, 4), seed=16)
    trees = [{"layers": {"w": x}, "norm": {"scale": x[0, 0]}} for x in (x0, x1)]
    base_tree = {"layers": {"w": base}, "norm": {"scale": base[0, 0]}}
    spec = merging.MergeSpec("dare_ties", 2, density=(0.5, 0.5), seed=5)
    host = merging.merge_pytrees(spec, trees, base_tree)
    sharded_trees = [
        {"layers": {"w": jax.device_put(t["layers"]["w"], sh)}, "norm": t["norm"]} for t in trees
    ]
    sharded_base = {"layers": {"w": jax.device_put(base, sh)}, "norm": base_tree["norm"]}
    on_mesh = merging.merge_pytrees(spec, sharded_trees, sharded_base)
    assert jax.tree.structure(on_mesh) == jax.tree.structure(trees[0])
    assert on_mesh["layers"]["w"].sharding.spec == sh.spec
    for a, b, c in zip(
        jax.tree.leaves(host), jax.tree.leaves(on_mesh), jax.tree.leaves(base_tree), strict=True
    ):
        # The same entries dropped on any mesh; the values only differ by the order of the L1 sums.
        np.testing.assert_array_equal(np.asarray(a) == c, np.asarray(b) == c)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def test_ties_on_a_sharded_leaf_matches_the_reference():
    """The top-k threshold is found by counting reductions across the shards (no gather, no sort)."""
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    sh = NamedSharding(mesh, PartitionSpec("tensor", "fsdp"))
    rng = np.random.default_rng(18)
    # Multiples of 1/8, so every task vector is exact and many magnitudes are equal across shards: the
    # top-k cut falls inside a group of ties, broken by position.
    base = (np.round(rng.standard_normal((16, 12)) * 8) / 8).astype(np.float32)
    x0, x1 = (
        base + rng.choice([-1.0, -0.5, 0.25, 0.5, 1.0], size=base.shape).astype(np.float32) for _ in range(2)
    )
    spec = merging.MergeSpec("ties", 2, weights=(1.0, 0.6), density=(0.3, 0.45))
    out = merging.merge_leaf(
        spec, "embedding", [jax.device_put(x, sh) for x in (x0, x1)], jax.device_put(base, sh)
    )
    assert out.sharding.spec == sh.spec
    expected = ref_task_vectors(
        base, (x0, x1), (1.0, 0.6), density=(0.3, 0.45), drop="magnitude", consensus=True, normalize=True
    )
    np.testing.assert_allclose(np.asarray(out), expected, **TOL)


# ------------------------------------------------------------------------------------------------------------
# Errors: one line each, naming the parameter or the tensor
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="linear", num_models=2, weights=(1.0, -1.0)), "weights: (1.0, -1.0) sum to 0"),
        (dict(method="task_arithmetic", num_models=2, weights=(2.0, -2.0), normalize=True), "sum to 0"),
        (dict(method="slerp", num_models=3), "slerp merges exactly 2 models, got 3"),
        (dict(method="ties", num_models=1, density=(0.0,)), "density: 0.0 is outside (0, 1]"),
        (dict(method="dare_ties", num_models=1, density=(1.5,)), "density: 1.5 is outside (0, 1]"),
        (dict(method="linear", num_models=1, density=(0.5,)), "linear does not sparsify"),
        (dict(method="ties", num_models=1, rescale="l2"), "rescale: 'l2' is not one of"),
        (dict(method="foo", num_models=1), "unknown merge method 'foo'"),
        (
            dict(method="ties", num_models=2, rules=(merging.ParamRule("", "density", (0.5, 2.0)),)),
            "density for '') : 2.0 is outside",
        ),
        (
            dict(method="slerp", num_models=2, rules=(merging.ParamRule("x", "alpha", 1.0),)),
            "unknown parameter 'alpha'",
        ),
    ],
)
def test_invalid_specs_fail_with_one_line(kwargs, message):
    with pytest.raises(merging.MergeError) as e:
        merging.MergeSpec(**kwargs)
    assert message.replace("') :", "'):") in str(e.value)
    assert "\n" not in str(e.value)


def test_ties_with_negative_weights_summing_to_zero_is_allowed():
    merging.MergeSpec("ties", 2, weights=(1.0, -1.0))  # TIES divides per entry (0 -> 1), mergekit too


def test_mismatched_shapes_and_trees_name_the_first_offending_tensor():
    a = {"embedding": np.zeros((8, 4), np.float32), "layers": {"w": np.zeros((2, 4), np.float32)}}
    b = {"embedding": np.zeros((9, 4), np.float32), "layers": {"w": np.zeros((2, 4), np.float32)}}
    with pytest.raises(
        merging.MergeError,
        match=r"^embedding: shape \(8, 4\) in model 0 but \(9, 4\) in model 1 \(different vocab",
    ):
        merging.merge_pytrees(merging.MergeSpec("linear", 2), [a, b])
    c = {"embedding": a["embedding"], "layers": {"v": a["layers"]["w"]}}
    with pytest.raises(merging.MergeError, match=r"^layers/w: in model 0 but missing from model 1"):
        merging.merge_pytrees(merging.MergeSpec("linear", 2), [a, c])
    with pytest.raises(merging.MergeError, match="base_model: ties needs a base model"):
        merging.merge_leaf(merging.MergeSpec("ties", 1), "embedding", [a["embedding"]])
    with pytest.raises(merging.MergeError, match="density: 0.01 for model 0 keeps no entry of layers/w"):
        merging.merge_leaf(
            merging.MergeSpec("ties", 1, density=(0.01,)), "layers/w", [a["layers"]["w"]], a["layers"]["w"]
        )


def test_merging_modules_import_aya_jax_at_module_level_only():
    """No aya_jax import hides inside a function of aya_jax/merging (a cycle dodged that way stays hidden)."""
    paths = sorted((pathlib.Path(__file__).resolve().parents[2] / "aya_jax" / "merging").glob("*.py"))
    assert len(paths) >= 4, paths  # the package's files, not an empty glob
    for path in paths:
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        nested = [
            node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top
        ]
        assert not [m for m in nested if m and m.startswith("aya_jax")], (path.name, nested)
