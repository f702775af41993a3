"""Hugging Face import/export of the Cohere decoder against transformers' CohereForCausalLM (torch, CPU).

Random-weight reference models of several shapes are saved with `save_pretrained`, imported onto an 8-device
mesh, and compared: logits (fp32, 1e-4), export -> `from_pretrained` -> logits again and tensors bit for bit,
greedy generation of 32 tokens (identical ids). Plus config mapping against the presets, bf16 checkpoints,
the errors, and the real Command-R tokenizer through export.
"""

import ast
import dataclasses
import functools
import gzip
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from aya_jax import hf, sampling, sharding  # noqa: E402
from aya_jax.hf import cohere as hf_cohere  # noqa: E402
from aya_jax.hf import io as hf_io  # noqa: E402
from aya_jax.models import cohere  # noqa: E402
from configs.common import default_rules  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
VOCAB = 512
RULES = default_rules()

# Several shapes: GQA and MHA, qk-norm on and off, both logit scales, tied and untied, explicit head_dim.
SHAPES = {
    "gqa_qknorm_scale0.125": dict(
        num_attention_heads=4, num_key_value_heads=2, use_qk_norm=True, logit_scale=0.125
    ),
    "mha_scale0.0625": dict(
        num_attention_heads=4, num_key_value_heads=4, logit_scale=0.0625, rope_theta=500.0
    ),
    "gqa4_headdim24_untied_qknorm": dict(
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=24,
        use_qk_norm=True,
        logit_scale=0.0625,
        tie_word_embeddings=False,
    ),
}


def make_reference(seed: int = 0, **overrides):
    """A random CohereForCausalLM: projections N(0, 0.2), embeddings N(0, 1), norm weights U(0.5, 1.5), so that
    logits spread over several units and greedy choices are far from ties."""
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        bos_token_id=5,
        eos_token_id=VOCAB - 1,
        pad_token_id=0,
    )
    kw.update(overrides)
    torch.manual_seed(seed)
    model = transformers.CohereForCausalLM(transformers.CohereConfig(**kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif "embed_tokens" in name or "lm_head" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.2)
    return model


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(tokens, np.int64))).logits.float().numpy()


def mesh():
    return sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))


TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 24))


@pytest.fixture(scope="module", params=list(SHAPES))
def imported(request, tmp_path_factory):
    """(reference model, its directory, the aya_jax import on a 2x2x2 mesh)."""
    directory = tmp_path_factory.mktemp(request.param)
    reference = make_reference(**SHAPES[request.param])
    reference.save_pretrained(directory)
    return reference, directory, hf.load(directory, mesh(), RULES)


# ------------------------------------------------------------------------------------------------------------
# Parity
# ------------------------------------------------------------------------------------------------------------


def test_imported_logits_match_transformers(imported):
    reference, _, loaded = imported
    ours = np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params}, jnp.asarray(TOKENS)))
    ref = torch_logits(reference, TOKENS)
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_params_are_sharded_by_the_rules(imported):
    _, _, loaded = imported
    q = loaded.params["layers"]["attn"]["q_proj"]  # [layers, embed, heads, head_dim]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape[1] == q.shape[1] // 2


def test_export_from_pretrained_roundtrip(imported, tmp_path):
    reference, _, loaded = imported
    # A small shard limit forces several shard files and an index.
    hf.save(tmp_path, loaded.params, loaded.config, dtype="float32", max_shard_bytes=64 * 1024)
    assert (tmp_path / hf.INDEX_FILE).is_file() and len(list(tmp_path.glob("model-*.safetensors"))) > 1
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == "CohereForCausalLM"
    # Every tensor comes back bit for bit, and so do the logits.
    original, exported = reference.state_dict(), reloaded.state_dict()
    assert set(original) == set(exported)
    for name, value in original.items():
        assert torch.equal(value, exported[name]), name
    ours = np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params}, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(torch_logits(reloaded, TOKENS), ours, atol=1e-4, rtol=0)
    assert hf_cohere.config_from_hf(json.loads((tmp_path / "config.json").read_text())) == loaded.config


def test_greedy_generation_matches_transformers(imported):
    reference, _, loaded = imported
    sampler = sampling.Sampler(loaded.model, loaded.params, mesh=mesh(), rules=RULES, prompt_bucket=16)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(6, VOCAB - 1, size=n).tolist() for n in (5, 17, 9)]  # ragged: left padding
    out = sampler.generate(prompts, sampling.SamplingParams(max_new_tokens=32))
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            ref = reference.generate(
                torch.tensor([prompt]), do_sample=False, max_new_tokens=32, min_new_tokens=32, pad_token_id=0
            )
        np.testing.assert_array_equal(out.tokens[i], ref[0, len(prompt) :].numpy(), err_msg=f"prompt {i}")


def test_unrolled_import_equals_scanned(imported):
    reference, directory, loaded = imported
    unrolled = hf.load(directory, scan_layers=False)
    ours = np.asarray(jax.jit(unrolled.model.apply)({"params": unrolled.params}, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(ours, torch_logits(reference, TOKENS), atol=1e-4, rtol=0)


def test_one_leaf_reader_gives_what_load_places(imported):
    """hf.read_leaf is the one reader of HF tensors: load streams it layer by layer, the merge job reads whole
    (stacked) leaves with it; both are the same values."""
    _, directory, loaded = imported
    reader = hf.SafetensorsReader(directory)
    mappings = loaded.architecture.tensor_mappings(loaded.config, True)
    for m in mappings:
        leaf = np.asarray(functools.reduce(dict.__getitem__, m.param_path, loaded.params))
        whole = hf.read_leaf(reader, m, leaf.shape, dtype=np.float32)
        assert whole.dtype == np.float32 and whole.flags.c_contiguous
        np.testing.assert_array_equal(whole, leaf, err_msg=m.leaf_name)
        if m.stacked:
            np.testing.assert_array_equal(hf.read_leaf(reader, m, leaf.shape[1:], layer=1), leaf[1])
    embedding = next(m for m in mappings if m.param_path == ("embedding",))
    with pytest.raises(hf.HfCheckpointError, match=r"model\.embed_tokens\.weight: converts to shape"):
        hf.read_leaf(reader, embedding, (1, 2))


def test_bf16_checkpoint_imports_exactly_and_exports_bf16(tmp_path):
    reference = make_reference(seed=3).to(torch.bfloat16)
    reference.save_pretrained(tmp_path / "in")
    loaded = hf.load(tmp_path / "in", param_dtype=jnp.float32)
    emb = np.asarray(loaded.params["embedding"])
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb, reference.model.embed_tokens.weight.detach().float().numpy())
    q0 = reference.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()  # [heads*head_dim, embed]
    np.testing.assert_array_equal(
        np.asarray(loaded.params["layers"]["attn"]["q_proj"][1]).reshape(64, -1).T, q0
    )
    hf.save(tmp_path / "out", loaded.params, loaded.config, dtype="bfloat16")
    header, _ = hf.read_header(tmp_path / "out" / hf.SINGLE_FILE)
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for name, value in reference.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[name]), name


# ------------------------------------------------------------------------------------------------------------
# Config mapping
# ------------------------------------------------------------------------------------------------------------

# config.json of the released checkpoints as published (transformers 4.x style: top-level rope_theta).
RELEASED = {
    "aya-23-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, rope_theta=10000, logit_scale=0.0625),
    "aya-23-35b": dict(hidden_size=8192, intermediate_size=22528, num_hidden_layers=40, num_attention_heads=64,
                       num_key_value_heads=64, rope_theta=8000000, logit_scale=0.0625),
    "aya-expanse-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=8, rope_theta=10000, logit_scale=0.125),
    "aya-expanse-32b": dict(hidden_size=8192, intermediate_size=24576, num_hidden_layers=40, num_attention_heads=64,
                            num_key_value_heads=8, rope_theta=4000000, logit_scale=0.0625),
}  # fmt: skip


@pytest.mark.parametrize("preset", list(RELEASED))
def test_released_configs_map_to_presets(preset):
    config_json = {
        "architectures": ["CohereForCausalLM"], "model_type": "cohere", "vocab_size": 256000,
        "max_position_embeddings": 8192, "layer_norm_eps": 1e-05, "use_qk_norm": False, "hidden_act": "silu",
        "attention_bias": False, "bos_token_id": 5, "eos_token_id": 255001, "pad_token_id": 0,
        "torch_dtype": "float16", "rope_scaling": None, **RELEASED[preset],
    }  # fmt: skip
    cfg = hf_cohere.config_from_hf(config_json)
    assert hf_cohere.matching_preset(cfg) == preset
    assert cfg == cohere.PRESETS[preset]
    # Exported config.json: transformers reads the same architecture back, and the parameter count of the
    # model it builds (on the meta device: nothing allocated) equals ours.
    exported = hf_cohere.preset_hf_config(preset)
    hf_cfg = transformers.CohereConfig(**{k: v for k, v in exported.items() if k != "architectures"})
    assert hf_cfg.rope_parameters["rope_theta"] == RELEASED[preset]["rope_theta"]
    with torch.device("meta"):
        n = sum(p.numel() for p in transformers.CohereForCausalLM(hf_cfg).parameters())
    assert n == cohere.param_count(cfg)
    assert hf_cohere.config_from_hf(exported) == cfg


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "llama"}, "model_type 'llama' is not supported"),
        ({"model_type": "cohere2"}, "Command R7B"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "rope scaling"),
    ],
)
def test_unsupported_configs_are_rejected(tmp_path, change, message):
    config_json = hf_cohere.config_to_hf(cohere.PRESETS["cohere-bench"])
    config_json.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(hf.HfCheckpointError, match=message):
        hf.load(tmp_path)


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(module or module.name imported, whether at module level) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(name, id(node) in top) for name in names]
    return found


def test_architecture_registry_imports_one_way(monkeypatch):
    """architectures <- cohere, mt5 <- io: the architecture modules never import the registry, nothing in
    aya_jax/hf imports an aya_jax module inside a function, and the registry holds the built-ins by name."""
    for name in ("architectures", "cohere", "mt5", "safetensors"):
        imported = {module for module, _ in _imports(REPO / "aya_jax" / "hf" / f"{name}.py")}
        assert not imported & {"aya_jax.hf", "aya_jax.hf.io"}, name
    for path in (REPO / "aya_jax" / "hf").glob("*.py"):
        nested = [m for m, top in _imports(path) if not top and m.startswith("aya_jax")]
        assert not nested, (path.name, nested)
    assert {t: a.family.name for t, a in hf.architectures().items()} == {"cohere": "cohere", "mt5": "mt5"}
    assert hf.architecture_of(cohere.PRESETS["cohere-bench"]) is hf_cohere.ARCHITECTURE
    monkeypatch.setattr(hf_io, "_ARCHITECTURES", dict(hf_io._ARCHITECTURES))  # undone after the test
    mine = dataclasses.replace(hf_cohere.ARCHITECTURE, model_type="my_cohere")
    assert hf.register(mine) is mine and hf.architecture("my_cohere") is mine


# ------------------------------------------------------------------------------------------------------------
# Errors on broken checkpoints
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small")
    make_reference(seed=5, num_hidden_layers=1).save_pretrained(directory, max_shard_size="20KB")
    return directory


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_shard_is_named(small_checkpoint, tmp_path):
    broken = _copy(small_checkpoint, tmp_path / "c")
    victim = sorted(broken.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(hf.HfCheckpointError, match=f"{victim.name}: shard named by"):
        hf.load(broken)


def test_shape_mismatch_names_the_tensor(small_checkpoint, tmp_path):
    broken = _copy(small_checkpoint, tmp_path / "c")
    config_json = json.loads((broken / "config.json").read_text())
    config_json["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(hf.HfCheckpointError, match=r"model\.layers\.0\.mlp\.\w+_proj\.weight: shape"):
        hf.load(broken)


def test_missing_and_unexpected_tensors_are_named(small_checkpoint, tmp_path):
    broken = _copy(small_checkpoint, tmp_path / "c")
    config_json = json.loads((broken / "config.json").read_text())
    config_json["use_qk_norm"] = True  # the checkpoint has no q_norm / k_norm
    (broken / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(
        hf.HfCheckpointError, match=r"tensor model\.layers\.0\.self_attn\.[qk]_norm\.weight is missing"
    ):
        hf.load(broken)
    config_json["use_qk_norm"] = False
    config_json["num_hidden_layers"] = 0  # now every layer tensor is unexpected
    (broken / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(hf.HfCheckpointError, match=r"unexpected tensor\(s\) \['model\.layers\.0\."):
        hf.load(broken)


def test_no_weights_and_no_config_are_clear(tmp_path):
    with pytest.raises(hf.HfCheckpointError, match="no config.json"):
        hf.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf_cohere.config_to_hf(cohere.PRESETS["cohere-bench"])))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(hf.HfCheckpointError, match="convert PyTorch .bin weights to safetensors"):
        hf.load(tmp_path)


def test_safetensors_reader_handles_bf16_and_offsets(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    b = np.arange(5, dtype=np.int64)
    writer = hf.SafetensorsWriter(tmp_path, [("a", a.shape, a.dtype), ("b", b.shape, b.dtype)])
    writer.write("a", a)
    writer.write("b", b)
    writer.close()
    from safetensors.numpy import load_file  # the reference reader

    reference = load_file(tmp_path / hf.SINGLE_FILE)
    np.testing.assert_array_equal(reference["b"], b)
    reader = hf.SafetensorsReader(tmp_path)
    np.testing.assert_array_equal(reader.read("a").astype(np.float32), a.astype(np.float32))
    assert reader.read("a").dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(reader.read("b"), b)


# ------------------------------------------------------------------------------------------------------------
# The real Aya tokenizer through export
# ------------------------------------------------------------------------------------------------------------


def _llama_cpp_reference(directory: pathlib.Path) -> list[tuple[str, list[int]]]:
    texts = (directory / "ggml-vocab-command-r.gguf.inp").read_text().split("\n__ggml_vocab_test__\n")
    ids = (directory / "ggml-vocab-command-r.gguf.out").read_text().split("\n")
    return [(t, [int(i) for i in line.split()]) for t, line in zip(texts, ids, strict=False)]


@pytest.mark.shared_data
def test_command_r_tokenizer_roundtrips_through_export(shared_data, tmp_path):
    source = shared_data / "tokenizers" / "command_r"
    cfg = cohere.PRESETS["cohere-bench"].replace(vocab_size=VOCAB, num_layers=1, bos_id=5, eos_id=255001)
    params = jax.jit(cohere.CohereLM(cfg).init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    hf.save(tmp_path, params["params"], cfg, tokenizer=source / "tokenizer.json.gz")
    original = gzip.decompress((source / "tokenizer.json.gz").read_bytes())
    assert (tmp_path / "tokenizer.json").read_bytes() == original

    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer).__name__ == "CohereTokenizer"
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (5, 255001, 0)
    cases = _llama_cpp_reference(source)
    assert len(cases) == 47
    for text, expected in cases:  # llama.cpp's own expected ids for this vocabulary
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected, text
        assert tokenizer.decode(expected) == text
    # The chat template renders exactly what generation feeds the model.
    messages = [{"role": "user", "content": " Bonjour, ça va ? "}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == sampling.cohere_chat_prompt(" Bonjour, ça va ? ")
    with_system = [{"role": "system", "content": "Be brief."}] + messages
    rendered = tokenizer.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True)
    assert rendered == sampling.cohere_chat_prompt(" Bonjour, ça va ? ", system="Be brief.")
    # Special tokens in the rendered text become single ids; BOS is not added twice.
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    system, start, user = tokenizer.convert_tokens_to_ids(
        ["<|SYSTEM_TOKEN|>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"]
    )
    assert ids[:3] == [5, start, system] and ids.count(5) == 1 and user in ids
    assert ids[-2:] == tokenizer.convert_tokens_to_ids(["<|START_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>"])
