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

Mixtures (`mixtures`): the stream is one endless draw from the mixture (each component task repeats forever
with its own seeded shuffle, and the choice of component is a counter-based function of seed and position),
so there are no epochs; the same rebuild-and-skip resume applies.

Resuming. `TrainIterator(..., start_position=n)` rebuilds the stream and skips n * batch_size rows inside
tf.data (no skipped row becomes NumPy), counting whole epochs on the way. The cost is one pass over the
skipped rows (read, tokenize, pack): as long as producing them did, ~3 s per epoch of the default data on 2
CPU cores. The result is exactly the batches n, n+1, ... of an uninterrupted iterator.

Other batch formats. `TrainIterator` and `eval_batches` take any feature converter whose outputs have fixed
shapes (`feature_converter=`, with `feature_lengths=`): the encoder-decoder converter for mT5, and the
preference-pair and prompt converters of `prompt_converters`; resume works the same way for all of them.

This is the last module of the data package's one import direction (see `aya_jax.data`): `prepare` resolves
`config.data.task` through `registry`, which sits above the tasks, catalog and mixtures.
"""

import dataclasses
import logging
from collections.abc import Callable, Iterator

import numpy as np
import seqio
import tensorflow as tf

from aya_jax.data import feature_converters, languages, registry

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
    provider = registry.get_task_or_mixture(data_config)
    for field in ("train_split", "eval_split"):
        split = data_config[field]
        if split not in provider.splits:
            raise ValueError(
                f"config.data.{field}={split!r}: task {provider.name!r} has splits {list(provider.splits)}"
            )
    features = provider.output_features
    vocab = features["targets" if "targets" in features else next(iter(features))].vocabulary
    return DataSpec(
        task_name=provider.name,
        vocab=vocab,
        vocab_size=vocab.vocab_size,
        pad_id=vocab.pad_id,
        eos_id=vocab.eos_id,
        num_language_ids=languages.num_language_ids(),
    )


def trained_vocab(data_config) -> str | None:
    """The SentencePiece model file config.data trains (trained now if it is not yet), or None when the config
    names a vocabulary file or another kind. A job started from another on other data pins it (see
    `jobs.config_for`), so that its data never trains a different vocabulary."""
    vocab = data_config.vocab
    if vocab.kind != "sentencepiece" or vocab.path:
        return None
    return str(prepare(data_config).vocab.sentencepiece_model_file)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def default_feature_lengths(data_config) -> dict[str, int]:
    return {"inputs": data_config.seq_len, "targets": data_config.seq_len}


def is_mixture(spec: DataSpec) -> bool:
    return isinstance(seqio.get_mixture_or_task(spec.task_name), seqio.Mixture)


def _rows(
    spec: DataSpec,
    data_config,
    *,
    split,
    shuffle,
    seed,
    num_epochs,
    shard,
    converter,
    feature_lengths=None,
) -> tf.data.Dataset:
    """Converted rows of one split for one host: a tf.data.Dataset of fixed-shape int32 features."""
    provider = seqio.get_mixture_or_task(spec.task_name)
    feature_lengths = dict(feature_lengths or default_feature_lengths(data_config))
    # Converters that cut a feature themselves (prompts keep their end) get it untrimmed from the task.
    task_lengths = {
        k: None if k in getattr(converter, "untrimmed_features", ()) else v
        for k, v in feature_lengths.items()
    }
    kwargs = dict(
        sequence_length=task_lengths,
        split=split,
        shuffle=shuffle,
        seed=seed,
        shard_info=seqio.ShardInfo(index=shard[0], num_shards=shard[1]),
    )
    if isinstance(provider, seqio.Mixture):
        # Endless: components repeat with their own (registered) shuffle buffers; no epochs to count. A mixture
        # keeps only its output features unless told.
        ds = provider.get_dataset(**kwargs, num_epochs=None, passthrough_features=["language_code"])
    else:
        ds = provider.get_dataset(
            **kwargs, num_epochs=num_epochs, shuffle_buffer_size=data_config.shuffle_buffer
        )
    ds = converter(ds, feature_lengths)
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
        feature_converter: seqio.FeatureConverter | None = None,
        feature_lengths: dict[str, int] | None = None,
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
        self.converter = feature_converter or feature_converters.DecoderPackedFeatureConverter(
            pack=data_config.pack
        )
        self._feature_lengths = feature_lengths
        self._reported_truncations = 0
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
            feature_lengths=self._feature_lengths,
        )

    def _report_truncations(self) -> None:
        """Over-long examples are cut to the row length; say so when their count first passes each power of 2
        (a mixture has no epoch end to report at)."""
        stats = getattr(self.converter, "stats", None)
        truncated = getattr(stats, "truncated", 0)
        if truncated > max(0, 2 * self._reported_truncations - 1):
            self._reported_truncations = truncated
            log.warning(
                "%s: %d of %d examples so far were longer than the row and were truncated",
                self.spec.task_name, truncated, stats.examples,
            )  # fmt: skip

    def _generate(self, skip_rows: int) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []  # rows not yet in a batch: [k, seq_len] per feature
        pending_rows = 0
        epoch = 0
        while True:
            self.epoch = epoch
            ds = _after_skip(self._epoch_rows(epoch, self.converter), skip_rows)
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
                    self._report_truncations()
                    yield {k: v[: self.batch_size] for k, v in joined.items()}
                    pending_rows -= self.batch_size
                    pending = [{k: v[self.batch_size :] for k, v in joined.items()}] if pending_rows else []
            if not count:
                raise ValueError(f"{self.spec.task_name}: host {self._shard[0]} has no training rows")
            skip_rows = max(0, skip_rows - count)
            stats = getattr(self.converter, "stats", None)
            if isinstance(stats, feature_converters.PackingStats):
                log.info(
                    "%s epoch %d done (host %d): %d rows; so far %d examples, %d truncated to %d tokens, "
                    "packing %.3f",
                    self.spec.task_name, epoch, self._shard[0], count, stats.examples, stats.truncated,
                    self._config.seq_len, stats.efficiency(self._config.seq_len),
                )  # fmt: skip
            epoch += 1


def _after_skip(rows: tf.data.Dataset, skip: int) -> tf.data.Dataset:
    """`(index, (is_end, row))` for the rows from index `skip` on, then an end marker whose index is the
    number of rows in `rows`: one pass both skips (inside tf.data, never converting a skipped row to NumPy)
    and counts, so a resume that skips whole epochs learns each one's size on the way."""
    end_row = {k: tf.zeros(spec.shape, spec.dtype) for k, spec in rows.element_spec.items()}
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
    feature_converter: seqio.FeatureConverter | None = None,
    feature_lengths: dict[str, int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The first `num_batches` batches of this host's share of the eval split, unshuffled, repeating the split
    if it is short: the same batches every call."""
    _validate(data_config)
    converter = feature_converter or feature_converters.DecoderPackedFeatureConverter(pack=data_config.pack)
    ds = _rows(
        spec,
        data_config,
        split=data_config.eval_split,
        shuffle=False,
        seed=None,
        num_epochs=None,
        shard=(process_index, process_count),
        converter=converter,
        feature_lengths=feature_lengths,
    )
    batches = list(ds.batch(batch_size, drop_remainder=True).take(num_batches).as_numpy_iterator())
    if len(batches) < num_batches:
        raise ValueError(
            f"config.data.eval_split: split {data_config.eval_split!r} of {spec.task_name} gives data shard "
            f"{process_index} of {process_count} {len(batches)} of the {num_batches} batches of {batch_size} rows "
            "that config.train.eval_batches asks for (too few rows); lower config.train.eval_batches, or 0 for "
            "no evaluation"
        )
    return batches


# ------------------------------------------------------------------------------------------------------------
# Logical shards: global batches that do not depend on the number of hosts
# ------------------------------------------------------------------------------------------------------------


class HostTrainIterator:
    """This host's rows of every global batch, read from its own logical data shards only.

    The global batch of step n is, in shard order, batch n of each of `num_shards` TrainIterators (shard s reads
    lines i % num_shards == s, `shard_batch_size` = global batch / num_shards rows per step). A host passes the
    shards that cover its (contiguous) rows of the global batch, so the sequence of global batches, and a saved
    data position, are the same on one host reading every shard as on many hosts reading a few each. With one
    shard per host this is exactly that host's TrainIterator.
    """

    def __init__(
        self,
        spec: DataSpec,
        data_config,
        *,
        shard_batch_size: int,
        shards: range,
        num_shards: int,
        seed: int,
        start_position: int = 0,
        make_converter: Callable[[], seqio.FeatureConverter] | None = None,
        feature_lengths: dict[str, int] | None = None,
    ):
        """`make_converter` builds each shard's converter (default: the decoder-only packer); an
        encoder-decoder model passes its own with its `feature_lengths`."""
        if not shards or shards.start < 0 or shards.stop > num_shards:
            raise ValueError(f"shards={shards}: expected a non-empty range inside [0, {num_shards})")
        self.shards = shards
        self.position = start_position  # global batches consumed (the same for every shard)
        self._iterators = [
            TrainIterator(
                spec,
                data_config,
                batch_size=shard_batch_size,
                seed=seed,
                process_index=shard,
                process_count=num_shards,
                start_position=start_position,
                feature_converter=make_converter() if make_converter else None,
                feature_lengths=feature_lengths,
            )
            for shard in shards
        ]

    def __iter__(self) -> "HostTrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [next(iterator) for iterator in self._iterators]
        self.position += 1
        # [len(shards) * shard_batch_size, seq_len] per feature, shard after shard
        return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def host_eval_batches(
    spec: DataSpec,
    data_config,
    *,
    shard_batch_size: int,
    shards: range,
    num_shards: int,
    num_batches: int,
    make_converter: Callable[[], seqio.FeatureConverter] | None = None,
    feature_lengths: dict[str, int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """`eval_batches` of each of this host's shards, concatenated batch by batch like HostTrainIterator."""
    per_shard = [
        eval_batches(
            spec,
            data_config,
            batch_size=shard_batch_size,
            num_batches=num_batches,
            process_index=shard,
            process_count=num_shards,
            feature_converter=make_converter() if make_converter else None,
            feature_lengths=feature_lengths,
        )
        for shard in shards
    ]
    return [
        {k: np.concatenate([batches[i][k] for batches in per_shard]) for k in per_shard[0][i]}
        for i in range(num_batches)
    ]
