"""Benchmarks inside training (`config.evals`): a fixed small sample of Global-MMLU questions and of held-out
texts, scored on the current params every `config.evals.every` steps and at the end, so that a run's benchmark
curve sits beside its loss curve in metrics.jsonl and TensorBoard (kind "eval" rows).

The data is read when the run starts (bad files stop it before any training step) and the same sample is scored
every time: the first `max_items` questions of each language's split, the first `max_texts` texts. One `Scorer`
is built once and its params swapped, so each evaluation reuses the compiled functions. The tokenizer is the
run's own codec, as the model was trained to read it (a seqio vocabulary adds no BOS), so figures compare
steps of one run; the evaluation jobs (aya_jax/jobs/evaluate.py) measure a checkpoint the harness's way.

Metrics written: `global_mmlu/accuracy` (macro over languages), `global_mmlu/CS`, `global_mmlu/CA`,
`global_mmlu/<lang>`; `perplexity` (token-weighted), `perplexity/<lang>`, `bits_per_byte`.
"""

from __future__ import annotations

import logging
from typing import Any

from aya_jax.evaluation import global_mmlu as gm
from aya_jax.evaluation import likelihood
from aya_jax.evaluation import perplexity as ppl

log = logging.getLogger(__name__)


class PeriodicEvals:
    """`config.evals` for one run: `due(iteration)` and `__call__(params) -> metrics`."""

    def __init__(self, evals: Any, eval_every: int, codec: Any, model: Any, mesh: Any, rules: Any):
        self.evals, self.codec = evals, codec
        self.every = int(evals.every) or int(eval_every)
        self.names = tuple(evals.names)
        self.items = self.dev = self.texts = None
        if "global_mmlu" in self.names:
            items = gm.load(str(evals.data_dir), tuple(evals.languages), "test")
            self.items = {lang: rows[: int(evals.max_items)] for lang, rows in items.items()}
            if int(evals.num_fewshot):
                self.dev = gm.load(str(evals.data_dir), tuple(self.items), "dev")
        if "perplexity" in self.names:
            limit = int(evals.max_texts)
            if evals.text_field:
                self.texts = ppl.read_jsonl(str(evals.texts), str(evals.text_field), str(evals.language_field),
                                            tuple(evals.text_languages), limit)  # fmt: skip
            else:
                self.texts = ppl.read_parallel(str(evals.texts), tuple(evals.text_languages), limit)
        self.model, self.mesh, self.rules = model, mesh, rules
        self.scorer: likelihood.Scorer | None = None

    def due(self, iteration: int, last: bool) -> bool:
        return bool(self.names) and (last or iteration % self.every == 0)

    def __call__(self, params: Any) -> dict[str, float]:
        if self.scorer is None:
            self.scorer = likelihood.Scorer(self.model, params, mesh=self.mesh, rules=self.rules,
                                            pad_id=self.codec.pad_id, batch_size=int(self.evals.batch_size))  # fmt: skip
        self.scorer.params = params
        text = likelihood.TextModel(self.scorer, self.codec)
        rounds, out = int(self.evals.rounds), {}
        if self.items is not None:
            r = gm.evaluate(self.items, text.loglikelihood, dev=self.dev, num_fewshot=int(self.evals.num_fewshot),
                            rounds=rounds)  # fmt: skip
            macro = r["overall"]["macro"]
            out["global_mmlu/accuracy"] = macro["all"]["mean"]
            for label in ("CS", "CA"):
                if macro[label]["n"]:
                    out[f"global_mmlu/{label}"] = macro[label]["mean"]
            out.update({f"global_mmlu/{lang}": v["all"]["mean"] for lang, v in r["per_language"].items()})
        if self.texts is not None:
            r = ppl.perplexity(self.texts, text.token_scores, rounds=rounds)
            micro = r["overall"]["micro"]
            out["perplexity"] = micro["perplexity"]["mean"]
            out["bits_per_byte"] = micro["bits_per_byte"]
            out.update({f"perplexity/{lang}": v["perplexity"]["mean"] for lang, v in r["languages"].items()})
        log.info("benchmarks: %s", ", ".join(f"{k} {v:.4g}" for k, v in out.items() if k.count("/") == 0 or
                                              k in ("global_mmlu/accuracy", "global_mmlu/CS", "global_mmlu/CA")))  # fmt: skip
        return out


def for_run(config: Any, model: Any, codec: Any, mesh: Any, rules: Any) -> PeriodicEvals | None:
    """The run's `config.evals` (None when it names none): its data read now."""
    if not tuple(config.evals.names):
        return None
    return PeriodicEvals(config.evals, int(config.train.eval_every), codec, model, mesh, rules)
