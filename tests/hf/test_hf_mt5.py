"""Hugging Face import/export of mT5 against transformers' MT5ForConditionalGeneration (torch, CPU, fp32, eval).

Random-weight reference models of two shapes are saved with `save_pretrained` (transformers 5 ties lm_head to
`shared` and saves only the latter), imported onto a 2x2x2 mesh and compared: logits on encoder rows with
padding (1e-4), export -> `from_pretrained` -> tensors bit for bit and logits again, greedy generation of 32
tokens (identical ids, and identical stopping at an EOS). The untied lm_head of Aya 101 / google/mt5-*
checkpoints is written by hand and checked to be the one used, both ways. Plus config mapping, the bucket
function against transformers', and the errors.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from aya_jax import hf, sampling, sharding  # noqa: E402
from aya_jax.hf import mt5 as hf_mt5  # noqa: E402
from aya_jax.models import mt5  # noqa: E402
from configs.common import default_rules  # noqa: E402

VOCAB = 256
RULES = default_rules()

SHAPES = {
    "tiny": dict(),
    # heads * d_kv != d_model, 3 encoder layers and 1 decoder layer, few buckets and a short max distance.
    "heads6_3x1_buckets16": dict(
        num_heads=6, d_kv=8, num_layers=3, num_decoder_layers=1, relative_attention_num_buckets=16,
        relative_attention_max_distance=20,
    ),
}  # fmt: skip


def make_reference(seed: int = 0, **overrides):
    """A random MT5ForConditionalGeneration: kernels N(0, 0.2) but queries N(0, 0.05) (attention scores of a
    few units: no 1/sqrt(d) scaling), shared N(0, 0.2), position bias N(0, 0.5), norm weights U(0.5, 1.5).
    Logits spread over several units, and greedy decoding varies its tokens (with small kernels and a large
    embedding the tied head mostly echoes the input token, and greedy decoding repeats one token)."""
    kw = dict(
        vocab_size=VOCAB, d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    kw.update(overrides)
    torch.manual_seed(seed)
    model = transformers.MT5ForConditionalGeneration(transformers.MT5Config(**kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 0.5)
            elif name.endswith(".q.weight"):
                p.normal_(0.0, 0.05)
            else:
                p.normal_(0.0, 0.2)
    return model


def mesh():
    return sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))


def batch(seed: int = 0):
    """Encoder rows right-padded (lengths 11, 6, 3 of 11), decoder rows starting with decoder_start_id 0."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, VOCAB, size=(3, 11))
    for row, n in enumerate((11, 6, 3)):
        enc[row, n:] = 0
    dec = rng.integers(2, VOCAB, size=(3, 9))
    dec[:, 0] = 0
    return enc, dec


def torch_logits(model, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(enc),
            attention_mask=torch.from_numpy((enc != 0).astype(np.int64)),
            decoder_input_ids=torch.from_numpy(dec),
        )
    return out.logits.float().numpy()


def our_logits(loaded, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.asarray(
        jax.jit(loaded.model.apply)({"params": loaded.params}, jnp.asarray(enc), jnp.asarray(dec))
    )


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
    reference, directory, loaded = imported
    names = set(hf.SafetensorsReader(directory).names)
    assert "shared.weight" in names and "lm_head.weight" not in names  # transformers 5 saves a tied head
    assert loaded.config.tie_word_embeddings and "lm_head" not in loaded.params
    enc, dec = batch()
    ref = torch_logits(reference, enc, dec)
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(our_logits(loaded, enc, dec), ref, atol=1e-4, rtol=0)
    q = loaded.params["encoder"]["layers"]["self_attn"]["q_proj"]  # [layers, embed, heads, d_kv]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)


def test_export_from_pretrained_roundtrip(imported, tmp_path):
    reference, _, loaded = imported
    # A small shard limit forces several shard files and an index.
    hf.save(
        tmp_path, loaded.params, loaded.config, model_type="mt5", dtype="float32", max_shard_bytes=64 * 1024
    )
    assert (tmp_path / hf.INDEX_FILE).is_file() and len(list(tmp_path.glob("model-*.safetensors"))) > 1
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == "MT5ForConditionalGeneration"
    original, exported = reference.state_dict(), reloaded.state_dict()
    assert set(original) == set(exported)
    for name, value in original.items():
        assert torch.equal(value, exported[name]), name
    enc, dec = batch(1)
    np.testing.assert_allclose(
        torch_logits(reloaded, enc, dec), our_logits(loaded, enc, dec), atol=1e-4, rtol=0
    )
    assert hf_mt5.config_from_hf(json.loads((tmp_path / "config.json").read_text())) == loaded.config
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation == {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}


def test_greedy_generation_matches_transformers(imported):
    """32 greedy tokens per prompt, ragged prompts in one batch, and an EOS that stops one row early."""
    reference, _, loaded = imported
    rng = np.random.default_rng(1)
    prompts = [rng.integers(2, VOCAB, size=n).tolist() for n in (5, 17, 9)]  # ragged: padding

    def hf_generate(prompt, **kw):
        with torch.no_grad():
            out = reference.generate(
                torch.tensor([prompt]), do_sample=False, num_beams=1, max_new_tokens=32, pad_token_id=0, **kw
            )
        assert out[0, 0] == 0  # the decoder start token, then the generated ones
        return out[0, 1:].numpy()

    free = [hf_generate(p, eos_token_id=None) for p in prompts]  # no stop token: 32 argmax steps each
    assert all(len(f) == 32 for f in free) and len(set(free[1])) > 3  # not one repeated token
    # EOS: a token that one row first emits at step >= 2 and the other rows never do.
    row, eos = next(
        (r, int(t))
        for r in range(3)
        for t in free[r][2:]
        if not any(int(t) in free[o] for o in range(3) if o != r)
    )
    stop = int(np.flatnonzero(free[row] == eos)[0])
    stopped = hf_generate(prompts[row], eos_token_id=eos)
    np.testing.assert_array_equal(stopped, free[row][: stop + 1])  # transformers keeps the EOS and stops

    sampler = sampling.Sampler(loaded.model, loaded.params, mesh=mesh(), rules=RULES, prompt_bucket=16)
    out = sampler.generate(prompts, sampling.SamplingParams(max_new_tokens=32, eos_ids=(eos,)))
    for i in range(3):
        if i == row:
            assert out.stopped[i] and out.lengths[i] == stop + 1
            np.testing.assert_array_equal(out.tokens[i, : stop + 1], stopped)
            assert (out.tokens[i, stop + 1 :] == 0).all()
        else:
            assert not out.stopped[i] and out.lengths[i] == 32
            np.testing.assert_array_equal(out.tokens[i], free[i], err_msg=f"prompt {i}")


def test_unrolled_import_equals_scanned(imported):
    reference, directory, _ = imported
    unrolled = hf.load(directory, scan_layers=False)
    assert "layers_0" in unrolled.params["encoder"]
    enc, dec = batch(2)
    np.testing.assert_allclose(
        our_logits(unrolled, enc, dec), torch_logits(reference, enc, dec), atol=1e-4, rtol=0
    )


# ------------------------------------------------------------------------------------------------------------
# The untied lm_head (Aya 101, google/mt5-*)
# ------------------------------------------------------------------------------------------------------------


def write_untied(
    directory: pathlib.Path, reference, lm_head: torch.Tensor, tie_word_embeddings: bool = False
):
    """The reference's tensors plus its own lm_head.weight, as Aya 101's checkpoint carries them."""
    directory.mkdir()
    state = {k: v.contiguous() for k, v in reference.state_dict().items() if "embed_tokens" not in k}
    state["lm_head.weight"] = lm_head.contiguous()
    safetensors_torch.save_file(state, directory / hf.SINGLE_FILE, metadata={"format": "pt"})
    config = reference.config.to_dict()
    config["tie_word_embeddings"] = tie_word_embeddings
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    reference = make_reference(seed=7)
    head = torch.randn(VOCAB, 64, generator=torch.Generator().manual_seed(8)) * 0.3
    directory = write_untied(tmp_path_factory.mktemp("untied") / "in", reference, head)
    return reference, head, directory, hf.load(directory)


def test_untied_lm_head_is_imported_and_used(untied):
    reference, head, _, loaded = untied
    assert not loaded.config.tie_word_embeddings
    np.testing.assert_array_equal(np.asarray(loaded.params["lm_head"]), head.numpy())
    enc, dec = batch(3)
    # The torch reference of the same weights: its decoder's output (after the final norm) times that head.
    mask = torch.from_numpy((enc != 0).astype(np.int64))
    with torch.no_grad():
        encoded = reference.encoder(input_ids=torch.from_numpy(enc), attention_mask=mask).last_hidden_state
        hidden = reference.decoder(
            input_ids=torch.from_numpy(dec), encoder_hidden_states=encoded, encoder_attention_mask=mask
        ).last_hidden_state
        want = (hidden @ head.T).numpy()
    ours = our_logits(loaded, enc, dec)
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)
    assert np.abs(ours - torch_logits(reference, enc, dec)).max() > 1.0  # the tied head would differ


def test_untied_export_loads_in_transformers_with_its_head(untied, tmp_path):
    _, head, _, loaded = untied
    hf.save(tmp_path, loaded.params, loaded.config, model_type="mt5", dtype="float32")
    names = hf.SafetensorsReader(tmp_path).names
    assert {"shared.weight", "lm_head.weight"} <= names
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    # transformers 5 forces tie_word_embeddings=True but keeps two different tensors apart (with a warning).
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert torch.equal(reloaded.lm_head.weight, head)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.shared.weight)
    enc, dec = batch(4)
    np.testing.assert_allclose(
        torch_logits(reloaded, enc, dec), our_logits(loaded, enc, dec), atol=1e-4, rtol=0
    )


def test_untied_head_under_a_tied_config_imports_untied(untied, tmp_path):
    """An untied model re-saved by transformers >= 5: config.json says tied, lm_head.weight is there. The
    weights decide: the head is imported and used."""
    _, head, _, loaded = untied
    directory = write_untied(tmp_path / "resaved", untied[0], head, tie_word_embeddings=True)
    assert hf.read_config(directory)["tie_word_embeddings"] is False
    resaved = hf.load(directory)
    assert not resaved.config.tie_word_embeddings
    np.testing.assert_array_equal(np.asarray(resaved.params["lm_head"]), head.numpy())
    enc, dec = batch(5)
    np.testing.assert_array_equal(our_logits(resaved, enc, dec), our_logits(loaded, enc, dec))


# ------------------------------------------------------------------------------------------------------------
# Config mapping and the bucket function
# ------------------------------------------------------------------------------------------------------------

# CohereForAI/aya-101 config.json as published (a transformers 4.x MT5 config).
AYA_101 = {
    "architectures": ["T5ForConditionalGeneration"], "d_ff": 10240, "d_kv": 64, "d_model": 4096,
    "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
    "layer_norm_epsilon": 1e-06, "model_type": "mt5", "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24,
    "output_past": True, "pad_token_id": 0, "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32, "tie_word_embeddings": False, "tokenizer_class": "T5Tokenizer",
    "torch_dtype": "float32", "use_cache": True, "vocab_size": 250112,
}  # fmt: skip


def test_aya_101_config_maps_to_the_preset_and_back():
    cfg = hf_mt5.config_from_hf(AYA_101)
    assert cfg == mt5.PRESETS["aya-101"]
    exported = hf_mt5.config_to_hf(cfg)
    assert hf_mt5.config_from_hf(exported) == cfg
    hf_cfg = transformers.MT5Config(**{k: v for k, v in exported.items() if k != "architectures"})
    with torch.device("meta"):  # nothing allocated; transformers ties lm_head, so one [V, E] matrix less
        n = sum(p.numel() for p in transformers.MT5ForConditionalGeneration(hf_cfg).parameters())
    assert n == mt5.param_count(cfg) - cfg.vocab_size * cfg.d_model


def test_bucket_function_matches_transformers():
    bucket = transformers.models.mt5.modeling_mt5.MT5Attention._relative_position_bucket
    rel = np.arange(-400, 401)
    for num_buckets, max_distance in ((32, 128), (16, 20), (8, 12)):
        for bidirectional in (True, False):
            want = bucket(torch.from_numpy(rel), bidirectional, num_buckets, max_distance).numpy()
            got = mt5.relative_position_bucket(jnp.asarray(rel), bidirectional, num_buckets, max_distance)
            np.testing.assert_array_equal(np.asarray(got), want)


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "t5"}, "model_type 't5' is not supported"),
        ({"feed_forward_proj": "relu"}, "feed_forward_proj 'relu'"),
        ({"d_model": None}, "d_model is missing"),
    ],
)
def test_unsupported_configs_are_rejected(tmp_path, change, message):
    config_json = {**hf_mt5.config_to_hf(mt5.PRESETS["mt5-bench"]), **change}
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(hf.HfCheckpointError, match=message):
        hf.load(tmp_path)


@pytest.fixture(scope="module")
def sharded_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sharded")
    make_reference(seed=5, num_layers=1, num_decoder_layers=1).save_pretrained(
        directory, max_shard_size="40KB"
    )
    return directory


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_shard_is_named(sharded_checkpoint, tmp_path):
    broken = _copy(sharded_checkpoint, tmp_path / "c")
    victim = sorted(broken.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(hf.HfCheckpointError, match=f"{victim.name}: shard named by"):
        hf.load(broken)


def test_shape_mismatch_and_missing_tensors_are_named(sharded_checkpoint, tmp_path):
    broken = _copy(sharded_checkpoint, tmp_path / "c")
    config_json = json.loads((broken / "config.json").read_text())
    config_json["d_ff"] = 96
    (broken / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(
        hf.HfCheckpointError, match=r"coder\.block\.0\.layer\.\d\.DenseReluDense\.w\w+\.weight: shape"
    ):
        hf.load(broken)
    config_json["d_ff"] = 128
    config_json["num_decoder_layers"] = 2  # the checkpoint has one decoder block
    (broken / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(hf.HfCheckpointError, match=r"tensor decoder\.block\.1\.\S+ is missing"):
        hf.load(broken)
