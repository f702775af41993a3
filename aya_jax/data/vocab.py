"""Vocabularies: a SentencePiece model (given, or trained on the task's text and cached), or a Hugging Face
`tokenizers` tokenizer.json (the Command-R / Aya 23 / Aya Expanse tokenizer).

`config.data.vocab.kind`:
* "sentencepiece": `vocab.path` is a .model file; "" trains a unigram model of `vocab.size` pieces with
  seqio's conventions (pad=0, eos=1, unk=2, no bos) on the train split's text, language-balanced (at most
  `MAX_ROWS_PER_LANGUAGE` rows per language), and caches it under `<data_dir>/vocab/` keyed by a hash of the
  exact training text and options: the same data and options give the same file name, so every host (and every
  later run) reuses one model. Byte fallback and identity normalisation make `decode(encode(s)) == s` for any
  string, in any script.
* "hf_tokenizer": `vocab.path` is a tokenizer.json or tokenizer.json.gz.

A leaf of the data package's one import direction (see `aya_jax.data`): it imports only `cache` and
`chat_template`.
"""

import collections
import gzip
import hashlib
import io
import json
import logging
import math
import pathlib
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import sentencepiece as spm
import seqio
import tensorflow as tf
import tokenizers

from aya_jax.data import cache, chat_template

log = logging.getLogger(__name__)

MAX_ROWS_PER_LANGUAGE = 500
# SentencePiece's input_sentence_size: a ceiling on memory for large custom data sets.
MAX_SENTENCES = 1_000_000
_MIN_COVERAGE = 0.98  # SentencePiece refuses a lower character_coverage

# Options that define the model (all part of the cache key). Identity normalisation and no whitespace cleanup:
# a tokenizer for generation must give back exactly the text it was given (NFKC would rewrite e.g. full-width
# and compatibility characters).
SENTENCEPIECE_OPTIONS = {
    "model_type": "unigram",
    # No "▁" in front of the text: a prompt starting with the chat markers stays marker-first (as Command-R's
    # tokenizer writes it), and the exported tokenizer.json can match SentencePiece exactly (hf/tokenizer_files.py).
    "add_dummy_prefix": False,
    "character_coverage": 0.9995,
    "byte_fallback": True,
    "split_digits": True,
    "pad_id": 0,
    "eos_id": 1,
    "unk_id": 2,
    "bos_id": -1,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "allow_whitespace_only_pieces": True,
    "hard_vocab_limit": False,  # a small custom corpus may not support `size` pieces: fewer, not an error
    "max_sentence_length": 16384,
}


# The text fields of every row schema (see `sources`), in the order they are used.
TEXT_FIELDS = ("inputs", "targets", "prompt", "chosen", "rejected")


def balanced_text(rows: Iterable[Mapping[str, str]], max_rows_per_language: int = MAX_ROWS_PER_LANGUAGE):
    """The text fields (`inputs` and `targets`, or `prompt`, `chosen`, ...) of the first
    `max_rows_per_language` rows of each language: without the cap, high-resource languages would take most
    of the pieces."""
    taken = collections.Counter()
    for row in rows:
        code = row["language_code"]
        if taken[code] < max_rows_per_language:
            taken[code] += 1
            for field in TEXT_FIELDS:
                if row.get(field):
                    yield row[field]


def _character_coverage(
    sentences: Sequence[str], size: int, coverage: float, size_field: str = "config.data.vocab.size"
) -> float:
    """`coverage`, lowered for small vocabularies so that single characters take at most half of the pieces
    left after the 256 byte pieces and 3 specials, but not below SentencePiece's floor of 0.98. At 0.9995 the
    default data needs ~3500 characters (mostly Han); a 2000-piece model leaves the rarer ones to byte
    fallback, which still round-trips exactly."""
    free = size - 256 - 3
    counts = np.sort(np.fromiter(collections.Counter("".join(sentences)).values(), np.int64))[::-1]
    cumulative = np.cumsum(counts) / max(1, counts.sum())  # coverage of the k most frequent characters
    needed_at_floor = int(np.searchsorted(cumulative, _MIN_COVERAGE)) + 1
    if needed_at_floor > free:
        raise ValueError(
            f"{size_field}={size} is too small for this text: covering {_MIN_COVERAGE:.0%} of its "
            f"characters takes {needed_at_floor} pieces besides 259 byte and special pieces (try >= "
            f"{2 * needed_at_floor + 259})"
        )
    budget = free // 2
    if len(counts) <= budget:
        return coverage
    reachable = math.floor(cumulative[budget - 1] * 1e4) / 1e4  # rounded down: stay inside the budget
    return max(_MIN_COVERAGE, min(coverage, reachable))


def train_sentencepiece(
    sentences: Sequence[str],
    *,
    size: int,
    cache_dir: pathlib.Path,
    name: str = "spm",
    user_defined_symbols: Sequence[str] = (),
    size_field: str = "config.data.vocab.size",
) -> pathlib.Path:
    """Train (or reuse from `cache_dir`) a SentencePiece model on `sentences`; returns the .model path.
    `user_defined_symbols` (e.g. the chat template's markers) become single pieces, never split. The model
    may have fewer than `size` pieces (`hard_vocab_limit` is off); messages name the config field that asked
    for `size`, `size_field`."""
    sentences = list(sentences)[:MAX_SENTENCES]
    options = dict(SENTENCEPIECE_OPTIONS, vocab_size=size)
    if user_defined_symbols:
        options["user_defined_symbols"] = ",".join(user_defined_symbols)
    options["character_coverage"] = _character_coverage(
        sentences, size, options["character_coverage"], size_field
    )
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for s in sentences:
        digest.update(s.encode("utf-8") + b"\0")
    path = cache_dir / f"{name}_{size}_{digest.hexdigest()[:16]}.model"
    if path.is_file():
        return path
    start = time.perf_counter()
    model = io.BytesIO()
    # Two threads at most: training is part of start-up on CI and laptops (8000 pieces: about a second here).
    # SentencePiece's unigram trainer gives the same model for the same input order and options, so hosts that
    # train concurrently write identical bytes.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        num_threads=2,
        input_sentence_size=MAX_SENTENCES,
        shuffle_input_sentence=False,
        minloglevel=2,
        **options,
    )
    cache.atomic_write_bytes(path, model.getvalue())
    # The model's own count: without a hard limit, text with too few distinct pieces gives fewer than `size`,
    # and the model's count is the vocabulary the run gets.
    pieces = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    asked = "" if pieces == size else f" ({size_field} asked for {size}: this text gives no more)"
    log.log(
        logging.INFO if pieces == size else logging.WARNING,
        "trained a %d-piece SentencePiece model%s on %d sentences in %.1fs: %s",
        pieces, asked, len(sentences), time.perf_counter() - start, path,
    )  # fmt: skip
    return path


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
    """seqio's SentencePiece vocabulary, keeping one TF tokenizer instead of building one per traced function:
    every epoch's pipeline would otherwise load the model again (and tf_text logs a line each time)."""

    _tf_tokenizer = None

    @property
    def tf_tokenizer(self):
        if self._tf_tokenizer is None:
            with tf.init_scope():  # eagerly, even when first asked for while tracing a tf.data function
                self._tf_tokenizer = super().tf_tokenizer
        return self._tf_tokenizer

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_tf_tokenizer", None)  # a TF resource: rebuilt lazily after unpickling (and not compared)
        return state


class HfTokenizerVocabulary(seqio.Vocabulary):
    """A seqio vocabulary over a Hugging Face `tokenizers` tokenizer.json (optionally gzipped).

    Encoding adds no special tokens (no BOS): seqio's tasks and feature converters add EOS and decoder-start
    tokens themselves. pad / eos / unk come from the tokenizer's special tokens, first match in the lists
    below (for Command-R: <PAD>=0, <|END_OF_TURN_TOKEN|>=255001 as in the Aya models' config.json, <UNK>=1).
    The TF ops call the Rust tokenizer through `tf.numpy_function`: fine for input pipelines, not for graphs
    that must be serialised.
    """

    PAD_TOKENS = ("<PAD>", "<pad>", "[PAD]", "<|pad|>", "<|padding|>")
    EOS_TOKENS = ("<|END_OF_TURN_TOKEN|>", "<EOS_TOKEN>", "</s>", "<eos>", "<|endoftext|>", "<|im_end|>")
    UNK_TOKENS = ("<UNK>", "<unk>", "[UNK]", "<|unk|>")
    BOS_TOKENS = ("<BOS_TOKEN>", "<s>", "<bos>", "<|begin_of_text|>")

    def __init__(self, path: str, extra_ids: int = 0):
        self._path = str(path)
        with tf.io.gfile.GFile(self._path, "rb") as f:
            data = f.read()
        if self._path.endswith(".gz"):
            data = gzip.decompress(data)
        self._tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        find = lambda names: next((vocab[n] for n in names if n in vocab), None)
        self._pad = find(self.PAD_TOKENS)
        self._eos = find(self.EOS_TOKENS)
        self._unk = find(self.UNK_TOKENS)
        self._bos = find(self.BOS_TOKENS)
        if self._pad not in (None, 0):
            # Packing, masks and seqio's feature converters all take 0 as padding.
            raise ValueError(f"{self._path}: pad token has id {self._pad}; aya_jax needs pad id 0")
        super().__init__(extra_ids=extra_ids)

    @property
    def path(self) -> str:
        return self._path

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        return self._tokenizer

    @property
    def bos_id(self) -> int | None:
        return self._bos

    @property
    def eos_id(self) -> int | None:
        return self._eos

    @property
    def unk_id(self) -> int | None:
        return self._unk

    @property
    def _base_vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def _encode(self, s: str) -> list[int]:
        return self._tokenizer.encode(s, add_special_tokens=False).ids

    def _decode(self, ids) -> str:
        # Padding and special tokens (EOS included) render as nothing, as in SentencePiece's decode.
        ids = [int(i) for i in ids]
        return self._tokenizer.decode([i for i in ids if i != self._pad], skip_special_tokens=True)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        if s.shape.rank != 0:
            raise ValueError(
                f"HfTokenizerVocabulary.encode_tf takes one string (rank 0), got shape {s.shape}"
            )

        def encode(b):  # bytes in graph mode, a 0-d object array in eager mode
            b = b.item() if isinstance(b, np.ndarray) else b
            return np.asarray(self._encode(b.decode("utf-8")), dtype=np.int32)

        ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
        ids.set_shape([None])  # [length]
        return ids

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def decode(batch):  # [length] or [batch, length]
            if batch.ndim == 1:
                return np.asarray(self._decode(batch).encode("utf-8"), dtype=object)
            return np.asarray([self._decode(row).encode("utf-8") for row in batch], dtype=object)

        out = tf.numpy_function(decode, [ids], tf.string, stateful=False)
        out.set_shape(ids.shape[:-1])
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, HfTokenizerVocabulary) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self._path)

    def __str__(self) -> str:
        return f"HfTokenizerVocabulary(path={self._path}, size={self.vocab_size})"


def vocabulary(data_config, train_rows: Iterable[Mapping[str, str]] | None = None) -> seqio.Vocabulary:
    """The vocabulary `config.data.vocab` asks for. `train_rows` (Aya-format rows of the train split) are only
    read when a SentencePiece model has to be trained."""
    kind, path = data_config.vocab.kind, data_config.vocab.path
    if kind == "sentencepiece":
        if not path:
            if train_rows is None:
                raise ValueError(
                    "config.data.vocab.path is empty and there is no text to train a SentencePiece model on"
                )
            path = train_sentencepiece(
                list(balanced_text(train_rows)),
                size=data_config.vocab.size,
                cache_dir=cache.data_dir(data_config) / "vocab",
                # the chat markers are single pieces, whatever config.data.format: one vocabulary serves both
                user_defined_symbols=chat_template.SPECIAL_TOKENS,
            )
        elif not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"config.data.vocab.path: no SentencePiece model at {path}")
        return SentencePieceVocabulary(str(path))
    if kind == "hf_tokenizer":
        if not path:
            raise ValueError(
                "config.data.vocab.kind='hf_tokenizer' needs config.data.vocab.path (a tokenizer.json)"
            )
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"config.data.vocab.path: no tokenizer.json at {path}")
        return HfTokenizerVocabulary(path)
    raise ValueError(f"config.data.vocab.kind={kind!r}: expected 'sentencepiece' or 'hf_tokenizer'")


# ============================================================================================================
# Codecs: text <-> token ids for generation and RL, whatever the vocabulary
# ============================================================================================================


class HfTokenizerCodec:
    """A tokenizer.json[.gz] through the `tokenizers` library (special tokens in the text are parsed as such)."""

    CHAT_TOKENS = ("<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>")

    def __init__(self, path: pathlib.Path):
        data = pathlib.Path(path).read_bytes()
        if pathlib.Path(path).suffix == ".gz":
            data = gzip.decompress(data)
        self.tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
        token_ids = self.tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.has_cohere_chat_tokens = all(t in token_ids for t in self.CHAT_TOKENS)
        self.pad_id = token_ids.get("<PAD>", 0)
        self.eos_ids = tuple(token_ids[t] for t in ("<|END_OF_TURN_TOKEN|>", "<EOS_TOKEN>") if t in token_ids)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


class SeqioCodec:
    """A seqio vocabulary (the project's SentencePiece models): no BOS; a completion ends at the chat template's
    end-of-turn piece when the vocabulary has the markers as single pieces, or at the vocabulary's EOS."""

    def __init__(self, vocab: seqio.Vocabulary):
        self.vocab = vocab
        self.vocab_size = int(vocab.vocab_size)
        self.pad_id = int(vocab.pad_id)
        marker_ids = {t: list(vocab.encode(t)) for t in chat_template.SPECIAL_TOKENS}
        self.has_cohere_chat_tokens = all(len(ids) == 1 for ids in marker_ids.values())
        end_of_turn = (marker_ids[chat_template.END_OF_TURN][0],) if self.has_cohere_chat_tokens else ()
        self.eos_ids = end_of_turn + ((int(vocab.eos_id),) if vocab.eos_id is not None else ())

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        del add_special_tokens
        return list(self.vocab.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocab.decode([int(i) for i in ids])


class IncrementalText:
    """Decoded text of a growing token list, released as it becomes final: a trailing U+FFFD (an incomplete
    UTF-8 sequence of byte-level tokens) is held back until the next token completes it."""

    def __init__(self, codec: "HfTokenizerCodec | SeqioCodec"):
        self.codec, self.ids, self.printed = codec, [], ""

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.codec.decode(self.ids).rstrip("\ufffd")
        if not text.startswith(self.printed):
            return ""  # the decoder revised earlier text (rare); print the rest once it agrees again
        new, self.printed = text[len(self.printed) :], text
        return new
