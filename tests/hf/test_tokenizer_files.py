"""The tokenizer files exported for a run on one of the project's SentencePiece vocabularies: transformers'
`AutoTokenizer` loads them and encodes text — the chat format included — to SentencePiece's ids, decodes back,
and renders a conversation with its chat template to the ids the training pipeline writes."""

import json

import pytest

transformers = pytest.importorskip("transformers")

from aya_jax.data import chat_template, default_data, pipeline, sources  # noqa: E402
from aya_jax.hf import tokenizer_files  # noqa: E402
from configs import common  # noqa: E402

EDGE_CASES = [
    "", " ", "  two  spaces  ", "\ttab\nnewline\r\n", "trailing space ", "1234567890 3.14", "emoji 🦜🌍 ok",
    "mixed 中文 and العربية and हिन्दी", "<|END_OF_TURN_TOKEN|>inside<|START_OF_TURN_TOKEN|>text",
    "\u00a0nbsp\u3000ideographic space", "ǅ combining é vs é",
]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default data's 2000-piece vocabulary (markers reserved, as every project vocabulary) and its
    converted tokenizer directory."""
    config = common.base_config().data
    config.data_dir = str(tmp_path_factory.mktemp("data"))
    config.vocab.size = 2000
    spec = pipeline.prepare(config)
    out = tmp_path_factory.mktemp("hf_tokenizer")
    stops = tokenizer_files.write(spec.vocab.sentencepiece_model_file, out, max_length=256)
    rows = list(sources.AyaJsonlReader([str(default_data.split_paths(config)["validation"])], strict=True))
    return spec.vocab, out, stops, rows


def test_encodes_like_sentencepiece_and_decodes_back(exported):
    spm, out, stops, rows = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    texts = EDGE_CASES + [r["inputs"] for r in rows] + [r["targets"] for r in rows]
    texts += [
        chat_template.prompt_text(r["inputs"]) + chat_template.completion_text(r["targets"]) for r in rows
    ]
    mismatches, ties = [], 0
    for text in texts:
        ours, theirs = tokenizer(text, add_special_tokens=False)["input_ids"], spm.encode(text)
        if ours != theirs:
            # Allowed only as a tie: the same pieces in another order (e.g. "▁" + "▁▁▁▁▁▁▁" vs "▁▁▁▁▁▁▁" + "▁"
            # in an indented code block), so the same total score; float32 (SentencePiece) and float64
            # (tokenizers) rounding break such ties differently.
            ties += sorted(ours) == sorted(theirs)
            mismatches += [text] if sorted(ours) != sorted(theirs) else []
    assert not mismatches, (
        f"{len(mismatches)} of {len(texts)} texts encode differently, e.g. {mismatches[:3]}"
    )
    assert ties <= 3, ties  # 2 of the ~1500 texts here (one code block, as a reply and in its chat rendering)
    for text in texts[:200]:
        ids = spm.encode(text)
        assert tokenizer.decode(ids) == spm.decode(ids), text
    assert stops == (spm.encode(chat_template.END_OF_TURN)[0], spm.eos_id)
    # Control pieces typed as text: SentencePiece spells them out, transformers reads them as the special token
    # (its usual behaviour for added special tokens); the chat markers are special in both.
    assert (
        tokenizer("a</s>", add_special_tokens=False)["input_ids"][-1] == spm.eos_id != spm.encode("a</s>")[-1]
    )


def test_chat_template_renders_the_training_format(exported):
    spm, out, _, rows = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert (
        config["eos_token"] == chat_template.END_OF_TURN
        and tokenizer.eos_token_id == spm.encode(chat_template.END_OF_TURN)[0]
    )
    for row in rows[:50]:
        user = [{"role": "user", "content": row["inputs"]}]
        ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert list(ids) == spm.encode(chat_template.prompt_text(row["inputs"]))
        turn = [*user, {"role": "assistant", "content": row["targets"]}]
        text = tokenizer.apply_chat_template(turn, tokenize=False)
        assert text == chat_template.prompt_text(row["inputs"]) + chat_template.completion_text(
            row["targets"]
        )


def test_a_non_unigram_model_is_refused(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"sentence number {i} of a tiny corpus" for i in range(200)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "bpe"), vocab_size=60,
                                   model_type="bpe")  # fmt: skip
    with pytest.raises(ValueError, match="bpe.model: not a unigram SentencePiece model"):
        tokenizer_files.from_sentencepiece(tmp_path / "bpe.model")
