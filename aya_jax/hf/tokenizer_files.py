"""The tokenizer files of a Hugging Face export made from one of the project's SentencePiece vocabularies, so that
`transformers.AutoTokenizer.from_pretrained(export)` encodes text — the chat format included — to exactly the ids
the run was trained on.

The SentencePiece unigram model becomes a `tokenizers` Unigram model with the same pieces, scores, unknown id
and byte fallback. What SentencePiece does around the model is rebuilt with `tokenizers` parts:

* normalisation: the project trains with the identity rule and no whitespace clean-up, so only " " -> "▁";
  a model trained with SentencePiece's dummy prefix also gets a "▁" in front (`Prepend`);
* segmentation: none — SentencePiece's unigram encoder runs one Viterbi search over the whole text (pieces were
  learnt within words, so no piece crosses a word boundary; whitespace-only pieces exist), and so does the
  Unigram model when no pre-tokenizer splits the text first;
* special pieces: control pieces (`<pad>`, `</s>`), `<unk>` and the user-defined pieces — the chat template's
  markers — become added tokens, matched in the text before the model runs, as SentencePiece matches
  user-defined pieces;
* decoding: "▁" -> " ", byte pieces (`<0xE2>`, ...) back to UTF-8 (`ByteFallback` + `Fuse`).

Two known differences, both outside the training format: a segmentation tie (two orders of the same pieces,
e.g. "▁" + "▁▁▁▁▁▁▁" vs "▁▁▁▁▁▁▁" + "▁" in deeply indented code) is broken by float rounding, which differs
between SentencePiece (float32) and `tokenizers` (float64); and a control piece typed as text ("</s>") is the
special token for transformers but spelt out by SentencePiece, as in transformers' own SentencePiece conversions.

`tokenizer_config.json` names transformers' generic `PreTrainedTokenizerFast`, the special tokens, and — when the
vocabulary has the chat markers — the Cohere chat template (aya_jax/hf/cohere.py `CHAT_TEMPLATE`), whose
rendering is the project's training format (aya_jax/data/chat_template.py). tests/hf/test_tokenizer_files.py
checks ids against SentencePiece and against the training pipeline.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import tokenizers
from sentencepiece import sentencepiece_model_pb2
from tokenizers import decoders, models, normalizers

from aya_jax.data import chat_template
from aya_jax.hf import cohere

SPACE = "▁"


def from_sentencepiece(model_path: str | pathlib.Path) -> tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` that encodes like the SentencePiece unigram model at `model_path`."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(pathlib.Path(model_path).read_bytes())
    if proto.trainer_spec.model_type != proto.trainer_spec.UNIGRAM:
        raise ValueError(f"{model_path}: not a unigram SentencePiece model (only those are converted)")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    tokenizer = tokenizers.Tokenizer(models.Unigram(pieces, proto.trainer_spec.unk_id, byte_fallback=True))
    # SentencePiece writes "▁" before the first piece of a text when trained with a dummy prefix.
    dummy_prefix = proto.normalizer_spec.add_dummy_prefix
    space = normalizers.Replace(" ", SPACE)
    tokenizer.normalizer = (
        normalizers.Sequence([space, normalizers.Prepend(SPACE)]) if dummy_prefix else space
    )
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if dummy_prefix else []))
    kinds = proto.SentencePiece.Type
    special = [p.piece for p in proto.pieces if p.type in (kinds.CONTROL, kinds.UNKNOWN, kinds.USER_DEFINED)]
    tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in special])
    return tokenizer


def tokenizer_config(tokenizer: tokenizers.Tokenizer, max_length: int) -> dict[str, Any]:
    """tokenizer_config.json for the converted tokenizer: the generic fast tokenizer class, its special tokens,
    and the chat template when the markers are single tokens."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    has_chat = all(t in vocab for t in chat_template.SPECIAL_TOKENS)
    out: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": chat_template.END_OF_TURN if has_chat else "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(max_length),
    }
    if has_chat:
        out["bos_token"] = chat_template.BOS
        out["chat_template"] = cohere.CHAT_TEMPLATE
    return out


def write(model_path: str | pathlib.Path, out_dir: str | pathlib.Path, max_length: int) -> tuple[int, ...]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json for the SentencePiece model into
    `out_dir`; returns the ids that end a completion (the end-of-turn marker and EOS), for generation_config."""
    out = pathlib.Path(out_dir)
    tokenizer = from_sentencepiece(model_path)
    tokenizer.save(str(out / "tokenizer.json"))
    config = tokenizer_config(tokenizer, max_length)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in config}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return tuple(vocab[t] for t in (chat_template.END_OF_TURN, "</s>") if t in vocab)
