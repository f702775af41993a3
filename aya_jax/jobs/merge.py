"""The merge job: stream a weight-space merge (aya_jax/merging/methods.py) out of orbax checkpoints into a new one.

    python -m aya_jax.main --config configs/merge.py:ties --config.merge.models='("runs/ar","runs/hi")' \
        --config.merge.base_model=runs/base --workdir workdirs/merged

Inputs. Each entry of `config.merge.models` (and `base_model`) is an aya_jax run directory (`<workdir>`, its
`checkpoints/` or one step directory `checkpoints/<step>`; the newest step unless a step directory is given)
or a Hugging Face directory (read through `aya_jax.hf`, in float32). `merge.last_steps = N` with a single run
merges that run's newest N checkpoints (checkpoint averaging). A base model that is also listed among the
models is left out of them, with its weight and density (mergekit does the same: a task vector of the base is 0).

Per-model parameters, as mergekit's `models: [{model: ..., parameters: {weight: ..., density: ...}}]` gives
them: `merge.weights` is a tuple with one weight per model (after last_steps expansion; () = 1.0 each), and
`merge.density` is one density for every model or a tuple with one per model. Per-tensor values (mergekit's
`filter:` conditions) are `merge.rules` (aya_jax/merging/methods.py).

Streaming. Only `params` are read, one leaf at a time from every input (orbax partial restore), merged, and
written out as it comes (orbax partial saves; small leaves grouped up to a quarter of the largest), so memory
holds one leaf per input, the merged leaf and the copies a read or a save makes — a few leaves, not whole
models (benchmarks/merge.py; tests/jobs/test_merge.py checks that the peak does not grow with depth). The
peak resident host memory is measured (aya_jax/merging/host_memory.py: Linux VmHWM, reset when the merge starts)
and reported. Each leaf is restored onto `config.mesh` with the partition spec it was saved with (the training
run's layout; mesh axes missing from the new mesh are replicated), so the merge runs sharded and is written
sharded. A scanned model stacks its layers in one leaf per weight: there the unit of streaming is that stacked
leaf.

Output: `<workdir>/checkpoints/0/{state,data}` in the trainers' layout, where `state` holds
`{step: 0, params, rng: PRNGKey(config.seed)}` and *no optimiser state* (a merged model starts a new
optimisation; keeping the inputs' moments would be meaningless): read it with `checkpoint.load_params` /
`config.checkpoint.init_from`, not as a run to resume. Each merged leaf has the dtype of the base model's
(task-vector methods) or the first model's leaf.

`<workdir>/merge_report.json` records the inputs (with each model's weight, and density when the method
sparsifies), the method, parameters/s, the peak host memory, and under "parameters_used" the parameters as the
merge applied them (`merging.describe_parameters`): `normalize` / `rescale`, and for each parameter the method
reads (weight, density, t, lambda) its global value, how many leaves took it, and every rule that overrides it —
filter, value, the leaves it set, and the resolved per-model values (weight, density) or per-layer values (a
t / lambda gradient) — rules the method ignores under "ignored_rules". With `merge.eval_batches > 0` it adds
the per-language held-out loss of every input and of the merge, computed with the SFT trainer's eval step (this
needs `config.model` and `config.data` to describe the checkpoints' model and data, as for the run that made
them).

`merge.hf_export_dir` also writes a Hugging Face export through `aya_jax.hf`, in the merged leaves' dtype unless
`merge.hf_export_dtype` (bfloat16 | float16 | float32) says otherwise; the dtype written is logged and
reported. Its architecture is that of the first Hugging Face input, else the config.json an input's run
recorded (runs started from a Hugging Face directory), else the model family of `config.model.preset` (with
config.model.overrides): Cohere and mT5 merges export alike. The folder must be new, empty or an earlier
export, and the new export replaces it as a whole (aya_jax/workdirs.py), as in the hf_export job.

Outputs are checked first, before any input is opened: a workdir that already holds a checkpoint or report,
an unwritable one, or an export folder of other files ends the job with one line naming its field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from aya_jax import checkpoint, defaults, hf, pretrained, sharding, workdirs
from aya_jax.data import languages, pipeline
from aya_jax.hf import io as hf_io  # output_folder, EXPORT_KIND (not re-exported by aya_jax.hf)
from aya_jax.merging import io as merge_io
from aya_jax.merging import methods as merging
from aya_jax.merging.host_memory import HostMemory
from aya_jax.merging.io import HfSource, MergeConfigError, OrbaxSource
from aya_jax.training import loop
from aya_jax.training import sft as sft_objective

log = logging.getLogger(__name__)

OUTPUT_STEP = 0
SECTIONS = ("model", "mesh", "merge")
REPORT_NAME = "merge_report.json"
HF_EXPORT_FIELD = "config.merge.hf_export_dir"


# ============================================================================================================
# Config
# ============================================================================================================


def _rules(config_rules: Any) -> tuple[merging.ParamRule, ...]:
    rules = []
    for i, rule in enumerate(config_rules):
        if not isinstance(rule, tuple | list) or len(rule) != 3 or not isinstance(rule[0], str):
            raise MergeConfigError(
                f"config.merge.rules[{i}]: expected (filter, parameter, value), got {rule!r}"
            )
        value = tuple(rule[2]) if isinstance(rule[2], tuple | list) else rule[2]
        rules.append(merging.ParamRule(rule[0], str(rule[1]), value))
    return tuple(rules)


def _per_model(field: str, value: Any, num_models: int, what: str) -> list[float]:
    """One float per model from config.merge.<field>: a number for every model, or a tuple of one per model."""
    values = list(value) if isinstance(value, tuple | list) else [value] * num_models
    if len(values) != num_models:
        raise MergeConfigError(f"config.merge.{field}: {len(values)} {what} for {num_models} models")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise MergeConfigError(
            f"config.merge.{field}: {value!r} is not a number or a tuple of numbers (one per model)"
        ) from None


@dataclasses.dataclass
class Plan:
    spec: merging.MergeSpec
    models: list[Any]  # sources (merge_io), in the order of config.merge.models
    base: Any | None
    base_left_out: str | None  # label of a model that was the base model too


def plan_merge(config: Any, mesh: Mesh, rules: sharding.Rules) -> Plan:
    """Resolve config.merge into sources and a validated MergeSpec; reads metadata only, no tensor."""
    m = config.merge
    if m.method not in merging.METHODS:
        raise MergeConfigError(
            f"config.merge.method: unknown {m.method!r} (known: {', '.join(merging.METHODS)})"
        )
    if not m.models:
        raise MergeConfigError("config.merge.models: empty; give the checkpoints to merge")
    last = int(m.last_steps)
    if last < 0:
        raise MergeConfigError(f"config.merge.last_steps: must be >= 0, got {last}")
    if last and len(m.models) != 1:
        raise MergeConfigError(
            f"config.merge.last_steps: needs exactly one run in config.merge.models, got {len(m.models)}"
        )
    uses_base = merging.uses_base_model(m.method)
    if uses_base and not m.base_model:
        raise MergeConfigError(
            f"config.merge.base_model: {m.method} needs a base model (task vectors are θ_i − θ_base)"
        )
    if not uses_base and m.base_model:
        raise MergeConfigError(
            f"config.merge.base_model: {m.method} does not use a base model; leave it empty"
        )
    if m.rescale and m.rescale not in merging.RESCALE_MODES:
        raise MergeConfigError(
            f"config.merge.rescale: {m.rescale!r} is not one of {', '.join(merging.RESCALE_MODES)}"
        )
    num_models = len(m.models) * max(last, 1)
    weights = _per_model("weights", m.weights if m.weights else 1.0, num_models, "weights")
    density = _per_model("density", m.density, num_models, "densities")
    if int(m.eval_batches) < 0:
        raise MergeConfigError(f"config.merge.eval_batches: must be >= 0, got {m.eval_batches}")
    if m.hf_export_dtype and m.hf_export_dtype not in hf.EXPORT_DTYPES:
        raise MergeConfigError(
            f"config.merge.hf_export_dtype: {m.hf_export_dtype!r} is not one of {', '.join(hf.EXPORT_DTYPES)} "
            "(or '' for the merged leaves' dtype)"
        )
    scan = bool(config.model.scan_layers)
    models: list[Any] = []
    for i, path in enumerate(m.models):
        field = f"config.merge.models[{i}]"
        models += merge_io.open_sources(
            path, f"models[{i}]", field, mesh, rules, last=max(last, 1), scan_layers=scan
        )
    base, left_out = None, None
    if uses_base:
        (base,) = merge_io.open_sources(
            m.base_model, "base_model", "config.merge.base_model", mesh, rules, scan_layers=scan
        )
        for i in reversed([i for i, s in enumerate(models) if s.path == base.path]):
            left_out = models.pop(i).label  # mergekit too: the base's task vector is 0
            weights.pop(i)
            density.pop(i)
    try:
        spec = merging.MergeSpec(
            method=m.method,
            num_models=len(models),
            weights=tuple(weights),
            density=tuple(density),
            t=float(m.t),
            lambda_=float(m.lambda_),
            normalize=m.normalize,
            rescale=m.rescale or None,
            seed=int(config.seed),
            rules=_rules(m.rules),
        )
    except merging.MergeError as e:
        raise MergeConfigError(f"config.merge.{e}") from None
    return Plan(spec, models, base, left_out)


def _sources(plan: Plan) -> list[Any]:
    return ([plan.base] if plan.base is not None else []) + plan.models


def check_inputs(plan: Plan) -> list[str]:
    """Same tensors and shapes in every input, else one line naming the first offending tensor."""
    sources = _sources(plan)
    labels = [s.label for s in sources]
    try:
        merging.check_same_structure([list(s.leaves) for s in sources], labels)
        for name in sources[0].leaves:
            merging.check_compatible(name, [s.leaves[name].shape for s in sources], labels)
    except merging.MergeError as e:
        raise MergeConfigError(f"params/{e}") from None
    return list(plan.models[0].leaves)


def _check_model_matches(abstract: Any, shapes: dict[str, tuple[int, ...]], why: str) -> None:
    expected = {n: tuple(x.shape) for n, x in merging.flatten(abstract).items()}
    labels = ["config.model", "the checkpoints"]
    try:
        merging.check_same_structure([list(expected), list(shapes)], labels)
        for n in expected:
            merging.check_compatible(n, [expected[n], shapes[n]], labels)
    except merging.MergeError as e:
        raise MergeConfigError(f"params/{e} ({why} uses config.model)") from None


# ============================================================================================================
# The job
# ============================================================================================================


@dataclasses.dataclass
class MergeSummary:
    checkpoint_dir: str
    report_path: str
    report: dict[str, Any]


def run(config: Any, workdir: str) -> MergeSummary:
    m = config.merge
    workdir_path = pathlib.Path(workdir).absolute()
    t_start = time.perf_counter()
    defaults.validate(config, SECTIONS)
    # Every output is checked before any input is opened: a used or unwritable workdir, or an export folder
    # holding other files, costs one line rather than a finished merge that cannot be written.
    merge_io.check_output(workdir_path, REPORT_NAME)
    workdirs.check_writable(workdir_path, "--workdir")
    if m.hf_export_dir:
        export_dir = pathlib.Path(m.hf_export_dir).absolute()
        if export_dir == workdir_path or export_dir in workdir_path.parents:
            # The export replaces its folder as a whole: it would take the merged checkpoint with it.
            raise MergeConfigError(
                f"{HF_EXPORT_FIELD}: {m.hf_export_dir} is or holds the workdir {workdir_path}; give it a folder "
                "of its own"
            )
        workdirs.check_output_dir(m.hf_export_dir, hf_io.EXPORT_KIND, HF_EXPORT_FIELD)
    mesh, rules = sharding.setup(config.mesh)
    plan = plan_merge(config, mesh, rules)
    spec = plan.spec
    names = check_inputs(plan)
    first = plan.models[0]
    shapes = {n: first.leaves[n].shape for n in names}
    targets = {n: merge_io.target_sharding(f"params/{n}", first.leaves[n], mesh) for n in names}
    num_layers = merging.count_unrolled_layers(names)
    try:
        parameters_used = merging.describe_parameters(spec, shapes, num_layers)
    except merging.MergeError as e:
        raise MergeConfigError(f"config.merge.{e}") from None
    exporter = _HfExporter(config, plan, shapes, mesh, rules) if m.hf_export_dir else None
    evaluator = _Evaluator(config, mesh, shapes) if int(m.eval_batches) > 0 else None
    step_dir = merge_io.prepare_output(workdir_path, OUTPUT_STEP, REPORT_NAME)
    if plan.base_left_out:
        log.info("%s is the base model: left out of the merged models", plan.base_left_out)
    _log_parameters(spec, parameters_used)

    leaf_bytes = {n: merging.num_elements(shapes[n]) * first.leaves[n].dtype.itemsize for n in names}
    parameters = sum(merging.num_elements(shapes[n]) for n in names)
    model_bytes = sum(leaf_bytes.values())
    num_inputs = len(_sources(plan))
    log.info(
        "merging %d leaves (%s parameters, %.1f MiB per model) of %d model(s)%s with %s on mesh %s",
        len(names),
        f"{parameters:,}",
        model_bytes / 2**20,
        len(plan.models),
        " and a base model" if plan.base is not None else "",
        spec.method,
        dict(zip(mesh.axis_names, mesh.devices.shape, strict=True)),
    )

    # ---- stream: one leaf of every input at a time ---------------------------------------------------------
    memory = HostMemory()
    memory.reset()
    # Merged leaves wait until a quarter of the largest leaf's size is ready, then go out in one orbax partial
    # save (each costs ~0.1-0.3 s and transiently copies what it writes): big leaves go one by one, small ones
    # (norms) together.
    writer = merge_io.OutputWriter(step_dir, flush_bytes=max(leaf_bytes.values()) // 4)
    merged_dtypes: dict[str, np.dtype] = {}
    t_merge = time.perf_counter()
    read_s = merge_s = 0.0
    for name in names:
        t0 = time.perf_counter()
        tensors = [s.read(name, targets[name]) for s in plan.models]
        base = plan.base.read(name, targets[name]) if plan.base is not None else None
        t1 = time.perf_counter()
        try:
            merged = merging.merge_leaf(spec, name, tensors, base, num_unrolled_layers=num_layers)
        except merging.MergeError as e:
            raise MergeConfigError(f"config.merge.{e}") from None
        merged.block_until_ready()
        merged_dtypes[name] = np.dtype(merged.dtype)
        read_s, merge_s = read_s + t1 - t0, merge_s + time.perf_counter() - t1
        del tensors, base
        writer.add(name, merged)
        del merged
    writer.finalize(int(config.seed), {"position": 0, "merged": True, "method": spec.method})
    seconds = time.perf_counter() - t_merge
    peak = memory.peak()

    report: dict[str, Any] = {
        "method": spec.method,
        "output": str(step_dir),
        "models": [_describe(spec, s, i) for i, s in enumerate(plan.models)],
        "base_model": _describe(spec, plan.base, None) if plan.base is not None else None,
        "base_model_left_out_of_models": plan.base_left_out,
        "parameters_used": parameters_used,
        "rules": [dataclasses.asdict(r) for r in spec.rules],
        "seed": spec.seed,
        "mesh": {a: int(s) for a, s in zip(mesh.axis_names, mesh.devices.shape, strict=True)},
        "leaves": len(names),
        "parameters": parameters,
        "seconds": seconds,
        "read_seconds": read_s,
        "merge_seconds": merge_s,
        "parameters_per_second": parameters / seconds,
        "output_partial_saves": writer.saves,
        "memory": {
            "peak_rss_bytes": peak,
            "rss_at_start_bytes": memory.start,
            "peak_above_start_bytes": peak - memory.start,
            "model_bytes": model_bytes,
            "largest_leaf_bytes": max(leaf_bytes.values()),
            "inputs": num_inputs,
            "peak_above_start_over_model": (peak - memory.start) / model_bytes,
            "measured_since_start": memory.resettable,
        },
    }
    log.info(
        "merged %s parameters in %.1f s (%s parameters/s; reading %.1f s, merging %.1f s); peak host memory "
        "%.1f MiB, %.1f MiB above the start = %.2f x one model (%.1f MiB; largest leaf %.1f MiB x %d inputs)",
        f"{parameters:,}",
        seconds,
        f"{parameters / seconds:,.0f}",
        read_s,
        merge_s,
        peak / 2**20,
        (peak - memory.start) / 2**20,
        (peak - memory.start) / model_bytes,
        model_bytes / 2**20,
        max(leaf_bytes.values()) / 2**20,
        num_inputs,
    )
    if evaluator is not None:
        report["eval"] = evaluator.run(plan, step_dir, int(m.eval_batches))
    if exporter is not None:
        report["hf_export_dir"], report["hf_export_dtype"] = exporter.export(
            step_dir, str(m.hf_export_dir), merged_dtypes, str(m.hf_export_dtype)
        )
    report["total_seconds"] = time.perf_counter() - t_start
    report_path = workdir_path / REPORT_NAME
    if jax.process_index() == 0:
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    log.info("merged checkpoint %s; report %s", step_dir, report_path)
    return MergeSummary(str(step_dir.parent), str(report_path), report)


def _describe(spec: merging.MergeSpec, source: Any, index: int | None) -> dict[str, Any]:
    """An input of the report: where it is, and (for a merged model, `index` not None) its global weight and
    density (rules may override them per tensor: see "parameters_used")."""
    out = {"label": source.label, "path": source.path, "step": source.step}
    if index is not None:
        if "weight" in merging.used_params(spec.method):
            out["weight"] = spec.model_weights()[index]
        if "density" in merging.used_params(spec.method):
            out["density"] = spec.model_density()[index]
    return out


def _log_parameters(spec: merging.MergeSpec, used: dict[str, Any]) -> None:
    """Say which rules set which leaves, and warn of rules that set none (a filter matching no leaf, or
    leaves all taken by earlier rules) or name a parameter the method does not read."""
    for param in merging.used_params(spec.method):
        for rule in used[param]["rules"]:
            if rule["leaves"]:
                log.info(
                    "rule %d: %s = %s for %d leaves matching %r",
                    rule["index"],
                    param,
                    rule["value"],
                    len(rule["leaves"]),
                    rule["filter"],
                )
            else:
                log.warning(
                    "config.merge.rules[%d]: %s for %r sets no leaf (no leaf name contains it, or earlier rules "
                    "set them)",
                    rule["index"],
                    param,
                    rule["filter"],
                )
    for rule in used.get("ignored_rules", []):
        log.warning(
            "config.merge.rules[%d]: %s does not read %r; the rule is ignored",
            rule["index"],
            spec.method,
            rule["parameter"],
        )


# ============================================================================================================
# Hugging Face export and before/after evaluation (both need config.model to describe the checkpoints)
# ============================================================================================================


class _HfExporter:
    """Writes the merged params as a Hugging Face directory with aya_jax.hf (the model checked before merging).
    The architecture and config come from the first Hugging Face input, else from the config.json recorded by
    the run of an orbax input (`aya_jax.pretrained.record_hf_source`), else from config.model (the preset's
    family, with its overrides; the vocabulary from the checkpoints' embedding)."""

    def __init__(self, config: Any, plan: Plan, shapes: dict[str, tuple[int, ...]], mesh: Mesh, rules: Any):
        field = HF_EXPORT_FIELD
        hf_inputs = [s for s in _sources(plan) if isinstance(s, HfSource)]
        self.scan = bool(config.model.scan_layers)
        if hf_inputs:
            self.arch, self.cfg = hf_inputs[0].architecture, hf_inputs[0].model_config
            self.tokenizer = _tokenizer_of(hf_inputs[0].path)
            model = self.arch.family.build(
                self.cfg, dtype=jnp.float32, param_dtype=jnp.float32, remat="none", scan_layers=self.scan
            )
        else:
            recorded = _recorded_hf_source(plan)
            vocab = shapes["embedding"][0] if "embedding" in shapes else None
            try:
                model, self.cfg = pretrained.build_model(
                    config.model, vocab, recorded[0] if recorded else None
                )
            except ValueError as e:
                raise MergeConfigError(f"{e} (needed by {field})") from None
            self.arch = hf.architecture_of(self.cfg)
            self.tokenizer = _tokenizer_of(recorded[1]) if recorded else None
        self.target = hf.abstract_params(self.arch, model, self.cfg, mesh, rules)
        _check_model_matches(self.target, shapes, field)

    def export(
        self, step_dir: pathlib.Path, out_dir: str, leaf_dtypes: dict[str, np.dtype], dtype: str
    ) -> tuple[str, str]:
        """Write the export; returns (its directory, the dtype written). `dtype` "" keeps each merged leaf's
        dtype (the params are restored in it, so nothing is cast)."""
        target = merging.unflatten(
            {
                n: jax.ShapeDtypeStruct(x.shape, leaf_dtypes[n], sharding=x.sharding)
                for n, x in merging.flatten(self.target).items()
            }
        )
        params = checkpoint.load_params(step_dir.parent, target, OUTPUT_STEP)[1]
        written = dtype or ", ".join(sorted({np.dtype(d).name for d in leaf_dtypes.values()}))
        # Replaces out_dir as a whole (checked at the start of the job): no stale shards of an earlier export.
        with hf_io.output_folder(out_dir, HF_EXPORT_FIELD) as folder:
            hf.save(
                folder,
                params,
                self.cfg,
                model_type=self.arch.model_type,
                dtype=dtype or None,
                tokenizer=self.tokenizer,
                scan_layers=self.scan,
            )
        log.info(
            "Hugging Face export (%s) in %s: %s",
            self.arch.model_type,
            written,
            "config.merge.hf_export_dtype"
            if dtype
            else "the merged leaves' dtype (config.merge.hf_export_dtype)",
        )
        return str(pathlib.Path(out_dir)), written


def _tokenizer_of(hf_dir: str) -> str | None:
    """The Hugging Face directory whose tokenizer the export copies, when it has one (weights-only directories
    export weights only)."""
    return hf_dir if hf_dir and (pathlib.Path(hf_dir) / "tokenizer.json").is_file() else None


def _recorded_hf_source(plan: Plan) -> tuple[dict[str, Any], str] | None:
    """(config.json, source directory) recorded by the run of the first orbax input that has one."""
    for source in _sources(plan):
        if isinstance(source, OrbaxSource):
            recorded = pretrained.recorded_hf_source(
                source.step_dir.parent.parent
            )  # <workdir>/checkpoints/<step>
            if recorded is not None:
                return recorded
    return None


class _Evaluator:
    """Per-language held-out loss of every input and of the merge, with the SFT trainer's eval step."""

    def __init__(self, config: Any, mesh: Mesh, shapes: dict[str, tuple[int, ...]]):

        self.config, self.mesh = config, mesh
        try:
            _, self.rules = loop.validate_config(
                config, ("model", "mesh", "data"), jax.device_count(), jax.process_count()
            )
        except ValueError as e:
            raise MergeConfigError(f"{e} (needed by config.merge.eval_batches)") from None
        self.data_spec = pipeline.prepare(config.data)
        model, _ = pretrained.build_model(config.model, self.data_spec.vocab_size)
        self.abstract = pretrained.abstract_params(model, mesh, self.rules)
        self.shardings = jax.tree.map(lambda x: x.sharding, self.abstract)
        _check_model_matches(self.abstract, shapes, "config.merge.eval_batches")
        step = sft_objective.make_eval_step(model, languages.num_language_ids())
        self._step = jax.jit(step, in_shardings=(self.shardings, None))

    def _params(self, source: Any) -> Any:
        if isinstance(source, OrbaxSource):
            return checkpoint.load_params(source.step_dir.parent, self.abstract, source.step)[1]
        flat = {n: source.read(n, x.sharding) for n, x in merging.flatten(self.abstract).items()}
        return merging.unflatten(flat)

    def evaluate(self, params: Any, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
        sums = None
        with self.mesh, nn.logical_axis_rules(self.rules):
            for host_batch in batches:
                out = self._step(params, sharding.global_batch_from_host(host_batch, self.mesh, self.rules))
                sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        sums = jax.device_get(sums)
        denom = max(float(sums["weight_sum"]), 1.0)
        result = {"loss": float(sums["nll_sum"]) / denom, "accuracy": float(sums["correct_sum"]) / denom}
        for lid in np.nonzero(sums["lang_weight_sum"])[0]:
            code = languages.language_code(int(lid))
            result[f"loss/{code}"] = float(sums["lang_nll_sum"][lid] / sums["lang_weight_sum"][lid])
        return result

    def run(self, plan: Plan, merged_dir: pathlib.Path, num_batches: int) -> dict[str, Any]:
        c = self.config
        batches = pipeline.eval_batches(
            self.data_spec,
            c.data,
            batch_size=int(c.train.global_batch_size) // jax.process_count(),
            num_batches=num_batches,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        results: dict[str, Any] = {"split": str(c.data.eval_split), "batches": num_batches, "inputs": {}}
        for source in _sources(plan):
            results["inputs"][source.label] = self.evaluate(self._params(source), batches)
        merged = checkpoint.load_params(merged_dir.parent, self.abstract, OUTPUT_STEP)[1]
        results["merged"] = self.evaluate(merged, batches)
        for label, r in [*results["inputs"].items(), ("merged", results["merged"])]:
            log.info("eval %-16s loss %.4f  accuracy %.3f", label, r["loss"], r["accuracy"])
        return results
