"""config.merge: weight-space merging of checkpoints (jobs/merge.py, aya_jax/merging/). The methods and their
formulas are in aya_jax/merging/methods.py; the job checks these values against the inputs it finds."""

import ml_collections
from ml_collections import config_dict

from aya_jax.defaults.checks import Section
from aya_jax.merging.methods import METHODS


def defaults() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.method = "linear"  # linear | slerp | task_arithmetic | ties | dare_linear | dare_ties
    m.models = ()  # runs, checkpoints/ or step dirs, or Hugging Face directories
    m.last_steps = 0  # > 0: merge the newest N checkpoints of one run (checkpoint averaging)
    m.weights = ()  # one per model (after last_steps expansion); () = uniform
    m.base_model = ""  # task_arithmetic, ties, dare_*: the model the task vectors start from
    m.t = 0.5  # slerp: 0 = the first model, 1 = the second
    # ties / dare_*: fraction of each task vector kept, in (0, 1]; one value, or a tuple of one per model.
    m.density = config_dict.FieldReference(1.0, field_type=object)
    m.lambda_ = 1.0  # mergekit's `lambda`: scale of the merged task vector
    m.normalize = config_dict.placeholder(
        bool
    )  # None: the method's default (linear, ties: True; others: False)
    m.rescale = ""  # ties / dare_*: l1 | density | none; "": the method's default (dare_*: l1, ties: none)
    m.rules = ()  # per-tensor values: ((filter, parameter, value), ...); see configs/merge.py
    m.eval_batches = 0  # > 0: per-language held-out loss of every input and of the merge, in the report
    m.hf_export_dir = ""  # also write a Hugging Face export here
    m.hf_export_dtype = ""  # its dtype: bfloat16 | float16 | float32; "" = the merged leaves' dtype
    return m


def validate(m: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    """The ranges that need no input; the job validates the rest of its plan against the inputs it opens
    (jobs/merge.py `plan_merge`: counts per model, the method's needs). t and lambda_ may be any finite number
    (extrapolation, a negative scale), and so may weights (a negative one subtracts a model)."""
    s = Section(m, "merge")
    s.one_of("method", METHODS)  # before the job creates its workdir
    s.at_least("last_steps", 0, " (0 = the models as listed)")
    s.at_least("eval_batches", 0, " (0 = no evaluation)")
    densities = m.density if isinstance(m.density, tuple | list) else (m.density,)
    for d in densities:
        if isinstance(d, int | float) and not 0.0 < d <= 1.0:  # a non-number is the job's one-line error
            s.fail("density", f"{d} is outside (0, 1]")  # the words of merging.MergeSpec's own check
