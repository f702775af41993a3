"""seqio tasks over Aya-format jsonl: the embedded default ("aya_default") and users' own files.

A task's examples carry `inputs` and `targets` (tokenized, EOS appended to targets only) plus the row's string
fields (`language_code` among them, which the feature converter turns into per-token language ids).

Registration is idempotent: registering a name again with the same files, vocabulary and strictness is a
no-op; with anything different the old task is replaced (so a test or a notebook can switch vocabularies).
"""

import difflib
import logging
import random
from collections.abc import Sequence

import seqio
import tensorflow as tf

from aya_jax.data import default_data, sources, vocab

log = logging.getLogger(__name__)

DEFAULT_TASK = default_data.NAME
_GENERATOR_CHUNK = 256
_registered: dict[str, tuple] = {}  # task name -> what it was registered with


class ShardedFunctionDataSource(seqio.FunctionDataSource):
    """A FunctionDataSource whose function reads only this host's shard.

    seqio's FunctionDataSource cannot shard below the file level, so a Task over it reads every row on every
    host and keeps each num_shards-th (`ds.shard`). Here `dataset_fn(split, shuffle_files, seed, shard_index,
    num_shards)` gets the shard and skips other hosts' lines without parsing them.
    """

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs  # unused, as in seqio's sources
        shard_info = shard_info or seqio.ShardInfo(index=0, num_shards=1)
        return self._dataset_fn(
            split=split,
            shuffle_files=shuffle,
            seed=seed,
            shard_index=shard_info.index,
            num_shards=shard_info.num_shards,
        )


def _jsonl_dataset_fn(split_files: dict[str, list[str]], strict: bool):
    def dataset_fn(split, shuffle_files, seed=None, shard_index=0, num_shards=1) -> tf.data.Dataset:
        if split not in split_files:
            raise ValueError(f"split {split!r} is not one of {sorted(split_files)}")
        files = list(split_files[split])
        if shuffle_files and len(files) > 1:
            random.Random(seed).shuffle(files)  # row order within files is left to the Task's shuffle buffer
        reader = sources.AyaJsonlReader(files, strict=strict, shard_index=shard_index, num_shards=num_shards)
        signature = {field: tf.TensorSpec([None], tf.string) for field in sources.FIELDS}  # [rows]
        ds = tf.data.Dataset.from_generator(lambda: _row_chunks(reader), output_signature=signature)
        return ds.unbatch()

    return dataset_fn


def _row_chunks(rows, size: int = _GENERATOR_CHUNK):
    """Rows grouped `size` at a time, one list per field: each call from tf.data into Python costs ~0.3 ms,
    so yielding rows one by one would make reading the slowest step of the pipeline."""
    chunk = {field: [] for field in sources.FIELDS}
    for row in rows:
        for field in sources.FIELDS:
            chunk[field].append(row[field].encode("utf-8"))
        if len(chunk["targets"]) == size:
            yield chunk
            chunk = {field: [] for field in sources.FIELDS}
    if chunk["targets"]:
        yield chunk


def register_aya_jsonl_task(
    name: str,
    train_files: Sequence[str],
    validation_files: Sequence[str],
    vocab: seqio.Vocabulary,
    strict: bool = False,
) -> seqio.Task:
    """Register (or replace) seqio task `name` over Aya-Dataset-format jsonl files (.jsonl / .jsonl.gz), with
    splits "train" and "validation" (an empty list of files leaves that split out)."""
    split_files = {
        split: [str(f) for f in files]
        for split, files in (("train", train_files), ("validation", validation_files))
        if files
    }
    signature = (split_files, vocab, strict)
    if name in seqio.TaskRegistry.names():
        if _registered.get(name) == signature:
            return seqio.TaskRegistry.get(name)
        log.info("replacing seqio task %r", name)
        seqio.TaskRegistry.remove(name)
    task = seqio.TaskRegistry.add(
        name,
        source=ShardedFunctionDataSource(_jsonl_dataset_fn(split_files, strict), splits=tuple(split_files)),
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=False),
            "targets": seqio.Feature(vocab, add_eos=True),
        },
        preprocessors=[
            seqio.preprocessors.tokenize,  # only `inputs` and `targets`; language_code etc. pass through
            seqio.preprocessors.append_eos_after_trim,
        ],
    )
    _registered[name] = signature
    return task


def register_default_task(data_config) -> str:
    """Make sure the default data and its vocabulary exist, register "aya_default", and return its name."""
    paths = default_data.split_paths(data_config)
    train_rows = sources.AyaJsonlReader([str(paths["train"])], strict=True)  # generated here: no bad rows
    task_vocab = vocab.vocabulary(data_config, train_rows=train_rows)
    register_aya_jsonl_task(
        DEFAULT_TASK,
        [str(paths["train"])],
        [str(paths["validation"])],
        task_vocab,
        strict=data_config.strict,
    )
    return DEFAULT_TASK


def get_task_or_mixture(data_config) -> seqio.Task | seqio.Mixture:
    """The seqio task or mixture `config.data.task` names, registering the default one if that is it."""
    name = data_config.task
    if name == DEFAULT_TASK:
        register_default_task(data_config)
    if name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
        return seqio.get_mixture_or_task(name)
    known = sorted({*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names(), DEFAULT_TASK})
    close = difflib.get_close_matches(name, known, n=5)
    shown = known if len(known) <= 20 else [*close, f"... ({len(known)} in all)"]
    raise ValueError(
        f"config.data.task={name!r} is not a registered seqio task or mixture; registered: {', '.join(shown)}"
    )
