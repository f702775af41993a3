"""seqio tasks over rows of the published Aya formats: the embedded default ("aya_default"), users' own files,
and (through `catalog`) the Aya Dataset, Aya Collection, preference-pair and prompt folders a config names.

Task kinds, by schema (see `sources`):

* SFT (`AYA_DATASET`, `AYA_COLLECTION`): `inputs` (no EOS) and `targets` (EOS appended).
* preference pairs (`PREFERENCE`): `prompt` (no EOS), `chosen` and `rejected` (EOS appended).
* prompts-only (`PROMPTS`): `prompt` (no EOS), for sampling.

Examples also carry the row's string fields (`language_code` among them, which the feature converters turn
into language ids). In the chat format (`config.data.format = "chat"`, the default) the strings are first
formatted with the Cohere chat template (`chat_template.chat_preprocessor`) and answers end with its end-of-turn
marker instead of EOS.

Registration is idempotent: registering a name again with the same arguments is a no-op; with anything
different the old task is replaced (so a test or a notebook can switch vocabularies). `task_info(name)` says
what a task reads (source, schema, language, files), for statistics and vocabulary training.

In the data package's one import direction (see `aya_jax.data`) this module is the first above the leaves:
it imports only leaf modules (`sources`, `vocab`, `tfds_builder`, ...), and `catalog`, `mixtures` and
`registry` build on it. Turning `config.data.task` into a task or mixture needs all of them, so that happens
in `registry.get_task_or_mixture`, not here.
"""

import dataclasses
import logging
import random
from collections.abc import Iterable, Mapping, Sequence

import seqio
import tensorflow as tf

from aya_jax.data import chat_template, default_data, sources, tfds_builder, vocab

log = logging.getLogger(__name__)

DEFAULT_TASK = default_data.NAME
_GENERATOR_CHUNK = 256
MIN_TASK_SHUFFLE_BUFFER = 128


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a registered task reads."""

    name: str
    source: str  # "aya_dataset", "aya_collection", "aya_default", "preference_pairs", "prompts", or the name
    schema: sources.Schema
    split_files: Mapping[str, tuple[str, ...]]
    language: str | None  # ISO 639-3, when the task holds one language
    where: tuple[tuple[str, tuple[str, ...]], ...]  # other row filters (field, accepted values)
    strict: bool
    max_chars: int | None
    # A mixture's per-source task draws its rows language by language at these rates (`mixtures`).
    mixing_rates: tuple[tuple[str, float], ...] | None = None
    tfds_data_dir: str | None = None  # rows come from the TFDS dataset prepared there (`tfds_builder`)

    @property
    def kind(self) -> str:
        return kind_of(self.schema)

    def reader(self, split: str, shard_index: int = 0, num_shards: int = 1, language: str | None = None):
        """The validated (untokenized, unformatted) rows of one split of this task (of one `language`, if
        given): a `sources.RowReader`, or for TFDS-backed tasks a `tfds_builder.TfdsRowReader`."""
        if self.tfds_data_dir:
            return tfds_builder.TfdsRowReader(
                self.tfds_data_dir, split, shard_index=shard_index, num_shards=num_shards,
                language=language or self.language,
            )  # fmt: skip
        return sources.RowReader(
            self.split_files[split],
            strict=self.strict,
            schema=self.schema,
            shard_index=shard_index,
            num_shards=num_shards,
            language=language or self.language,
            where=dict(self.where),
            max_chars=self.max_chars,
        )


_registered: dict[str, tuple] = {}  # task name -> what it was registered with
_info: dict[str, TaskInfo] = {}


def task_info(name: str) -> TaskInfo | None:
    return _info.get(name)


def kind_of(schema: sources.Schema) -> str:
    return {"preference": "preference", "prompts": "prompts"}.get(schema.name, "sft")


def _rows_dataset_fn(info: TaskInfo):
    def dataset_fn(split, shuffle_files, seed=None, shard_index=0, num_shards=1) -> tf.data.Dataset:
        if split not in info.split_files:
            raise ValueError(f"split {split!r} is not one of {sorted(info.split_files)}")
        files = list(info.split_files[split])
        if shuffle_files and len(files) > 1:
            random.Random(seed).shuffle(files)  # row order within files is left to the Task's shuffle buffer
        reader = dataclasses.replace(info, split_files={split: tuple(files)}).reader(
            split, shard_index, num_shards
        )
        fields = info.schema.fields
        signature = {field: tf.TensorSpec([None], tf.string) for field in fields}  # [rows]
        ds = tf.data.Dataset.from_generator(lambda: row_chunks(reader, fields), output_signature=signature)
        return ds.unbatch()

    return dataset_fn


def row_chunks(rows, fields: Sequence[str] = sources.FIELDS, size: int = _GENERATOR_CHUNK):
    """Rows grouped `size` at a time, one list per field: each call from tf.data into Python costs ~0.3 ms,
    so yielding rows one by one would make reading the slowest step of the pipeline."""
    chunk = {field: [] for field in fields}
    for row in rows:
        for field in fields:
            chunk[field].append(row[field].encode("utf-8"))
        if len(chunk[fields[0]]) == size:
            yield chunk
            chunk = {field: [] for field in fields}
    if chunk[fields[0]]:
        yield chunk


def output_features(
    schema: sources.Schema, task_vocab: seqio.Vocabulary, chat: bool = False
) -> dict[str, seqio.Feature]:
    """The task's token features. Answers end with EOS in the raw format; in the chat format they end with the
    template's end-of-turn marker instead (written by the chat preprocessor), and no EOS follows."""
    kind = kind_of(schema)
    if kind == "sft":
        eos = {"inputs": False, "targets": not chat}
    elif kind == "preference":
        eos = {"prompt": False, "chosen": not chat, "rejected": not chat}
    else:
        eos = {"prompt": False}
    return {name: seqio.Feature(task_vocab, add_eos=add_eos) for name, add_eos in eos.items()}


def _chat_preprocessor(schema: sources.Schema, system: str):
    kind = kind_of(schema)
    if kind == "sft":
        return chat_template.chat_preprocessor("inputs", ("targets",), system)
    if kind == "preference":
        return chat_template.chat_preprocessor("prompt", ("chosen", "rejected"), system)
    return chat_template.chat_preprocessor("prompt", (), system)


def register_rows_task(
    name: str,
    split_files: Mapping[str, Sequence[str]],
    task_vocab: seqio.Vocabulary,
    *,
    schema: sources.Schema = sources.AYA_DATASET,
    strict: bool = False,
    language: str | None = None,
    where: Mapping[str, Iterable[str]] | None = None,
    max_chars: int | None = None,
    chat: bool = False,
    system_prompt: str = "",
    num_train_examples: int | None = None,
    shuffle_buffer_size: int = seqio.SHUFFLE_BUFFER_SIZE,
    source_name: str = "",
    data_source: seqio.DataSource | None = None,
    mixing_rates: Mapping[str, float] | None = None,
    dataset_fn_for=None,
    tfds_data_dir: str | None = None,
) -> seqio.Task:
    """Register (or replace) seqio task `name` over files of `schema` rows (.jsonl / .jsonl.gz / .parquet),
    one list of files per split (an empty list leaves that split out). `language` / `where` keep a subset of
    the rows; `num_train_examples` (the train split's size, if known) feeds seqio's rate functions and its
    in-memory caching of small tasks. `data_source` replaces the file reader (the TFDS-backed Aya Dataset). A mixture's
    per-source task passes `mixing_rates` (language -> rate) and `dataset_fn_for(info)`, the function that
    draws its rows (`mixtures`); `tfds_data_dir` makes `task_info(name).reader` read the prepared TFDS data."""
    split_files = {split: tuple(str(f) for f in files) for split, files in split_files.items() if files}
    where_items = tuple(sorted((k, tuple(sorted(map(str, v)))) for k, v in (where or {}).items()))
    info = TaskInfo(
        name=name,
        source=source_name or name,
        schema=schema,
        split_files=split_files,
        language=language,
        where=where_items,
        strict=strict,
        max_chars=max_chars,
        mixing_rates=tuple(sorted(mixing_rates.items())) if mixing_rates else None,
        tfds_data_dir=tfds_data_dir,
    )
    signature = (info, task_vocab, chat, system_prompt, num_train_examples, shuffle_buffer_size, data_source)
    if name in seqio.TaskRegistry.names():
        if _registered.get(name) == signature:
            return seqio.TaskRegistry.get(name)
        log.info("replacing seqio task %r", name)
        seqio.TaskRegistry.remove(name)
    if data_source is None:
        counts = {"train": num_train_examples, "validation": None} if num_train_examples is not None else None
        dataset_fn = (dataset_fn_for or _rows_dataset_fn)(info)
        data_source = sources.ShardedFunctionDataSource(
            dataset_fn, splits=tuple(split_files), num_input_examples=counts
        )
    preprocessors = [_chat_preprocessor(schema, system_prompt)] if chat else []
    task = seqio.TaskRegistry.add(
        name,
        source=data_source,
        output_features=output_features(schema, task_vocab, chat),
        preprocessors=[
            *preprocessors,
            seqio.preprocessors.tokenize,  # only the output features; language_code etc. pass through
            seqio.preprocessors.append_eos_after_trim,
        ],
        shuffle_buffer_size=shuffle_buffer_size,
    )
    _registered[name] = signature
    _info[name] = info
    return task


def register_aya_jsonl_task(
    name: str,
    train_files: Sequence[str],
    validation_files: Sequence[str],
    vocab: seqio.Vocabulary,
    strict: bool = False,
    **kwargs,
) -> seqio.Task:
    """Register (or replace) seqio task `name` over Aya-Dataset-format files (.jsonl / .jsonl.gz / .parquet),
    with splits "train" and "validation" (an empty list of files leaves that split out). `kwargs` go to
    `register_rows_task` (schema, language, chat, ...)."""
    split_files = {"train": train_files, "validation": validation_files}
    return register_rows_task(name, split_files, vocab, strict=strict, **kwargs)


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
        max_chars=data_config.max_example_chars or None,
        chat=data_config.format == "chat",
        source_name=DEFAULT_TASK,
    )
    return DEFAULT_TASK
