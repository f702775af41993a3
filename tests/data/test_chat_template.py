"""The Cohere chat template: the Python rendering against the tokenizer's own Jinja template, the TF
preprocessor against Python, and token ids against the Command-R tokenizer."""

import json

import pytest
import seqio
import tensorflow as tf

from aya_jax import pretrained
from aya_jax.data import chat_template, feature_converters, prompt_converters, sources, tasks, vocab
from aya_jax.training import prompt_sets

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
    assert pieces[:3] == ["<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"]
    assert pieces[-2:] == ["<|START_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>"]


def test_one_conversation_reads_the_same_on_every_path(default_vocab_path, data_config, tmp_path):
    """An SFT row, a preference pair, an RL prompt set, a prompts task and the generate job all begin with the
    same token ids for one user turn: the model is asked exactly what it was trained on. The SFT and preference
    answers end with the end-of-turn marker, which is also where generation stops."""
    spm = vocab.SentencePieceVocabulary(str(default_vocab_path))
    codec = vocab.SeqioCodec(spm)
    user, chosen, rejected = "  ¿Dónde está la biblioteca?\n", " Está al final de la calle. ", "No sé."
    prefix = spm.encode(chat_template.prompt_text(user))
    end_of_turn = spm.encode(chat_template.END_OF_TURN)
    assert len(end_of_turn) == 1 and codec.has_cohere_chat_tokens and codec.eos_ids[0] == end_of_turn[0]
    assert spm.tokenizer.id_to_piece(prefix[0]) == chat_template.BOS

    def rows(name, schema, row):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps({**row, "language_code": "spa"}) + "\n")
        return tasks.register_rows_task(name, {"train": [str(path)]}, spm, schema=schema, chat=True)

    def first(task, converter, lengths):
        ds = task.get_dataset(lengths, split="train", shuffle=False)
        return next(converter(ds, lengths).as_numpy_iterator())

    sft = rows("paths_sft", sources.AYA_DATASET, {"inputs": user, "targets": chosen})
    row = first(sft, feature_converters.make_converter("decoder", pack=False, eos_id=spm.eos_id),
                {"inputs": 64, "targets": 64})  # fmt: skip
    tokens = row["decoder_target_tokens"][row["decoder_segment_ids"] == 1].tolist()
    weights = row["decoder_loss_weights"][row["decoder_segment_ids"] == 1].tolist()
    assert tokens == prefix + spm.encode(chosen.strip()) + end_of_turn
    assert weights == [0] * len(prefix) + [1] * (len(tokens) - len(prefix))  # loss on the answer and its end

    pair = rows("paths_pref", sources.PREFERENCE, {"prompt": user, "chosen": chosen, "rejected": rejected})
    row = first(pair, prompt_converters.PreferencePairFeatureConverter(),
                {"prompt": 32, "chosen": 64, "rejected": 64})  # fmt: skip
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        side_tokens = row[f"{side}_target_tokens"][row[f"{side}_segment_ids"] == 1].tolist()
        assert side_tokens == prefix + spm.encode(text.strip()) + end_of_turn, side

    prompts = rows("paths_prompts", sources.PROMPTS, {"prompt": user})
    row = first(prompts, prompt_converters.PromptFeatureConverter(), {"prompt": 32})
    assert row["prompt_tokens"][row["prompt_segment_ids"] == 1].tolist() == prefix

    prompts_file = tmp_path / "rl_prompts.jsonl"
    prompts_file.write_text(json.dumps({"prompt": user, "language_code": "spa"}) + "\n")
    rl = prompt_sets.load_prompt_set(data_config, str(prompts_file), "train", codec, max_tokens=32, chat=True)
    assert rl.tokens == [prefix]

    assert pretrained.encode_prompts(codec, [user], template="auto") == [prefix]
    for name in ("paths_sft", "paths_pref", "paths_prompts"):
        seqio.TaskRegistry.remove(name)
