"""config.curation: the data-curation jobs (aya_jax/jobs/curate.py, aya_jax/curation/): diversity-first
selection from a pool of rows."""

import ml_collections

from aya_jax.curation import clustering, diversity
from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # The pool: .jsonl / .parquet files of rows in the Aya Dataset format (inputs, targets, language_code, ...);
    # every field is kept in the output
    c.pool = ()  # e.g. --config.curation.pool="('/data/aya_dataset/train-00000-of-00001.parquet',)"
    c.text_field = "inputs"  # what is embedded
    # Vectors: a model's mean-pooled final hidden states of each row's text (any checkpoint the project reads;
    # the tokenizer as in config.eval), or a .npy [rows, dim] file in pool order
    c.embed_checkpoint = ""
    c.tokenizer = ""
    c.vectors = ""
    c.batch_size = 32  # rows per embedding batch
    c.max_length = 512  # tokens embedded per row (the first ones)
    c.part_rows = 4096  # embeddings are written this many rows per file (a killed run resumes at the next)
    # k-means (aya_jax/curation/clustering.py)
    c.clusters = 1024
    c.kmeans_iterations = 25
    c.kmeans_init = "k-means++"  # k-means++ | random
    c.kmeans_restarts = 1
    c.sample_per_centroid = 256  # training sample per centroid (0 = every row)
    # Selection (aya_jax/curation/diversity.py)
    c.budget = 0.1  # a fraction of the pool (<= 1), or a row count (> 1)
    c.within = "uniform"  # uniform | quality: softmax(quality / temperature) inside each cluster
    c.quality_field = ""  # quality: a numeric field of the rows (e.g. a reward model's score)
    c.temperature = 1.0
    c.plot = True
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(c, "curation")
    if not c.pool:
        s.fail("pool", "no pool files (.jsonl / .parquet rows with a text field)")
    if bool(c.embed_checkpoint) == bool(c.vectors):
        s.fail(
            "embed_checkpoint",
            "set exactly one of embed_checkpoint (a model to embed with) and vectors (.npy)",
        )
    s.at_least("batch_size", 1)
    s.at_least("max_length", 1)
    s.at_least("part_rows", 1)
    s.at_least("clusters", 1)
    s.at_least("kmeans_iterations", 1)
    s.one_of("kmeans_init", clustering.INITS)
    s.at_least("kmeans_restarts", 1)
    s.at_least("sample_per_centroid", 0)
    s.greater("budget", 0)
    if c.budget > 1 and c.budget != int(c.budget):
        s.fail("budget", f"{c.budget} is neither a fraction (<= 1) nor a row count")
    s.one_of("within", diversity.WITHIN)
    if c.within == "quality" and not c.quality_field:
        s.fail("quality_field", "within=quality needs the numeric field of the rows to weight by")
    s.greater("temperature", 0)
