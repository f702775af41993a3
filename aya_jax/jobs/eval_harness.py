"""The `eval_harness` job: lm-evaluation-harness tasks on a checkpoint through the `aya_jax` model
(aya_jax/evaluation/harness.py). Needs the `eval` extra (`pip install -e '.[eval]'`).

    python -m aya_jax.main --config configs/eval_harness.py --config.eval.checkpoint=workdirs/quickstart \\
        --config.eval.tasks="('local_global_mmlu_fr',)" --config.eval.include_path=tasks/

Harness tasks read Hugging Face hub datasets; offline, a task YAML under `config.eval.include_path` points at
local files (`dataset_path: json` or `parquet` with `dataset_kwargs: {data_files: {test: ...}}`; docs/evaluation.md).
Results: `<workdir>/harness/results.json` (lm-eval's results, versions and shots) and results.md.
"""

from __future__ import annotations

import json
import time
from typing import Any

import lm_eval
from lm_eval.tasks import TaskManager

from aya_jax import defaults, sampling, sharding
from aya_jax.evaluation import harness as adapter
from aya_jax.evaluation import likelihood, report

SECTIONS = ("model", "mesh", "data", "eval")


def run(config: Any, workdir: str) -> report.EvalSummary:
    defaults.validate(config, SECTIONS)
    e, t0 = config.eval, time.perf_counter()
    out = report.output_dir(workdir, "harness")
    mesh, rules = sharding.setup(config.mesh)
    model = likelihood.TextModel.from_checkpoint(
        str(e.checkpoint), config.model, config.data, mesh, rules, tokenizer=str(e.tokenizer),
        batch_size=int(e.batch_size), max_length=int(e.max_length), field="config.eval.checkpoint",
    )  # fmt: skip
    sampler = sampling.Sampler(model.scorer.model, model.scorer.params, mesh=mesh, rules=rules,
                               pad_id=model.codec.pad_id)  # fmt: skip
    lm = adapter.AyaJaxLM(text_model=model, sampler=sampler)
    evaluated = lm_eval.simple_evaluate(
        model=lm, tasks=list(e.tasks), task_manager=TaskManager(include_path=str(e.include_path) or None),
        limit=int(e.limit) or None, num_fewshot=None if int(e.harness_num_fewshot) < 0 else int(e.harness_num_fewshot),
        random_seed=int(config.seed), numpy_random_seed=int(config.seed), torch_random_seed=int(config.seed),
    )  # fmt: skip
    if evaluated is None:  # lm-eval returns None on the hosts other than 0
        evaluated = {"results": {}}
    kept = {k: evaluated[k] for k in ("results", "versions", "n-shot") if k in evaluated}
    results = json.loads(json.dumps(kept, default=str))  # lm-eval's values include numpy scalars
    results["checkpoint"] = str(e.checkpoint)
    rows = [
        (task, metric.split(",")[0], value)
        for task, metrics in results["results"].items()
        for metric, value in metrics.items()
        if isinstance(value, (int, float)) and "_stderr" not in metric
    ]
    markdown = "# lm-evaluation-harness\n\n" + report.table(["task", "metric", "value"], rows)
    headline = ", ".join(f"{t} {m} {v:.3f}" for t, m, v in rows[:4]) or "no numeric metric"
    return report.finish("lm-eval", out, results, markdown, headline, t0, None, False)
