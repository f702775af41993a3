"""Weight-space model merging on arrays and pytrees, with the semantics of mergekit 0.1.5 (arXiv:2403.13257;
its `merge_methods/`), against which all six methods were checked.

Sources: weight averaging of fine-tuned models (model soups, arXiv:2203.05482; Aya Expanse averages and merges
checkpoints, arXiv:2412.04261); SLERP (Shoemake 1985, as mergekit applies it to flattened tensors); task
arithmetic (arXiv:2212.04089); TIES-Merging (arXiv:2306.01708); DARE (arXiv:2311.03099).

Methods (one tensor per model; `θ_i` the inputs, `θ_b` the base model, `δ_i = θ_i − θ_b` the task vectors):

    linear           Σ w_i θ_i, divided by Σ w_i when `normalize` (default true)
    slerp            two models, t ∈ [0, 1]: spherical interpolation of the flattened tensors (lerp when nearly
                     colinear, |cos| > 0.9995); t = 0 gives the first model
    task_arithmetic  θ_b + λ Σ w_i δ_i                                   (normalize: ÷ Σ w_i, default false)
    ties             δ_i keeps its top-`density` entries by magnitude; elected sign = sign(Σ w_i δ_i) (0 counts
                     as +); entries disagreeing with it are dropped; θ_b + λ Σ w_i δ_i·keep_i / Σ w_i·keep_i
                     (the divisor is per entry, 0 → 1; normalize default true)
    dare_linear      δ_i keeps each entry with probability `density` (Bernoulli), rescaled; then as task_arithmetic
    dare_ties        the same drop and rescale, then TIES' sign election (normalize default false)

DARE rescaling (`rescale`): "l1" (default for dare_*; what mergekit does now) multiplies the kept entries so the
tensor's L1 norm equals the undropped one's; "density" (the DARE paper) divides by `density`, so the expected
value of every entry is unchanged; "none" keeps the dropped tensor as is. ties defaults to "none" (mergekit's
`rescale: false`); any mode may be chosen for either method.

What is one "tensor". mergekit merges Hugging Face tensors, one per layer. Our scanned models stack the layers
of a weight on a leading axis (`nn.scan`); leaves with one of `stacked_prefixes` at the start of their name or
of a path component (`layers/...` of a Cohere decoder, `encoder/layers/...` and `decoder/layers/...` of mT5) are
merged slice by slice along that axis, so SLERP's angle, TIES' top-k and DARE's L1 norm are per layer as in
mergekit. A layer gradient positions each stack's layers on its own (mT5's encoder and decoder each span it).

Per-tensor parameters (mergekit's `filter:` conditions). `rules` is a sequence of `ParamRule(filter, name,
value)`; for each parameter the first rule whose `filter` is a substring of the tensor name ("" matches all)
wins, else the global value. Names are the '/'-joined pytree path, e.g. `layers/attn/q_proj`,
`layers/mlp/gate_proj`, `embedding`. `t` and `lambda` may be a layer gradient (a tuple of values interpolated
over the layers, mergekit's formula: layer i of L sits at i / (L − 1); tensors outside the layers use the first
value); `weight` and `density` take one value for every model or a tuple with one value per model.

DARE's randomness is a pure function of (seed, tensor name, model index, row): model i's key is
fold_in(fold_in(PRNGKey(seed), crc32(name)), i), and row r of the leaf's leading axis keeps the entries where
jax.random.bits(fold_in(key, r), row shape, uint32) < round(density · 2^32). The same seed gives the same
merge in memory or streamed leaf by leaf, on any mesh (jax's partitionable threefry).

Departures from mergekit, each one a clear error instead of a silent result: normalised weights that sum to 0
(mergekit silently uses 1, or divides by 0 in `linear`); TIES densities that keep no entry of a tensor
(mergekit asserts); mismatched shapes (mergekit skips the tensor or truncates embeddings; see
`check_compatible`). All arithmetic is float32 whatever the inputs' dtype; the result takes the dtype of the
base model (task-vector methods) or of the first model (linear, slerp).
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aya_jax.merging import kernels as merge_kernels

Array = jax.Array

METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties")
RESCALE_MODES = ("l1", "density", "none")
RULE_PARAMS = ("t", "lambda", "weight", "density")
ZERO_WEIGHT_SUM = merge_kernels.ZERO_WEIGHT_SUM


class MergeError(ValueError):
    """A merge that cannot be done; the message starts with the parameter or tensor at fault."""


@dataclasses.dataclass(frozen=True)
class _MethodTraits:
    uses_base: bool
    sparsify: str | None  # None | "magnitude" (TIES) | "bernoulli" (DARE)
    sign_consensus: bool
    normalize: bool  # default
    rescale: str  # default


_TRAITS = {
    "linear": _MethodTraits(False, None, False, True, "none"),
    "slerp": _MethodTraits(False, None, False, False, "none"),
    "task_arithmetic": _MethodTraits(True, None, False, False, "none"),
    "ties": _MethodTraits(True, "magnitude", True, True, "none"),
    "dare_linear": _MethodTraits(True, "bernoulli", False, False, "l1"),
    "dare_ties": _MethodTraits(True, "bernoulli", True, False, "l1"),
}


def uses_base_model(method: str) -> bool:
    """Task-vector methods need a base model; linear and slerp don't."""
    return _TRAITS[method].uses_base


def used_params(method: str) -> tuple[str, ...]:
    """The RULE_PARAMS a method reads: slerp t; linear the weights; task-vector methods the weights and
    lambda, and density when they sparsify."""
    if method == "slerp":
        return ("t",)
    if not _TRAITS[method].uses_base:
        return ("weight",)
    return ("weight", "density", "lambda") if _TRAITS[method].sparsify else ("weight", "lambda")


@dataclasses.dataclass(frozen=True)
class ParamRule:
    """mergekit's `{filter: ..., value: ...}` condition for one parameter (see the module docstring)."""

    filter: str  # substring of the tensor name; "" or "*" matches every tensor
    name: str  # one of RULE_PARAMS
    value: float | tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class MergeSpec:
    """What to merge and how. `num_models` counts the merged models, not the base of task-vector methods."""

    method: str
    num_models: int
    weights: tuple[float, ...] = ()  # one per model; () = 1.0 each
    density: tuple[float, ...] = ()  # one per model, in (0, 1]; () = 1.0 each (no sparsification)
    t: float = 0.5  # slerp
    lambda_: float = 1.0  # mergekit's `lambda`: scales the merged task vector
    normalize: bool | None = None  # None: the method's default
    rescale: str | None = None  # None: the method's default (see RESCALE_MODES)
    seed: int = 0  # DARE's drop masks
    rules: tuple[ParamRule, ...] = ()
    stacked_prefixes: tuple[str, ...] = ("layers/",)  # leaves with a leading layer axis (nn.scan): is_stacked

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MergeError(f"method: unknown merge method {self.method!r} (known: {', '.join(METHODS)})")
        n = self.num_models
        if n < 1:
            raise MergeError(f"models: {self.method} needs at least one model to merge, got {n}")
        if self.method == "slerp" and n != 2:
            raise MergeError(f"models: slerp merges exactly 2 models, got {n}")
        if self.weights and len(self.weights) != n:
            raise MergeError(f"weights: {len(self.weights)} weights for {n} models")
        if self.density and len(self.density) != n:
            raise MergeError(f"density: {len(self.density)} densities for {n} models")
        if self.rescale is not None and self.rescale not in RESCALE_MODES:
            raise MergeError(f"rescale: {self.rescale!r} is not one of {', '.join(RESCALE_MODES)}")
        if not math.isfinite(self.t) or not math.isfinite(self.lambda_):
            raise MergeError(f"t / lambda_: must be finite, got t={self.t}, lambda_={self.lambda_}")
        self._check_weights(self.model_weights(), "weights")
        self._check_density(self.model_density(), "density")
        for i, rule in enumerate(self.rules):
            self._check_rule(i, rule)

    # -- resolved defaults ---------------------------------------------------------------------------------
    @property
    def traits(self) -> _MethodTraits:
        return _TRAITS[self.method]

    @property
    def uses_base(self) -> bool:
        return self.traits.uses_base

    @property
    def effective_normalize(self) -> bool:
        return self.traits.normalize if self.normalize is None else bool(self.normalize)

    @property
    def effective_rescale(self) -> str:
        return self.traits.rescale if self.rescale is None else self.rescale

    def model_weights(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self.weights) if self.weights else (1.0,) * self.num_models

    def model_density(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self.density) if self.density else (1.0,) * self.num_models

    # -- validation ----------------------------------------------------------------------------------------
    def _check_weights(self, weights: tuple[float, ...], field: str) -> None:
        if not all(math.isfinite(w) for w in weights):
            raise MergeError(f"{field}: weights must be finite, got {weights}")
        sums_matter = self.method == "linear" or (
            self.uses_base and not self.traits.sign_consensus  # TIES divides per entry, 0 -> 1
        )
        if sums_matter and self.effective_normalize and abs(sum(weights)) < ZERO_WEIGHT_SUM:
            raise MergeError(
                f"{field}: {weights} sum to 0, but normalize=True divides by the sum "
                "(set normalize=False or change the weights)"
            )

    def _check_density(self, density: tuple[float, ...], field: str) -> None:
        for d in density:
            if not (0.0 < d <= 1.0):
                raise MergeError(f"{field}: {d} is outside (0, 1]")
        if any(d < 1.0 for d in density) and self.traits.sparsify is None:
            raise MergeError(f"{field}: {self.method} does not sparsify; density < 1 needs ties or dare_*")

    def _check_rule(self, i: int, rule: ParamRule) -> None:
        where = f"rules[{i}]"
        if rule.name not in RULE_PARAMS:
            raise MergeError(f"{where}: unknown parameter {rule.name!r} (one of {', '.join(RULE_PARAMS)})")
        values = rule.value if isinstance(rule.value, tuple) else (rule.value,)
        if not values or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise MergeError(f"{where}: value {rule.value!r} must be a number or a tuple of numbers")
        if rule.name in ("weight", "density"):
            if isinstance(rule.value, tuple) and len(rule.value) != self.num_models:
                raise MergeError(
                    f"{where}: {rule.name} takes one value or one per model ({self.num_models}), got {rule.value!r}"
                )
            per_model = self._per_model(rule.value)
            if rule.name == "weight":
                self._check_weights(per_model, f"{where} (weight for {rule.filter!r})")
            else:
                self._check_density(per_model, f"{where} (density for {rule.filter!r})")

    def _per_model(self, value: float | tuple[float, ...]) -> tuple[float, ...]:
        return (
            tuple(float(v) for v in value) if isinstance(value, tuple) else (float(value),) * self.num_models
        )


# ============================================================================================================
# Per-tensor parameters
# ============================================================================================================


@dataclasses.dataclass(frozen=True)
class TensorParams:
    """The parameters one leaf is merged with; `t` and `lambda_` have one value per layer slice."""

    weights: tuple[float, ...]
    density: tuple[float, ...]
    t: tuple[float, ...]
    lambda_: tuple[float, ...]


def matching_rule(spec: MergeSpec, name: str, param: str) -> int | None:
    """Index of the rule that sets `param` for the tensor `name` (the first whose filter matches), or None."""
    for i, rule in enumerate(spec.rules):
        if rule.name == param and (rule.filter in ("", "*") or rule.filter in name):
            return i
    return None


def _rule_value(spec: MergeSpec, name: str, param: str) -> float | tuple[float, ...] | None:
    i = matching_rule(spec, name, param)
    return None if i is None else spec.rules[i].value


def _gradient(value: float | tuple[float, ...], fraction: float) -> float:
    """mergekit's `evaluate_setting`: a tuple is a gradient, linearly interpolated at `fraction` ∈ [0, 1]."""
    if not isinstance(value, tuple):
        return float(value)
    scaled = fraction * (len(value) - 1)
    i0 = int(scaled)
    i1 = min(len(value) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * float(value[i0]) + frac * float(value[i1])


_UNROLLED_LAYER = re.compile(r"(?:^|/)layers_(\d+)/")


def is_stacked(spec: MergeSpec, name: str) -> bool:
    """A leaf with a leading layer axis: a `stacked_prefixes` entry starts its name or one of its components."""
    return any(name.startswith(p) or f"/{p}" in name for p in spec.stacked_prefixes)


def layer_fractions(
    spec: MergeSpec, name: str, shape: Sequence[int], num_unrolled_layers: int
) -> tuple[float, ...]:
    """Where each slice of a leaf sits in the layer stack, as mergekit positions gradients: layer i of L at
    i / (L − 1) (1 when L = 1); tensors outside the layers at 0. Stacked leaves have one entry per slice."""

    def position(i: int, count: int) -> float:
        return i / (count - 1) if count > 1 else 1.0

    if is_stacked(spec, name):
        if not shape:
            raise MergeError(f"{name}: a stacked leaf (prefix {spec.stacked_prefixes}) needs a layer axis")
        return tuple(position(i, shape[0]) for i in range(shape[0]))
    match = _UNROLLED_LAYER.search(name)
    if match:
        return (position(int(match.group(1)), num_unrolled_layers),)
    return (0.0,)


def count_unrolled_layers(names: Sequence[str]) -> int:
    """Number of `layers_N` blocks in a tree of unrolled layers (0 when the layers are scanned)."""
    found = {int(m.group(1)) for m in map(_UNROLLED_LAYER.search, names) if m}
    return max(found) + 1 if found else 0


def tensor_params(spec: MergeSpec, name: str, fractions: Sequence[float]) -> TensorParams:
    """Resolve the global values and the first matching rule of each parameter for the tensor `name`."""

    def scalar_or_gradient(param: str, default: float) -> tuple[float, ...]:
        value = _rule_value(spec, name, param)
        value = default if value is None else value
        return tuple(_gradient(value, f) for f in fractions)

    weights = _rule_value(spec, name, "weight")
    density = _rule_value(spec, name, "density")
    return TensorParams(
        weights=spec.model_weights() if weights is None else spec._per_model(weights),
        density=spec.model_density() if density is None else spec._per_model(density),
        t=scalar_or_gradient("t", spec.t),
        lambda_=scalar_or_gradient("lambda", spec.lambda_),
    )


def describe_parameters(
    spec: MergeSpec, shapes: Mapping[str, Sequence[int]], num_unrolled_layers: int = 0
) -> dict[str, Any]:
    """The parameters a merge of the leaves `shapes` ({name: shape}) applies, resolved as `merge_leaf` resolves
    them (JSON-ready). The method's `normalize` (and `rescale` when it sparsifies); then for each parameter the
    method reads (`used_params`):

        {"global": the spec's value (weight, density: one per model),
         "leaves": how many leaves are merged with it,
         "rules": [{"index", "filter", "value", "leaves": [the leaves this rule sets, being their first match],
                    "per_model": [...] (weight, density), "per_layer": {leaf: [one value per layer slice]} (t,
                    lambda given as a layer gradient)}, ...]}

    A rule that no leaf takes (its filter matches nothing, or earlier rules win) has "leaves": []. Rules of
    parameters the method does not read are listed under "ignored_rules"."""
    out: dict[str, Any] = {}
    if spec.method != "slerp":
        out["normalize"] = spec.effective_normalize
    if spec.traits.sparsify:
        out["rescale"] = spec.effective_rescale
    used = used_params(spec.method)
    fractions = {n: layer_fractions(spec, n, shape, num_unrolled_layers) for n, shape in shapes.items()}
    for param in used:
        per_model = param in ("weight", "density")
        if param == "weight":
            value: Any = list(spec.model_weights())
        elif param == "density":
            value = list(spec.model_density())
        else:
            value = spec.t if param == "t" else spec.lambda_
        rules = {
            i: {"index": i, "filter": r.filter, "value": _jsonable(r.value), "leaves": []}
            for i, r in enumerate(spec.rules)
            if r.name == param
        }
        for i, entry in rules.items():
            if per_model:
                entry["per_model"] = list(spec._per_model(spec.rules[i].value))
            elif isinstance(spec.rules[i].value, tuple):
                entry["per_layer"] = {}
        global_leaves = 0
        for name in shapes:
            i = matching_rule(spec, name, param)
            if i is None:
                global_leaves += 1
                continue
            rules[i]["leaves"].append(name)
            if "per_layer" in rules[i]:
                resolved = tensor_params(spec, name, fractions[name])
                rules[i]["per_layer"][name] = list(resolved.t if param == "t" else resolved.lambda_)
        out[param] = {"global": value, "leaves": global_leaves, "rules": list(rules.values())}
    ignored = [
        {"index": i, "filter": r.filter, "parameter": r.name, "value": _jsonable(r.value)}
        for i, r in enumerate(spec.rules)
        if r.name not in used
    ]
    if ignored:
        out["ignored_rules"] = ignored
    return out


def _jsonable(value: float | tuple[float, ...]) -> float | list[float]:
    return [float(v) for v in value] if isinstance(value, tuple) else float(value)


def dare_key(seed: int, name: str, model_index: int) -> Array:
    """The drop-mask key of one model's task vector for one leaf (module docstring): independent of leaf
    order, streaming and sharding."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()))
    return jax.random.fold_in(key, model_index)


# ============================================================================================================
# Leaves and pytrees
# ============================================================================================================


def check_compatible(name: str, shapes: Sequence[tuple[int, ...]], labels: Sequence[str]) -> None:
    """All models must have the same shape for a tensor; else one line naming it (and the vocabulary hint)."""
    for shape, label in zip(shapes[1:], labels[1:], strict=True):
        if tuple(shape) != tuple(shapes[0]):
            hint = (
                " (different vocabularies cannot be merged)" if "embed" in name or "lm_head" in name else ""
            )
            raise MergeError(
                f"{name}: shape {tuple(shapes[0])} in {labels[0]} but {tuple(shape)} in {label}{hint}"
            )


def merge_leaf(
    spec: MergeSpec,
    name: str,
    tensors: Sequence[Array],
    base: Array | None = None,
    *,
    num_unrolled_layers: int = 0,
) -> Array:
    """Merge one leaf of every model (and of the base model for task-vector methods). The result keeps the
    sharding of the first input (jax arrays) and the dtype of the base (or first) model."""
    if len(tensors) != spec.num_models:
        raise MergeError(f"{name}: {len(tensors)} tensors for a merge of {spec.num_models} models")
    if spec.uses_base and base is None:
        raise MergeError(f"base_model: {spec.method} needs a base model (task vectors are θ_i − θ_base)")
    if not spec.uses_base and base is not None:
        raise MergeError(f"base_model: {spec.method} does not use a base model")
    tensors = tuple(jnp.asarray(x) for x in tensors)
    base = None if base is None else jnp.asarray(base)
    reference = tensors if base is None else (base, *tensors)
    labels = [f"model {i}" for i in range(len(tensors))]
    check_compatible(
        name, [x.shape for x in reference], labels if base is None else ["the base model", *labels]
    )
    for x in reference:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise MergeError(f"{name}: dtype {x.dtype} is not floating point; only parameters can be merged")
    first = reference[0]
    fractions = layer_fractions(spec, name, first.shape, num_unrolled_layers)
    params = tensor_params(spec, name, fractions)
    stacked = is_stacked(spec, name)
    out_sharding = first.sharding if isinstance(first.sharding, jax.sharding.NamedSharding) else None
    common = dict(out_dtype=first.dtype, out_sharding=out_sharding)
    weights = jnp.asarray(params.weights, jnp.float32)
    if spec.method == "linear":
        return merge_kernels.linear_leaf(tensors, weights, normalize=spec.effective_normalize, **common)
    if spec.method == "slerp":
        return merge_kernels.slerp_leaf(
            *tensors, jnp.asarray(params.t, jnp.float32), stacked=stacked, **common
        )
    per_tensor = math.prod(first.shape[1:]) if stacked else math.prod(first.shape)
    masks = []
    for i, (x, d) in enumerate(zip(tensors, params.density, strict=True)):
        if d >= 1.0 or spec.traits.sparsify is None:
            masks.append(None)
        elif spec.traits.sparsify == "magnitude":
            k = merge_kernels.kept_entries(d, per_tensor)
            if k == 0:
                raise MergeError(
                    f"density: {d} for model {i} keeps no entry of {name} ({per_tensor} entries per tensor)"
                )
            masks.append(
                merge_kernels.magnitude_mask_leaf(x, base, k=k, stacked=stacked, out_sharding=out_sharding)
            )
        else:
            key = dare_key(spec.seed, name, i)
            masks.append(
                merge_kernels.bernoulli_mask_leaf(
                    key, density=d, shape=first.shape, out_sharding=out_sharding
                )
            )
    return merge_kernels.task_vector_leaf(
        base,
        tensors,
        tuple(masks),
        weights,
        jnp.asarray(params.lambda_, jnp.float32),
        stacked=stacked,
        density=params.density,
        sign_consensus=spec.traits.sign_consensus,
        normalize=spec.effective_normalize,
        rescale=spec.effective_rescale,
        **common,
    )


def leaf_name(path: Sequence[Any]) -> str:
    """'/'-joined pytree path: ('layers', 'attn', 'q_proj') -> 'layers/attn/q_proj'."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def flatten(tree: Any) -> dict[str, Any]:
    return {leaf_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_same_structure(names: Sequence[Sequence[str]], labels: Sequence[str]) -> None:
    """Every model must have the same tensors; else one line naming the first one missing or extra."""
    reference = list(names[0])
    ref_set = set(reference)
    for other, label in zip(names[1:], labels[1:], strict=True):
        other_set = set(other)
        missing = [n for n in reference if n not in other_set]
        if missing:
            raise MergeError(
                f"{missing[0]}: in {labels[0]} but missing from {label} (different architectures)"
            )
        extra = [n for n in other if n not in ref_set]
        if extra:
            raise MergeError(f"{extra[0]}: in {label} but missing from {labels[0]} (different architectures)")


def merge_pytrees(
    spec: MergeSpec,
    trees: Sequence[Any],
    base: Any | None = None,
    on_leaf: Callable[[str, Array], None] | None = None,
) -> Any:
    """Merge whole in-memory pytrees leaf by leaf (the streaming job merges the same way, one leaf at a time
    read from the checkpoints). Returns a pytree shaped like `trees[0]`."""
    if len(trees) != spec.num_models:
        raise MergeError(f"models: {len(trees)} pytrees for a merge of {spec.num_models} models")
    flats = [flatten(t) for t in trees]
    flat_base = flatten(base) if base is not None else None
    labels = [f"model {i}" for i in range(len(trees))]
    all_flats = flats if flat_base is None else [flat_base, *flats]
    check_same_structure(
        [list(f) for f in all_flats], labels if flat_base is None else ["the base model", *labels]
    )
    num_layers = count_unrolled_layers(list(flats[0]))
    merged = {}
    for name in flats[0]:
        merged[name] = merge_leaf(
            spec,
            name,
            [f[name] for f in flats],
            None if flat_base is None else flat_base[name],
            num_unrolled_layers=num_layers,
        )
        if on_leaf is not None:
            on_leaf(name, merged[name])
    leaves = [merged[leaf_name(p)] for p, _ in jax.tree_util.tree_flatten_with_path(trees[0])[0]]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(trees[0]), leaves)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """'a/b/c' -> value mapping back to nested dicts (the layout orbax saves params in)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def num_elements(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
