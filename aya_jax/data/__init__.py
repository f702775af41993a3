"""Data: seqio tasks and mixtures over Aya-format text, vocabularies, feature converters, and the batches the
trainers read.

Trainers use `aya_jax.data.pipeline` (`prepare`, `TrainIterator`, `eval_batches`); the other modules are its
parts. Imports between them go in one direction, from the leaves up to `pipeline`: a module imports only
modules of an earlier layer (and the leaves, which import only other leaves). So registration also goes one
way: tasks are registered by `tasks`, built on by `catalog`, mixed by `mixtures`, and a name is resolved by
`registry`, which knows them all.

1. Leaves: `cache` (where generated files live), `languages` (language tables and ids), `chat_template` (the
   Cohere chat template), `sources` (row schemas, validated reading of jsonl / parquet, the sharded seqio
   source), `source_files` (a source's files by split, row counts), `tfds_builder` (the Aya Dataset as a
   TFDS builder, and its rows), `vocab` (vocabularies), `default_data` (the embedded multilingual data set),
   `preference_default` (preference pairs built from it), `feature_converters` and `prompt_converters`
   (batch layouts).
2. `tasks`: seqio registration of tasks over rows, and the default task.
3. `catalog`: tasks over the folders a config names (Aya Dataset, Aya Collection, preference pairs, prompts).
4. `mixtures`: gin-defined language mixtures of the catalog's sources, exactly resumable sampling.
5. `registry`: `config.data.task` resolved to a registered task or mixture, or to the rows it reads.
6. `pipeline`: the batches the trainers read.

tests/data/test_import_order.py checks the order, and that no module here imports another inside a function.
The jobs `data_stats` and `train_vocab` (`aya_jax.jobs`) build statistics and vocabularies on these modules.
"""
