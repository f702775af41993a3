"""Data: seqio tasks over Aya-format text, vocabularies, packing, and the batches the trainers read.

Trainers use `aya_jax.data.pipeline` (`prepare`, `TrainIterator`, `eval_batches`); the other modules are its
parts: `languages` (language tables and ids), `default_data` (the embedded multilingual data set), `sources`
(validated jsonl reading), `vocab`, `tasks` (seqio registration), `feature_converters` (packing), `cache`
(where generated files live).
"""
