"""config.evals: benchmarks run periodically inside training (SFT, DPO, RLOO policies), their figures written to
metrics.jsonl / TensorBoard as kind "eval" rows beside the eval loss (aya_jax/evaluation/periodic.py). The
full benchmark of a checkpoint is the evaluation jobs' (config.eval, configs/eval_*.py); here a fixed small
sample is scored every few steps to follow a run."""

import ml_collections

from aya_jax.defaults.checks import Section

NAMES = ("global_mmlu", "perplexity")


def defaults() -> ml_collections.ConfigDict:
    v = ml_collections.ConfigDict()
    v.names = ()  # which: ("global_mmlu", "perplexity")
    v.every = 0  # every N steps (and at the end); 0 = at config.train.eval_every
    v.data_dir = ""  # Global-MMLU in the published layout (<dir>/<lang>/test-*.parquet|jsonl)
    v.languages = ()  # Global-MMLU languages (its codes: fr, sw, ...); () = every folder present
    v.max_items = 32  # Global-MMLU questions per language, the first ones of the split (the same every time)
    v.num_fewshot = 0
    v.texts = ""  # perplexity: the NTREX-128 jsonl, or jsonl rows with text_field + language_field
    v.text_field = ""  # "" = the NTREX layout
    v.language_field = "language_code"
    v.text_languages = ()  # the texts' languages (NTREX: fra, swa, ...); () = all
    v.max_texts = 16  # per language
    v.batch_size = 16
    v.rounds = 200  # bootstrap resamples of the reported intervals
    return v


def validate(v: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(v, "evals")
    for name in v.names:
        if name not in NAMES:
            s.fail("names", f"{name!r} is not one of {', '.join(NAMES)}")
    if "global_mmlu" in v.names and not v.data_dir:
        s.fail("data_dir", "global_mmlu needs the benchmark's files (<dir>/<language>/test-*.parquet)")
    if "perplexity" in v.names and not v.texts:
        s.fail("texts", "perplexity needs held-out text (the NTREX-128 jsonl or jsonl rows)")
    s.at_least("every", 0)
    s.at_least("max_items", 1)
    s.at_least("num_fewshot", 0)
    s.at_least("max_texts", 1)
    s.at_least("batch_size", 1)
    s.at_least("rounds", 1)
