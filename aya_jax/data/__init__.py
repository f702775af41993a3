"""Data: seqio tasks and mixtures over Aya-format text, vocabularies, feature converters, and the batches the
trainers read.

Trainers use `aya_jax.data.pipeline` (`prepare`, `TrainIterator`, `eval_batches`); the other modules are its
parts: `languages` (language tables and ids), `default_data` (the embedded multilingual data set), `sources`
(row schemas and validated reading of jsonl / parquet), `source_files` (a source's files by split, row counts),
`catalog` (tasks over the folders a config names: Aya Dataset, Aya Collection, preference pairs, prompts),
`tfds_builder` (the Aya Dataset as a TFDS builder), `mixtures` (gin-defined language mixtures, exactly
resumable sampling), `chat_template` (the Cohere chat template), `vocab` and `vocab_training`, `tasks`
(seqio registration), `feature_converters` and `prompt_converters` (batch layouts), `cache` (where generated
files live), and `stats` (the data_stats job).
"""
