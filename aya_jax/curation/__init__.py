"""Data curation methods of the Aya papers, as functions of data and callables (never of a trainer or a job):

* `attributes` — non-differentiable attributes of replies (length, MTLD, lexicon toxicity, language fidelity)
  and the best-of-k objective of active inheritance (arXiv 2407.01490);
* `clustering` — k-means on the device mesh (Lloyd's algorithm, greedy k-means++ or random initialisation);
* `diversity` — diversity-first selection (arXiv 2409.11378): the budget spent across clusters, quality-weighted
  sampling inside them, and the iterative variant's cluster weights from reward gaps."""
