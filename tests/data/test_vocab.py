"""Vocabularies: the trained SentencePiece model round-trips every script; the Command-R tokenizer matches
llama.cpp's reference tokenizations."""

import logging
import pickle
import time

import pytest
import seqio
import tensorflow as tf

from aya_jax.data import default_data, sources, vocab

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Größenwahn: Ça coûte 12,50 € — señor, ¿qué tal?",
    "Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "你好，世界！我喜欢学习新的语言。",
    "今日はいい天気ですね。カタカナもあります。",
    "안녕하세요, 세계! 만나서 반갑습니다.",
    "สวัสดีชาวโลก",
    "Γειά σου Κόσμε · שלום עולם · ሰላም ልዑል",
    "  two leading spaces, a tab\tand a newline\nend",
    "emoji and rare chars: 🤖🚀 ᏣᎳᎩ ꦧꦱꦗꦮ",
]


@pytest.fixture(scope="module")
def spm_vocab(data_dir, make_data_config):
    config = make_data_config(data_dir)
    train = default_data.split_paths(config)["train"]
    return vocab.vocabulary(config, train_rows=sources.AyaJsonlReader([str(train)], strict=True))


def test_sentencepiece_conventions(spm_vocab):
    assert isinstance(spm_vocab, seqio.SentencePieceVocabulary)
    spm_vocab.encode_tf(tf.constant("x"))  # builds the cached TF tokenizer, which pickling must leave out
    assert pickle.loads(pickle.dumps(spm_vocab)) == spm_vocab
    assert spm_vocab.vocab_size == 2000
    assert (spm_vocab.pad_id, spm_vocab.eos_id, spm_vocab.unk_id) == (0, 1, 2)
    assert spm_vocab.tokenizer.bos_id() == -1  # no BOS: seqio's decoder start token is the pad id


@pytest.mark.parametrize("sentence", SENTENCES)
def test_sentencepiece_round_trip(spm_vocab, sentence):
    ids = spm_vocab.encode(sentence)
    assert 0 not in ids and 1 not in ids  # never pad or EOS inside text
    assert spm_vocab.decode(ids) == sentence
    tf_ids = spm_vocab.encode_tf(tf.constant(sentence)).numpy().tolist()
    assert tf_ids == ids
    # Without SentencePiece's dummy prefix neither decoder drops leading spaces.
    assert spm_vocab.decode_tf(tf.constant(ids)).numpy().decode("utf-8") == sentence


def test_sentencepiece_model_is_cached(spm_vocab, data_dir, make_data_config):
    config = make_data_config(data_dir)
    train = default_data.split_paths(config)["train"]
    path = spm_vocab.sentencepiece_model_file
    mtime = tf.io.gfile.stat(path).mtime_nsec
    again = vocab.vocabulary(config, train_rows=sources.AyaJsonlReader([str(train)], strict=True))
    assert again.sentencepiece_model_file == path and tf.io.gfile.stat(path).mtime_nsec == mtime
    # The model file is named after what it was trained on and with.
    config.vocab.size = 2100
    other = vocab.vocabulary(config, train_rows=sources.AyaJsonlReader([str(train)], strict=True))
    assert other.sentencepiece_model_file != path and other.vocab_size == 2100
    # A given model file is used as it is.
    config.vocab.path = path
    assert vocab.vocabulary(config).sentencepiece_model_file == path


def test_sentencepiece_8000_pieces_trains_fast(data_dir, make_data_config, tmp_path):
    train = default_data.split_paths(make_data_config(data_dir))["train"]
    text = list(vocab.balanced_text(sources.AyaJsonlReader([str(train)], strict=True)))
    start = time.perf_counter()
    path = vocab.train_sentencepiece(text, size=8000, cache_dir=tmp_path)
    seconds = time.perf_counter() - start
    print(f"\nSentencePiece: 8000 pieces on {len(text)} sentences in {seconds:.1f}s")
    assert seconds < 30
    assert seqio.SentencePieceVocabulary(str(path)).vocab_size == 8000


def test_a_smaller_model_than_asked_for_says_so(tmp_path, caplog):
    # A dozen sentences hold far fewer than 8000 pieces; without a hard limit SentencePiece stops early.
    with caplog.at_level(logging.INFO, logger="aya_jax.data.vocab"):
        path = vocab.train_sentencepiece(SENTENCES, size=8000, cache_dir=tmp_path)
    pieces = seqio.SentencePieceVocabulary(str(path)).vocab_size
    assert pieces < 8000
    [message] = [r.getMessage() for r in caplog.records if "trained" in r.getMessage()]
    assert message.startswith(
        f"trained a {pieces}-piece SentencePiece model (config.data.vocab.size asked for 8000: this text gives no more)"
    )
    # The train_vocab job names its own field.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aya_jax.data.vocab"):
        vocab.train_sentencepiece(
            SENTENCES, size=7000, cache_dir=tmp_path, size_field="config.train_vocab.size"
        )
    assert "-piece SentencePiece model (config.train_vocab.size asked for 7000:" in caplog.text


def test_bad_vocab_config_is_one_clear_error(data_config):
    with pytest.raises(ValueError, match=r"config.data.vocab.size=500 is too small for this text.*try >= "):
        vocab.train_sentencepiece(
            ["你好世界" * 3, "こんにちは", *map(chr, range(0x4E00, 0x4F00))], size=500, cache_dir=None
        )
    data_config.vocab.kind = "wordpiece"
    with pytest.raises(ValueError, match=r"config.data.vocab.kind='wordpiece': expected"):
        vocab.vocabulary(data_config)
    data_config.vocab.kind = "hf_tokenizer"
    with pytest.raises(ValueError, match="needs config.data.vocab.path"):
        vocab.vocabulary(data_config)
    data_config.vocab.path = "/nonexistent/tokenizer.json"
    with pytest.raises(FileNotFoundError, match="/nonexistent/tokenizer.json"):
        vocab.vocabulary(data_config)


# ---- Command-R (Hugging Face tokenizers) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def command_r(shared_data):
    return vocab.HfTokenizerVocabulary(str(shared_data / "tokenizers/command_r/tokenizer.json.gz"))


def _llama_cpp_cases(folder):
    """llama.cpp's test-tokenizer-0 format: .inp holds the texts, each followed by
    "\\n__ggml_vocab_test__\\n"; .out holds one line per text, its ids each preceded by a space (written by
    convert_hf_to_gguf_update.py with `tokenizer.encode(text, add_special_tokens=False)`, so the texts keep
    their leading spaces and no BOS)."""
    inp = (folder / "ggml-vocab-command-r.gguf.inp").read_bytes().decode("utf-8")
    out = (folder / "ggml-vocab-command-r.gguf.out").read_bytes().decode("utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    assert texts[-1] == ""  # the file ends with a separator
    expected = [[int(t) for t in line.split()] for line in out.split("\n")[:-1]]
    return texts[:-1], expected


def test_command_r_matches_llama_cpp_reference(command_r, shared_data):
    texts, expected = _llama_cpp_cases(shared_data / "tokenizers/command_r")
    assert len(texts) == len(expected) == 46  # the README says 47; these files hold 46 cases
    assert "" in texts and " " in texts and "\n" in texts  # the whitespace-only cases are there
    mismatches = [
        (t, e, command_r.encode(t)) for t, e in zip(texts, expected, strict=True) if command_r.encode(t) != e
    ]
    assert not mismatches


def test_command_r_vocabulary(command_r):
    assert command_r.vocab_size == 256_000
    assert (command_r.pad_id, command_r.unk_id, command_r.bos_id, command_r.eos_id) == (0, 1, 5, 255001)
    for sentence in SENTENCES[:10]:
        ids = command_r.encode(sentence)
        assert command_r.decode(ids) == sentence
        assert command_r.encode_tf(tf.constant(sentence)).numpy().tolist() == ids
        # seqio's decode stops at EOS; padding and special tokens render as nothing.
        assert command_r.decode([*ids, command_r.eos_id, *ids]) == sentence
        assert command_r.decode_tf(tf.constant([*ids, command_r.eos_id, 0])).numpy().decode() == sentence
    batch = tf.constant([command_r.encode("Hello world") + [0], command_r.encode("Bonjour") + [0, 0]][:1])
    assert command_r.decode_tf(batch).numpy().tolist() == [b"Hello world"]
    assert command_r == vocab.HfTokenizerVocabulary(command_r.path)
