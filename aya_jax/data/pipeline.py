"""The data interface the trainers use: `prepare`, `TrainIterator`, `eval_batches`.

Batches are dicts of NumPy int32 arrays `[batch_size, seq_len]` with the keys of
`feature_converters.DecoderPackedFeatureConverter` (decoder_target_tokens, decoder_input_tokens,
decoder_loss_weights, decoder_segment_ids, decoder_positions, decoder_language_ids). TensorFlow stays on this
side: nothing here is traced by JAX.

Determinism. The training stream of one host is a pure function of (data, vocabulary, seq_len, pack, seed,
process_index, process_count): epoch e reads the host's rows (line i of the split belongs to host
i % process_count), shuffles them with seed + e (seqio's shuffle buffer, `config.data.shuffle_buffer`),
tokenizes, packs, and the epochs' rows are concatenated and cut into batches (a batch may span two epochs; no
row is dropped). tf.data runs with `deterministic=True`, and packing runs one chunk at a time.

Resuming. `TrainIterator(..., start_position=n)` rebuilds the stream and skips n * batch_size rows inside
tf.data (no skipped row becomes NumPy), counting whole epochs on the way. The cost is one pass over the
skipped rows (read, tokenize, pack): as long as producing them did, ~3 s per epoch of the default data on 2
CPU cores. The result is exactly the batches n, n+1, ... of an uninterrupted iterator.
"""

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import seqio
import tensorflow as tf

from aya_jax.data import feature_converters, languages, tasks

log = logging.getLogger(__name__)

packing_efficiency = feature_converters.packing_efficiency


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What `prepare` found: the task to read and its vocabulary."""

    task_name: str
    vocab: seqio.Vocabulary
    vocab_size: int  # the model's embedding table needs at least this many rows
    pad_id: int
    eos_id: int
    num_language_ids: int  # decoder_language_ids are in [0, num_language_ids)


def _validate(data_config) -> None:
    if not isinstance(data_config.seq_len, int) or data_config.seq_len < 2:
        raise ValueError(f"config.data.seq_len={data_config.seq_len!r}: expected an integer >= 2")
    if not isinstance(data_config.shuffle_buffer, int) or data_config.shuffle_buffer < 1:
        raise ValueError(
            f"config.data.shuffle_buffer={data_config.shuffle_buffer!r}: expected an integer >= 1"
        )


def prepare(data_config) -> DataSpec:
    """Register the task (generating the default data and training its vocabulary if needed); describe it."""
    _validate(data_config)
    provider = tasks.get_task_or_mixture(data_config)
    for field in ("train_split", "eval_split"):
        split = data_config[field]
        if split not in provider.splits:
            raise ValueError(
                f"config.data.{field}={split!r}: task {provider.name!r} has splits {list(provider.splits)}"
            )
    vocab = provider.output_features["targets"].vocabulary
    return DataSpec(
        task_name=provider.name,
        vocab=vocab,
        vocab_size=vocab.vocab_size,
        pad_id=vocab.pad_id,
        eos_id=vocab.eos_id,
        num_language_ids=languages.num_language_ids(),
    )


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def _rows(
    spec: DataSpec, data_config, *, split, shuffle, seed, num_epochs, shard, converter
) -> tf.data.Dataset:
    """Packed rows of one split for one host: a tf.data.Dataset of `[seq_len]` int32 features."""
    provider = seqio.get_mixture_or_task(spec.task_name)
    length = data_config.seq_len
    kwargs = dict(
        sequence_length={"inputs": length, "targets": length},
        split=split,
        shuffle=shuffle,
        seed=seed,
        shard_info=seqio.ShardInfo(index=shard[0], num_shards=shard[1]),
        num_epochs=num_epochs,
    )
    if isinstance(provider, seqio.Mixture):
        # A mixture keeps only its output features unless told; its tasks shuffle with their own buffer sizes.
        ds = provider.get_dataset(**kwargs, passthrough_features=["language_code"])
    else:
        ds = provider.get_dataset(**kwargs, shuffle_buffer_size=data_config.shuffle_buffer)
    ds = converter(ds, {"inputs": length, "targets": length})
    return ds.with_options(_options())


class TrainIterator:
    """Deterministic, infinite stream of this host's training batches (see the module docstring)."""

    def __init__(
        self,
        spec: DataSpec,
        data_config,
        *,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        start_position: int = 0,
    ):
        _validate(data_config)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
        if start_position < 0:
            raise ValueError(f"start_position={start_position}: expected >= 0")
        self.spec = spec
        self.batch_size = batch_size
        self.seed = seed
        self.position = start_position  # batches this host has consumed since the start of training
        self.epoch = 0
        self._config = data_config
        self._shard = (process_index, process_count)
        # Its `stats` count what this iterator packed (skipped and prefetched rows included).
        self.converter = feature_converters.DecoderPackedFeatureConverter(pack=data_config.pack)
        self._batches = self._generate(skip_rows=start_position * batch_size)

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._batches)
        self.position += 1
        return batch

    def _epoch_rows(self, epoch: int, converter) -> tf.data.Dataset:
        return _rows(
            self.spec,
            self._config,
            split=self._config.train_split,
            shuffle=True,
            seed=(self.seed + epoch) % 2**31,
            num_epochs=1,
            shard=self._shard,
            converter=converter,
        )

    def _generate(self, skip_rows: int) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []  # rows not yet in a batch: [k, seq_len] per feature
        pending_rows = 0
        epoch = 0
        while True:
            self.epoch = epoch
            ds = _after_skip(self._epoch_rows(epoch, self.converter), skip_rows, self._config.seq_len)
            count = None
            for index, (is_end, chunk) in ds.batch(self.batch_size).as_numpy_iterator():
                if is_end.any():
                    count = int(index[is_end][0])
                keep = ~is_end
                if not keep.any():
                    continue
                pending.append({k: v[keep] for k, v in chunk.items()})
                pending_rows += int(keep.sum())
                while pending_rows >= self.batch_size:
                    joined = {k: np.concatenate([c[k] for c in pending]) for k in chunk}
                    yield {k: v[: self.batch_size] for k, v in joined.items()}
                    pending_rows -= self.batch_size
                    pending = [{k: v[self.batch_size :] for k, v in joined.items()}] if pending_rows else []
            if not count:
                raise ValueError(f"{self.spec.task_name}: host {self._shard[0]} has no training rows")
            skip_rows = max(0, skip_rows - count)
            stats = self.converter.stats
            log.info(
                "%s epoch %d done (host %d): %d rows; so far %d examples, %d truncated to %d tokens, "
                "packing %.3f",
                self.spec.task_name, epoch, self._shard[0], count, stats.examples, stats.truncated,
                self._config.seq_len, stats.efficiency(self._config.seq_len),
            )  # fmt: skip
            epoch += 1


def _after_skip(rows: tf.data.Dataset, skip: int, length: int) -> tf.data.Dataset:
    """`(index, (is_end, row))` for the rows from index `skip` on, then an end marker whose index is the
    number of rows in `rows`: one pass both skips (inside tf.data, never converting a skipped row to NumPy)
    and counts, so a resume that skips whole epochs learns each one's size on the way."""
    end_row = {k: tf.zeros([length], spec.dtype) for k, spec in rows.element_spec.items()}
    marked = rows.map(lambda row: (tf.constant(False), row))
    marked = marked.concatenate(tf.data.Dataset.from_tensors((tf.constant(True), end_row))).enumerate()
    return marked.filter(lambda index, item: tf.logical_or(index >= skip, item[0]))


def eval_batches(
    spec: DataSpec,
    data_config,
    *,
    batch_size: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """The first `num_batches` batches of this host's share of the eval split, unshuffled, repeating the split
    if it is short: the same batches every call."""
    _validate(data_config)
    converter = feature_converters.DecoderPackedFeatureConverter(pack=data_config.pack)
    ds = _rows(
        spec,
        data_config,
        split=data_config.eval_split,
        shuffle=False,
        seed=None,
        num_epochs=None,
        shard=(process_index, process_count),
        converter=converter,
    )
    batches = list(ds.batch(batch_size, drop_remainder=True).take(num_batches).as_numpy_iterator())
    if len(batches) < num_batches:
        raise ValueError(
            f"{spec.task_name}: split {data_config.eval_split!r} gave host {process_index} {len(batches)} of "
            f"{num_batches} batches of {batch_size}: it has no rows for this host"
        )
    return batches
