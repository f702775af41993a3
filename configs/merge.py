"""Model merging: linear/weighted averaging, SLERP, task arithmetic, TIES, DARE (aya_jax/merging/methods.py, with
mergekit 0.1.5's semantics; the job is aya_jax/jobs/merge.py).

Launch (from the repository root), e.g. averaging two runs with weights 0.7 / 0.3:

    python -m aya_jax.main --config configs/merge.py \
        --config.merge.models='("workdirs/run_a","workdirs/run_b")' --config.merge.weights='(0.7,0.3)' \
        --workdir workdirs/merged

Variants (the argument picks the method and its usual parameters; every field can still be overridden):

    configs/merge.py:average          the newest `last_steps` (3) checkpoints of one run, uniform weights
                                      (Aya Expanse averages checkpoints of a run); default run: the quickstart's
    configs/merge.py:slerp            two models, t = 0.5
    configs/merge.py:task_arithmetic  θ_base + λ Σ w_i (θ_i − θ_base); needs --config.merge.base_model
    configs/merge.py:ties             TIES, density 0.5; needs a base model
    configs/merge.py:dare_linear      DARE drop (density 0.5, L1 rescale) + task arithmetic; needs a base model
    configs/merge.py:dare_ties        DARE drop + TIES sign election; needs a base model

Merging models fine-tuned from one base on different language families (or safety vs. general data):

    python -m aya_jax.main --config configs/merge.py:ties --workdir workdirs/merged_ties \
        --config.merge.models='("workdirs/sft_indic","workdirs/sft_arabic")' --config.merge.base_model=workdirs/base

Per-model parameters, as mergekit's YAML gives them (`models: [{model: A, parameters: {weight: 0.6, density:
0.5}}, {model: B, parameters: {weight: 0.4, density: 0.7}}]`): `merge.weights` has one weight per model (after
`last_steps` expansion; () = 1.0 each), `merge.density` is one density for every model or a tuple of one per
model (same length rule as the weights):

    --config.merge.models='("workdirs/a","workdirs/b")' --config.merge.weights='(0.6,0.4)' \
        --config.merge.density='(0.5,0.7)'

Per-tensor parameters follow mergekit's `filter:` conditions: `merge.rules` is a tuple of
(filter, parameter, value) with parameter in t | lambda | weight | density, the first rule whose filter is a
substring of the leaf name (`layers/attn/q_proj`, `layers/mlp/up_proj`, `embedding`, ...; "" matches all) wins;
t and lambda may be a layer gradient, weight and density one value per model. E.g. mergekit's classic SLERP:

    --config.merge.rules='(("attn","t",(0.0,0.5,0.3,0.7,1.0)),("mlp","t",(1.0,0.5,0.7,0.3,0.0)))'

The merged checkpoint lands in `<workdir>/checkpoints/0` (params, no optimiser state: load it with
`--config.checkpoint.init_from` or `checkpoint.load_params`), with `<workdir>/merge_report.json` (the inputs and
the parameters as applied: global values, the rules overriding them and the leaves each rule set). Setting
`merge.hf_export_dir` also writes a Hugging Face directory, in the merged leaves' dtype unless
`merge.hf_export_dtype` says otherwise; its architecture is the first Hugging Face input's, else the one an
input's run recorded, else the family of `config.model.preset` (Cohere or mT5). Setting
`merge.eval_batches` evaluates every input and the merge on the held-out split, per language; `config.model`
and `config.data` must then describe the checkpoints' model and data, as for the run that trained them.
"""

import ml_collections

from configs import common

_METHOD_DEFAULTS = {
    "linear": {},
    "slerp": {"t": 0.5},
    "task_arithmetic": {},
    "ties": {"density": 0.5},
    "dare_linear": {"density": 0.5},
    "dare_ties": {"density": 0.5},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "linear"
    if variant not in (*_METHOD_DEFAULTS, "average"):
        raise ValueError(
            f"configs/merge.py: unknown variant {variant!r} (average, {', '.join(_METHOD_DEFAULTS)})"
        )
    config = common.base_config()
    config.job = "merge"
    config.workdir = f"workdirs/merge_{variant}"
    # The model and data of the merged checkpoints: used only by merge.eval_batches (and a Hugging Face
    # export); the quickstart's by default.
    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"
    config.data.seq_len = 256

    m = config.merge  # every field: aya_jax/defaults/merge.py
    m.method = "linear" if variant == "average" else variant
    if variant == "average":
        m.models = ("workdirs/quickstart",)
        m.last_steps = 3
    for field, value in _METHOD_DEFAULTS.get(m.method, {}).items():
        m[field] = value
    # config.seed seeds DARE's drop masks; config.mesh is the mesh the merge runs and is written on.
    return config
