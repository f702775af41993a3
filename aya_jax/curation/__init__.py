"""Data curation methods of the Aya papers, as functions of data and callables (never of a trainer or a job):

* `attributes` — non-differentiable attributes of replies (length, MTLD, lexicon toxicity, language fidelity)
  and the best-of-k objective of active inheritance (arXiv 2407.01490);
* `clustering` — k-means on the device mesh (Lloyd's algorithm, greedy k-means++ or random initialisation);
* `diversity` — diversity-first selection (arXiv 2409.11378): the budget spent across clusters, quality-weighted
  sampling inside them, and the iterative variant's cluster weights from reward gaps."""

# The curation jobs' output layout, read by the jobs that train on their rows: <workdir>/<job>/DATASET/ROWS holds
# the selected or generated Aya Dataset rows; arbitrage with every teacher scored also writes its ranked pairs
# (preference_pairs rows) as <workdir>/arbitrage/PAIRS/ROWS. One file each, named like a one-shard Hub split.
DATASET = "dataset"
PAIRS = "preference"
ROWS = "train-00000-of-00001.jsonl"
