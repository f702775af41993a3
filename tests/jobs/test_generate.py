"""Generation, fine-tuning from a Hugging Face directory, and export, end to end through `python -m aya_jax.main`.

A small Cohere-style tokenizer (byte-level BPE with the Command-R special tokens, trained here on a few
sentences) and a random transformers CohereForCausalLM make a complete Hugging Face directory; the jobs run on
it exactly as on a downloaded Aya checkpoint, and transformers checks what they produce.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from aya_jax import pretrained  # noqa: E402
from aya_jax.jobs import generate, hf_convert  # noqa: E402
from configs import generate as generate_config  # noqa: E402
from configs import hf_convert as hf_convert_config  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
SPECIAL = [
    "<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<EOP_TOKEN>",
    "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>",
]  # fmt: skip
TEXT = [
    "Hello, how are you today?", "Bonjour, comment allez-vous ?", "Hola, ¿cómo estás?", "Guten Tag!",
    "The quick brown fox jumps over the lazy dog.", "Écris un haïku sur la mer.", "Merhaba dünya",
    "Привет, как дела?", "こんにちは世界", "مرحبا بالعالم", "नमस्ते दुनिया", "Xin chào thế giới",
] * 20  # fmt: skip
VOCAB = 448


def make_tokenizer(path: pathlib.Path) -> int:
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXT, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<BOS_TOKEN> $A", special_tokens=[("<BOS_TOKEN>", 5)]
    )
    tok.save(str(path))
    return tok.get_vocab_size(with_added_tokens=True)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A complete HF directory: random CohereForCausalLM + tokenizer.json + tokenizer_config.json."""
    directory = tmp_path_factory.mktemp("hf_model")
    vocab = make_tokenizer(directory / "tokenizer.json")
    torch.manual_seed(0)
    config = transformers.CohereConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, use_qk_norm=True, logit_scale=0.125, max_position_embeddings=512,
        bos_token_id=5, eos_token_id=9, pad_token_id=0,
    )  # fmt: skip
    model = transformers.CohereForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 1.0 if "embed" in name else 0.2) if "norm" not in name else p.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    from aya_jax import hf
    from aya_jax.hf import cohere as hf_cohere

    (directory / "tokenizer_config.json").write_text(
        json.dumps(hf_cohere.tokenizer_config(json.loads((directory / "tokenizer.json").read_text())))
    )
    del hf
    return directory


def _env(data_dir):
    env = dict(os.environ)
    env.update(
        AYA_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
        TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO),
    )  # fmt: skip
    return env


def main(config, *args, data_dir, timeout=300):
    cmd = [sys.executable, "-m", "aya_jax.main", "--config", str(REPO / "configs" / config), *args]
    result = subprocess.run(
        cmd, env=_env(data_dir), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def reference_greedy(hf_dir, prompt_text, n):
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt_text}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=n, eos_token_id=9, pad_token_id=0
        )
    return out[0, len(ids) :].tolist(), tokenizer


@pytest.mark.slow
def test_generate_streams_one_prompt_and_batches_many(hf_dir, tmp_path):
    result = main(
        "generate.py", f"--config.generate.hf_dir={hf_dir}", "--config.generate.prompt=Bonjour, comment allez-vous ?",
        "--config.generate.max_new_tokens=24", "--workdir", str(tmp_path / "one"), data_dir=tmp_path,
    )  # fmt: skip
    row = json.loads((tmp_path / "one" / "generations.jsonl").read_text())
    expected, tokenizer = reference_greedy(hf_dir, "Bonjour, comment allez-vous ?", 24)
    assert row["tokens"] == expected  # the chat template applied, greedy ids as transformers'
    assert row["completion"] == tokenizer.decode(expected, skip_special_tokens=True)
    assert row["completion"] in result.stdout  # streamed

    # Many prompts from a file, batched (in-process: the same job function main dispatches to).
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello, how are you today?\nGuten Tag!\nこんにちは世界\n")
    config = generate_config.get_config()
    config.generate.hf_dir = str(hf_dir)
    config.generate.prompts_file = str(prompts)
    config.generate.max_new_tokens = 12
    config.generate.batch_size = 2
    rows = generate.run(config, str(tmp_path / "many")).results
    assert [r["prompt"] for r in rows] == ["Hello, how are you today?", "Guten Tag!", "こんにちは世界"]
    for r in rows:
        assert r["tokens"] == reference_greedy(hf_dir, r["prompt"], 12)[0]


@pytest.mark.slow
def test_finetune_from_hf_then_export_and_generate_from_the_run(hf_dir, tmp_path):
    run = tmp_path / "run"
    main(
        "sft.py:hf", f"--config.model.hf_init_dir={hf_dir}", "--config.model.dtype=float32",
        "--config.model.remat=none", "--config.data.seq_len=64", "--config.train.global_batch_size=8",
        "--config.train.steps=2", "--config.train.eval_batches=0", "--config.train.progress_bar=False",
        "--config.metrics.tensorboard=False", "--config.train.plot=False", "--config.optimizer.learning_rate=1e-3",
        "--workdir", str(run), data_dir=tmp_path,
    )  # fmt: skip
    assert (run / "hf_config.json").is_file()
    out = tmp_path / "exported"
    config = hf_convert_config.get_config("export")
    config.hf_convert.checkpoint_dir = str(run)
    config.hf_convert.out_dir = str(out)
    config.hf_convert.dtype = "float32"
    hf_convert.export(config, str(tmp_path))
    original = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tuned = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    changed = [n for n, p in original.state_dict().items() if not torch.equal(p, tuned.state_dict()[n])]
    assert len(changed) == len(original.state_dict())  # two AdamW steps moved every tensor
    tokens = np.random.default_rng(0).integers(0, 448, size=(1, 20))

    # aya_jax's own forward on the checkpoint equals transformers' on the export.
    import jax.numpy as jnp

    from aya_jax import hf

    loaded = hf.load(out)
    ours = np.asarray(loaded.model.apply({"params": loaded.params}, jnp.asarray(tokens)))
    with torch.no_grad():
        ref = tuned(torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert (
        tokenizer("Guten Tag!")["input_ids"]
        == transformers.AutoTokenizer.from_pretrained(hf_dir)("Guten Tag!")["input_ids"]
    )

    # Generation from the run's workdir finds the recorded architecture and tokenizer by itself.
    config = generate_config.get_config()
    config.generate.checkpoint_dir = str(run)
    config.generate.prompt = "Guten Tag!"
    config.generate.max_new_tokens = 8
    generate.run(config, str(tmp_path / "gen"))
    row = json.loads((tmp_path / "gen" / "generations.jsonl").read_text())
    assert row["tokens"] == reference_greedy(out, "Guten Tag!", 8)[0]


@pytest.mark.slow
def test_generate_from_a_quickstart_checkpoint_and_its_export_in_transformers(tmp_path, monkeypatch, capsys):
    """The quickstart's kind of run: a preset sized by the data's SentencePiece vocabulary, prompts in the chat
    format. In-process (no subprocess): the job rebuilds the vocabulary from config.data and loads the newest
    step. Its Hugging Face export (weights + the converted tokenizer) loads with AutoTokenizer +
    AutoModelForCausalLM, renders the chat prompt to the same ids and generates the same greedy ids."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn

    from aya_jax import checkpoint as ckpt_lib
    from aya_jax.data import chat_template, pipeline, vocab
    from aya_jax.training import state as ts

    monkeypatch.setenv("AYA_DATA_DIR", str(tmp_path / "data"))
    config = generate_config.get_config()
    config.model.overrides.num_layers = 1
    config.data.vocab.size = 2048
    spec = pipeline.prepare(config.data)
    model, _ = pretrained.build_model(config.model, spec.vocab_size)
    state = ts.make_init_fn(model, optax.sgd(0.1), 8)(jax.random.PRNGKey(0))
    checkpointer = ckpt_lib.Checkpointer(tmp_path / "run" / "checkpoints", async_save=False)
    checkpointer.save(7, state, {"position": 0})
    checkpointer.close()

    config.generate.checkpoint_dir = str(tmp_path / "run")
    config.generate.prompt = "Bonjour"
    config.generate.max_new_tokens = 6
    summary = generate.run(config, str(tmp_path / "gen"))
    (row,) = summary.results
    # Greedy reference: the plain forward over the chat prompt's ids, one token at a time.
    prompt = list(spec.vocab.encode(chat_template.prompt_text("Bonjour")))
    stops = vocab.SeqioCodec(spec.vocab).eos_ids
    seq, apply = list(prompt), jax.jit(lambda p, t: model.apply({"params": p}, t))
    expected = []
    for _ in range(6):
        token = int(jnp.argmax(apply(nn.unbox(state.params), jnp.asarray([seq]))[0, -1]))
        expected.append(token)
        seq.append(token)
        if token in stops:
            break
    assert row["tokens"] == expected
    assert row["completion"] in capsys.readouterr().out

    export = hf_convert_config.get_config("export")
    export.model, export.data = config.model, config.data  # the run's model and data fields
    export.hf_convert.checkpoint_dir = str(tmp_path / "run")
    export.hf_convert.out_dir = str(tmp_path / "hf")
    export.hf_convert.dtype = "float32"
    hf_convert.export(export, str(tmp_path))
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    export.hf_convert.tokenizer = str(tmp_path / "missing.model")
    with pytest.raises(
        FileNotFoundError, match=r"config.hf_convert.tokenizer: no SentencePiece model at .*missing"
    ):
        hf_convert.export(export, str(tmp_path))
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Bonjour"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(ids) == prompt
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)
    assert out[0, len(prompt) :].tolist() == row["tokens"]


def test_hf_import_to_orbax_and_export_back_is_exact(hf_dir, tmp_path):
    """hf_import writes a params-only orbax checkpoint (+ the recorded config.json); hf_export of it gives back
    the original tensors bit for bit, and the tokenizer."""
    config = hf_convert_config.get_config("import")
    config.hf_convert.hf_dir = str(hf_dir)
    config.hf_convert.out_dir = str(tmp_path / "orbax")
    hf_convert.import_(config, str(tmp_path))
    assert (tmp_path / "orbax" / "checkpoints").is_dir() and (tmp_path / "orbax" / "hf_config.json").is_file()

    config = hf_convert_config.get_config("export")
    config.hf_convert.checkpoint_dir = str(tmp_path / "orbax")
    config.hf_convert.out_dir = str(tmp_path / "back")
    config.hf_convert.dtype = "float32"
    hf_convert.export(config, str(tmp_path))
    original = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).state_dict()
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "back", dtype=torch.float32
    ).state_dict()
    assert set(original) == set(back)
    for name, value in original.items():
        assert torch.equal(value, back[name]), name
    assert (tmp_path / "back" / "tokenizer.json").read_bytes() == (hf_dir / "tokenizer.json").read_bytes()
