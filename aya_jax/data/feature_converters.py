"""Feature converters: Aya (inputs, targets) examples -> packed rows for a causal LM (below), and for an
encoder-decoder (mT5, `EncoderDecoderFeatureConverter` at the end of the file).

Each example becomes `inputs ++ targets` (targets already end in EOS), loss on the targets only. With packing,
several examples share a row; the model keeps them apart with segment ids (attention stays inside a segment)
and positions that restart at 0. Every feature is int32 `[length]`:

    example 1: inputs [7, 8], targets [3, 9, 1]     (1 = EOS)     language "fra" (id 21)
    example 2: inputs [5],    targets [4, 1]                      language "swa" (id 85)

    decoder_target_tokens   [7, 8, 3, 9, 1, 5, 4, 1, 0, 0]
    decoder_input_tokens    [0, 7, 8, 3, 9, 0, 5, 4, 0, 0]    shifted right in each segment, 0 at its start
    decoder_loss_weights    [0, 0, 1, 1, 1, 0, 1, 1, 0, 0]    targets (and their EOS) only
    decoder_segment_ids     [1, 1, 1, 1, 1, 2, 2, 2, 0, 0]    0 = padding
    decoder_positions       [0, 1, 2, 3, 4, 0, 1, 2, 0, 0]
    decoder_language_ids    [21,21,21,21,21,85,85,85, 0, 0]   the example's `languages.language_id`; 0 = pad

This is seqio's `PrefixLMFeatureConverter` layout (same target / input / loss-weight / segment / position
features, built with `seqio.utils.make_autoregressive_inputs`), with three differences, each on purpose:

* Length: the row length is `task_feature_lengths["targets"]`, and prompt and answer share it: an example
  whose concatenation is longer is cut from the right (and counted in `stats.truncated`). seqio's prefix LM
  instead gives `inputs + targets` and trims each part separately. `task_feature_lengths["inputs"]` only caps
  the prompt (upstream, by the Task); the pipeline passes the row length for both.
* Packing: best-fit decreasing over chunks of `chunk_size` examples instead of seqio's greedy sequential
  packer: on short instruction data this fills ~99% of the tokens where greedy packing leaves ~5-10% padding.
  Rows come out in the order of their earliest example, so the upstream shuffle order is kept.
* Language ids: a per-token `decoder_language_ids` feature from each example's `language_code` (absent -> 0).
  There is no `decoder_causal_attention`: the models here are causal everywhere.

Without packing, each example is its own row (segment id 1 on its tokens). The packer runs as a NumPy function
inside tf.data, one chunk at a time, sequentially, so the output is deterministic.
"""

import dataclasses
import threading
from collections.abc import Mapping

import numpy as np
import seqio
import tensorflow as tf

from aya_jax.data import languages

DEFAULT_CHUNK_SIZE = 1024

_ROW_FEATURES = (  # what the NumPy packer returns, in this order; decoder_input_tokens is derived afterwards
    "decoder_target_tokens",
    "decoder_loss_weights",
    "decoder_segment_ids",
    "decoder_positions",
    "decoder_language_ids",
)


@dataclasses.dataclass
class PackingStats:
    """Running totals over everything this converter has packed (including rows tf.data prefetched ahead)."""

    examples: int = 0
    truncated: int = 0  # examples longer than the row, cut from the right
    rows: int = 0
    tokens: int = 0  # non-padding tokens

    def efficiency(self, length: int) -> float:
        return self.tokens / max(1, self.rows * length)


def pack_examples(
    tokens: np.ndarray,  # [n, max_len] int32, zero padded
    loss: np.ndarray,  # [n, max_len] int32, 1 on target tokens
    lengths: np.ndarray,  # [n] int32, tokens in each example (after truncation)
    language_ids: np.ndarray,  # [n] int32
    length: int,
    pack: bool,
) -> tuple[np.ndarray, ...]:
    """Lay out examples in rows: each output `[rows, length]`, in `_ROW_FEATURES` order."""
    n = len(lengths)
    if pack:
        bins: list[list[int]] = []
        free = np.zeros(n, np.int64)  # room left in each bin; at most n bins
        for i in np.argsort(-lengths, kind="stable"):  # longest first; ties keep their input order
            size = lengths[i]
            fits = np.flatnonzero(free[: len(bins)] >= size)
            if len(fits):
                j = fits[np.argmin(free[fits])]  # best fit: the fullest bin that still has room
                bins[j].append(i)
                free[j] -= size
            else:
                bins.append([i])
                free[len(bins) - 1] = length - size
        bins = sorted((sorted(b) for b in bins), key=lambda b: b[0])
    else:
        bins = [[i] for i in range(n)]
    out = [np.zeros((len(bins), length), np.int32) for _ in _ROW_FEATURES]
    targets, weights, segments, positions, langs = out
    for r, members in enumerate(bins):
        start = 0
        for segment, i in enumerate(members, start=1):
            size = lengths[i]
            end = start + size
            targets[r, start:end] = tokens[i, :size]
            weights[r, start:end] = loss[i, :size]
            segments[r, start:end] = segment
            positions[r, start:end] = np.arange(size)
            langs[r, start:end] = language_ids[i]
            start = end
    return tuple(out)


def language_table() -> tf.lookup.StaticHashTable:
    """Lower-case language code -> language id (0 for unknown codes), as a TF table."""
    table = languages.code_to_id_table()
    init = tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(table), tf.string), tf.constant(list(table.values()), tf.int32)
    )
    return tf.lookup.StaticHashTable(init, default_value=languages.UNKNOWN_LANGUAGE_ID)


def language_ids(table: tf.lookup.StaticHashTable, language_code: tf.Tensor) -> tf.Tensor:
    """ "arb_Arab" / "zh-Hant" / "FRA" -> the table's keys (the lower-case language subtag) -> ids."""
    code = tf.strings.lower(tf.strings.regex_replace(tf.strings.strip(language_code), "[-_].*", ""))
    return table.lookup(code)


class DecoderPackedFeatureConverter(seqio.FeatureConverter):
    """Aya examples -> packed causal-LM rows (see the module docstring)."""

    TASK_FEATURES = {
        "inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    # Segment ids and positions are output with and without packing (padding is told apart by segment id 0),
    # so they are model features here rather than seqio "packing features".
    MODEL_FEATURES = {
        name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
        for name in ("decoder_input_tokens", *_ROW_FEATURES)
    }
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE, **kwargs):
        super().__init__(pack=pack, **kwargs)
        self._chunk_size = chunk_size
        self._lock = threading.Lock()
        self.stats = PackingStats()

    def _convert_features(
        self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
    ) -> tf.data.Dataset:
        length = task_feature_lengths["targets"]
        table = language_table()
        has_language = "language_code" in ds.element_spec

        def concat(ex):
            inputs, targets = ex["inputs"], ex["targets"]
            tokens = tf.concat([inputs, targets], 0)  # [n_inputs + n_targets]
            loss = tf.concat([tf.zeros_like(inputs), tf.ones_like(targets)], 0)
            if has_language:
                language = language_ids(table, ex["language_code"])
            else:
                language = tf.constant(languages.UNKNOWN_LANGUAGE_ID, tf.int32)
            return {
                "tokens": tokens[:length],
                "loss": loss[:length],
                "full_length": tf.size(tokens, out_type=tf.int32),
                "language": language,
            }

        def pack_chunk(chunk):
            def run(tokens, loss, full_lengths, langs):
                lengths = np.minimum(full_lengths, length)
                rows = pack_examples(tokens, loss, lengths, langs, length, self.pack)
                with self._lock:
                    self.stats.examples += len(full_lengths)
                    self.stats.truncated += int((full_lengths > length).sum())
                    self.stats.rows += len(rows[0])
                    self.stats.tokens += int(lengths.sum())
                return rows

            rows = tf.numpy_function(
                run,
                [chunk["tokens"], chunk["loss"], chunk["full_length"], chunk["language"]],
                [tf.int32] * len(_ROW_FEATURES),
                stateful=True,  # it counts into self.stats: keep tf.data from eliding or reordering it
            )
            out = {}
            for name, value in zip(_ROW_FEATURES, rows, strict=True):
                value.set_shape([None, length])  # [rows, length]
                out[name] = value
            return tf.data.Dataset.from_tensor_slices(out)

        def add_inputs(row):
            row["decoder_input_tokens"] = seqio.utils.make_autoregressive_inputs(
                row["decoder_target_tokens"], sequence_id=row["decoder_segment_ids"], bos_id=self.bos_id
            )
            return row

        ds = ds.map(concat, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.filter(lambda ex: ex["full_length"] > 0)
        shapes = {"tokens": [None], "loss": [None], "full_length": [], "language": []}
        ds = ds.padded_batch(self._chunk_size, padded_shapes=shapes)  # [chunk, longest] per feature
        ds = ds.flat_map(pack_chunk)  # sequential: one chunk at a time, in order
        return ds.map(add_inputs, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        length = task_feature_lengths["targets"]
        return {name: length for name in self.MODEL_FEATURES}


def packing_efficiency(batch: Mapping[str, np.ndarray]) -> float:
    """Fraction of non-padding tokens in a batch (segment id != 0)."""
    segments = np.asarray(batch["decoder_segment_ids"])
    return float((segments != 0).mean())


# ---- encoder-decoder (mT5 / Aya 101) -----------------------------------------------------------------------

_ENC_DEC_ROW_FEATURES = (  # what `pack_pairs` returns, in this order; decoder_input_tokens is derived after
    "encoder_input_tokens",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_target_tokens",
    "decoder_loss_weights",
    "decoder_segment_ids",
    "decoder_positions",
    "decoder_language_ids",
)


def pack_pairs(
    enc_tokens: np.ndarray,  # [n, max_enc] int32, zero padded
    enc_lengths: np.ndarray,  # [n]
    dec_tokens: np.ndarray,  # [n, max_dec] int32, zero padded
    dec_lengths: np.ndarray,  # [n]
    language_ids: np.ndarray,  # [n]
    enc_length: int,
    dec_length: int,
    pack: bool,
) -> tuple[np.ndarray, ...]:
    """Lay out (encoder, decoder) example pairs in rows, `_ENC_DEC_ROW_FEATURES` order, each `[rows, length]`.
    Packing is first-fit decreasing on two capacities: an example goes into the first row (in order of
    creation) with room for both its parts, examples taken by decreasing share of the two lengths."""
    n = len(enc_lengths)
    if pack:
        bins: list[list[int]] = []
        free_enc, free_dec = np.zeros(n, np.int64), np.zeros(n, np.int64)
        size = enc_lengths / enc_length + dec_lengths / dec_length
        for i in np.argsort(-size, kind="stable"):
            fits = np.flatnonzero(
                (free_enc[: len(bins)] >= enc_lengths[i]) & (free_dec[: len(bins)] >= dec_lengths[i])
            )
            if len(fits):
                j = fits[0]
                bins[j].append(i)
            else:
                j = len(bins)
                bins.append([i])
                free_enc[j], free_dec[j] = enc_length, dec_length
            free_enc[j] -= enc_lengths[i]
            free_dec[j] -= dec_lengths[i]
        bins = sorted((sorted(b) for b in bins), key=lambda b: b[0])
    else:
        bins = [[i] for i in range(n)]
    out = [
        np.zeros((len(bins), enc_length if k < 3 else dec_length), np.int32)
        for k in range(len(_ENC_DEC_ROW_FEATURES))
    ]
    e_tok, e_seg, e_pos, d_tok, d_loss, d_seg, d_pos, d_lang = out
    for r, members in enumerate(bins):
        e0 = d0 = 0
        for segment, i in enumerate(members, start=1):
            ne, nd = enc_lengths[i], dec_lengths[i]
            e_tok[r, e0 : e0 + ne] = enc_tokens[i, :ne]
            e_seg[r, e0 : e0 + ne] = segment
            e_pos[r, e0 : e0 + ne] = np.arange(ne)
            d_tok[r, d0 : d0 + nd] = dec_tokens[i, :nd]
            d_loss[r, d0 : d0 + nd] = 1
            d_seg[r, d0 : d0 + nd] = segment
            d_pos[r, d0 : d0 + nd] = np.arange(nd)
            d_lang[r, d0 : d0 + nd] = language_ids[i]
            e0, d0 = e0 + ne, d0 + nd
    return tuple(out)


class EncoderDecoderFeatureConverter(seqio.FeatureConverter):
    """Aya (inputs, targets) examples -> T5X/seqio encoder-decoder rows (mT5, Aya 101).

    Features, all int32; encoder ones `[task_feature_lengths["inputs"]]`, decoder ones `[..["targets"]]`:
    `encoder_input_tokens, encoder_segment_ids, encoder_positions, decoder_target_tokens,
    decoder_input_tokens, decoder_loss_weights, decoder_segment_ids, decoder_positions,
    decoder_language_ids`. The layout is seqio's `EncDecFeatureConverter`'s (checked against it in the tests):
    `decoder_input_tokens` are the targets shifted right inside each segment, starting with
    `decoder_start_id` (mT5: 0 = pad), loss on every target token. Differences, on purpose: segment ids and
    positions come also without packing (1 and 0..n-1 on real tokens); packing is first-fit decreasing over
    chunks of `chunk_size` examples (denser than seqio's greedy packer); `decoder_language_ids` as in the
    decoder-only converter.

    T5 tasks end the encoder input with EOS, the Aya tasks here do not (the decoder-only models read prompt
    and answer as one sequence): pass `inputs_eos_id` (mT5: 1) to append it, after cutting the inputs to
    length - 1 (seqio's `append_eos_after_trim`). Over-long inputs are cut from the right and counted.
    """

    TASK_FEATURES = {
        "inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
        for name in ("decoder_input_tokens", *_ENC_DEC_ROW_FEATURES)
    }
    PACKING_FEATURE_DTYPES = {}

    def __init__(
        self,
        pack: bool = True,
        inputs_eos_id: int | None = None,
        decoder_start_id: int = 0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs,
    ):
        super().__init__(pack=pack, bos_id=decoder_start_id, **kwargs)
        self._inputs_eos_id = inputs_eos_id
        self._chunk_size = chunk_size
        self._lock = threading.Lock()
        self.stats = PackingStats()  # tokens: decoder (target) tokens; efficiency: of the decoder rows

    def _convert_features(
        self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
    ) -> tf.data.Dataset:
        enc_length, dec_length = task_feature_lengths["inputs"], task_feature_lengths["targets"]
        table = language_table()
        has_language = "language_code" in ds.element_spec
        eos = self._inputs_eos_id

        def prepare(ex):
            inputs, targets = ex["inputs"], ex["targets"]
            full = tf.size(inputs, out_type=tf.int32) + (1 if eos is not None else 0)
            if eos is not None:
                inputs = tf.concat([inputs[: enc_length - 1], [eos]], 0)
            if has_language:
                language = language_ids(table, ex["language_code"])
            else:
                language = tf.constant(languages.UNKNOWN_LANGUAGE_ID, tf.int32)
            return {
                "enc": inputs[:enc_length],
                "dec": targets[:dec_length],
                "full_enc": full,
                "full_dec": tf.size(targets, out_type=tf.int32),
                "language": language,
            }

        def pack_chunk(chunk):
            def run(enc, full_enc, dec, full_dec, langs):
                enc_lengths, dec_lengths = np.minimum(full_enc, enc_length), np.minimum(full_dec, dec_length)
                rows = pack_pairs(
                    enc, enc_lengths, dec, dec_lengths, langs, enc_length, dec_length, self.pack
                )
                with self._lock:
                    self.stats.examples += len(full_enc)
                    self.stats.truncated += int(((full_enc > enc_length) | (full_dec > dec_length)).sum())
                    self.stats.rows += len(rows[0])
                    self.stats.tokens += int(dec_lengths.sum())
                return rows

            rows = tf.numpy_function(
                run,
                [chunk["enc"], chunk["full_enc"], chunk["dec"], chunk["full_dec"], chunk["language"]],
                [tf.int32] * len(_ENC_DEC_ROW_FEATURES),
                stateful=True,
            )
            out = {}
            for name, value in zip(_ENC_DEC_ROW_FEATURES, rows, strict=True):
                value.set_shape([None, enc_length if name.startswith("encoder") else dec_length])
                out[name] = value
            return tf.data.Dataset.from_tensor_slices(out)

        def add_inputs(row):
            # Unpacked, seqio shifts the whole row (the EOS lands on the first padding position, where the
            # loss weight is 0); kept identical to it.
            row["decoder_input_tokens"] = seqio.utils.make_autoregressive_inputs(
                row["decoder_target_tokens"],
                sequence_id=row["decoder_segment_ids"] if self.pack else None,
                bos_id=self.bos_id,
            )
            return row

        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.filter(lambda ex: ex["full_dec"] > 0)
        shapes = {"enc": [None], "dec": [None], "full_enc": [], "full_dec": [], "language": []}
        ds = ds.padded_batch(self._chunk_size, padded_shapes=shapes)
        ds = ds.flat_map(pack_chunk)
        return ds.map(add_inputs, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        return {
            name: task_feature_lengths["inputs" if name.startswith("encoder") else "targets"]
            for name in self.MODEL_FEATURES
        }


def make_converter(
    kind: str, *, pack: bool, eos_id: int, decoder_start_id: int = 0
) -> seqio.FeatureConverter:
    """The converter of a model family's rows (`Family.converter` in aya_jax/models/families.py): "decoder"
    (prompt and answer as one packed sequence) or "encoder_decoder" (the prompt, ending with `eos_id`, as the
    encoder input; the answer as the decoder target behind `decoder_start_id`)."""
    if kind == "decoder":
        return DecoderPackedFeatureConverter(pack=pack)
    if kind == "encoder_decoder":
        return EncoderDecoderFeatureConverter(
            pack=pack, inputs_eos_id=eos_id, decoder_start_id=decoder_start_id
        )
    raise ValueError(f"unknown row layout {kind!r} (decoder, encoder_decoder)")
