"""The Cohere chat template: the Python rendering against the tokenizer's own Jinja template, the TF
preprocessor against Python, and token ids against the Command-R tokenizer."""

import json

import pytest
import seqio
import tensorflow as tf

from aya_jax.data import chat_template, tasks, vocab

CONVERSATIONS = [
    [{"role": "user", "content": "Bonjour ! Comment ça va ?"}],
    [{"role": "user", "content": "  שלום, מה שלומך?\n"}, {"role": "assistant", "content": "\tטוב, תודה. "}],
    [
        {"role": "system", "content": " You answer in Swahili. "},
        {"role": "user", "content": "What is the capital of Kenya?"},
        {"role": "assistant", "content": "Nairobi ni mji mkuu wa Kenya."},
        {"role": "user", "content": "名古屋は？\u3000"},
    ],
]


@pytest.fixture(scope="module")
def jinja_template(shared_data):
    jinja2 = pytest.importorskip("jinja2", reason="the reference renderer (installed with the [hf] extra)")
    templates = json.loads((shared_data / "tokenizers/command_r/chat_templates_from_gguf.json").read_text())
    env = jinja2.Environment()
    env.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(ValueError(message))
    return env.from_string(templates["tokenizer.chat_template"])


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_render_matches_the_tokenizers_jinja_template(jinja_template, messages, generation_prompt):
    expected = jinja_template.render(
        messages=messages, add_generation_prompt=generation_prompt, bos_token="<BOS_TOKEN>"
    )
    assert chat_template.render(messages, add_generation_prompt=generation_prompt) == expected


def test_tf_strip_is_pythons_strip():
    spaces = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    assert len(spaces) == 29  # every character Python's str.strip() removes
    texts = [spaces + "a b" + spaces, "\u200bzero-width stays\u200b", "\xa0x\u3000", "", spaces, "ünïcode ok"]
    got = chat_template.strip_tf(tf.constant(texts)).numpy()
    assert [g.decode() for g in got] == [t.strip() for t in texts]


def test_chat_task_tokens_equal_the_rendered_conversation(shared_data, tmp_path):
    command_r = vocab.HfTokenizerVocabulary(str(shared_data / "tokenizers/command_r/tokenizer.json.gz"))
    rows = [("  Habari gani?  ", "Nzuri sana, asante.\n", "swh"), ("こんにちは", " 元気です。", "jpn")]
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"inputs": i, "targets": t, "language_code": c}) + "\n" for i, t, c in rows)
    )
    task = tasks.register_aya_jsonl_task("chat_test", [str(path)], [], command_r, chat=True)
    examples = list(
        task.get_dataset({"inputs": 64, "targets": 64}, split="train", shuffle=False).as_numpy_iterator()
    )
    for (user, reply, _), example in zip(rows, examples, strict=True):
        conversation = chat_template.render(
            [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        )
        # inputs ++ targets (EOS = <|END_OF_TURN_TOKEN|>) is exactly the tokenized conversation.
        assert example["targets"][-1] == command_r.eos_id == 255001
        assert [*example["inputs"], *example["targets"]] == command_r.tokenizer.encode(
            conversation, add_special_tokens=False
        ).ids
        assert (
            example["inputs"][0] == 5
            and command_r.tokenizer.id_to_token(int(example["inputs"][-1])) == "<|CHATBOT_TOKEN|>"
        )
    seqio.TaskRegistry.remove("chat_test")


def test_sentencepiece_keeps_the_markers_whole(tmp_path):
    text = [chat_template.prompt_text(f"question {i} ?") + f"answer {i}" for i in range(300)]
    path = vocab.train_sentencepiece(
        text, size=300, cache_dir=tmp_path, user_defined_symbols=chat_template.SPECIAL_TOKENS
    )
    spm_vocab = vocab.SentencePieceVocabulary(str(path))
    pieces = [
        spm_vocab.tokenizer.id_to_piece(i) for i in spm_vocab.encode(chat_template.prompt_text("Salut"))
    ]
    assert pieces[0] == "▁"  # SentencePiece's dummy prefix (decoding removes it)
    pieces = pieces[1:]
    assert pieces[:3] == ["<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"]
    assert pieces[-2:] == ["<|START_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>"]
