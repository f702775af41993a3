"""Evaluations as the Aya papers measure them. Each evaluator is a function of callables and data — a
log-likelihood or reward function, never a trainer — so the same code scores a checkpoint from a job, a model
inside a training run, or anything else that can score text:

* `global_mmlu` — Global-MMLU accuracy (arXiv 2412.03304), culturally sensitive vs agnostic, with intervals;
* `m_rewardbench` — M-RewardBench accuracy of reward functions (arXiv 2410.15522);
* `perplexity` — per-language perplexity and the tokens whose loss rose between two checkpoints;
* `likelihood` — the log-likelihood callables on real models (sharded, batched), lm-evaluation-harness's
  semantics; `reward_scores` — reward callables (a classifier reward model, a DPO policy's implicit reward);
* `harness` — the lm-evaluation-harness model `aya_jax` (needs the `eval` extra);
* `stats` (bootstrap intervals) and `report` (results.json, results.md).

The jobs that run them on a checkpoint are in aya_jax/jobs/evaluate.py."""
