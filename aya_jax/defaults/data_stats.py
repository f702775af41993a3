"""config.data_stats: what a task or mixture holds, per language and source (jobs/data_stats.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.sample_examples = 20_000  # examples drawn from the training stream
    d.max_rows_per_source = 0  # count only the first N train rows of each source; 0 = all
    d.plot = True
    return d


def validate(d: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(d, "data_stats")
    s.at_least("sample_examples", 0)
    s.at_least("max_rows_per_source", 0, " (0 = all)")
