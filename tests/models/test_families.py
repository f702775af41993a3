"""The per-family training interface (aya_jax/models/families.py) that the SFT step runs on.

The fused loss of `training.sft.forward_loss` (hidden states x output kernel x logit scale, chunked) must equal a plain
log-softmax cross-entropy over the logits each model returns from its own `__call__`, for the Cohere decoder
(scaled tied logits) and the mT5 encoder-decoder (unscaled untied lm_head), packed rows included.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import pretrained
from aya_jax.models import families
from aya_jax.training import sft as sft_objective


def _model_config(preset: str, **overrides) -> ml_collections.ConfigDict:
    names = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "head_dim")
    return ml_collections.ConfigDict(
        {
            "preset": preset,
            "overrides": {n: overrides.get(n) for n in names},
            "dtype": "float32",
            "param_dtype": "float32",
            "remat": "none",
            "scan_layers": True,
            "scan_unroll": 1,
        }
    )


def _reference_nll(logits: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return float(((logz - picked) * weights).sum())


def _packed_rows(rng: np.random.Generator, batch: int, length: int, vocab: int) -> dict[str, np.ndarray]:
    """Two segments then padding per row, like the converters write."""
    seg = np.zeros((batch, length), np.int32)
    pos = np.zeros((batch, length), np.int32)
    for b in range(batch):
        a, c = rng.integers(2, length // 2), rng.integers(2, length // 2)
        seg[b, :a], seg[b, a : a + c] = 1, 2
        pos[b, :a], pos[b, a : a + c] = np.arange(a), np.arange(c)
    tokens = np.where(seg > 0, rng.integers(2, vocab, (batch, length)), 0).astype(np.int32)
    return {"tokens": tokens, "segment_ids": seg, "positions": pos}


def test_preset_families_and_unknown_preset():
    assert families.family_of_preset("aya-expanse-8b") == families.COHERE
    assert families.family_of_preset("aya-101") == families.MT5
    with pytest.raises(ValueError, match="config.model.preset: unknown preset 'aya-9000'"):
        families.family_of_preset("aya-9000")


def test_mt5_overrides_map_and_cohere_only_fields_are_named():
    cfg = families.MT5.resolve("mt5-tiny", 1000, {"num_layers": 3, "hidden_size": 96})
    assert (cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.d_model, cfg.vocab_size) == (3, 3, 96, 1000)
    assert families.MT5.resolve("mt5-tiny", 1000, {}).vocab_size == 1000  # sized by the data
    assert families.MT5.resolve("aya-101", 1000, {}).vocab_size == 250112  # its own vocabulary
    with pytest.raises(ValueError, match=r"vocab_size 250112 < the tokenizer's 300000"):
        families.MT5.resolve("aya-101", 300000, {})
    with pytest.raises(ValueError, match=r"\['rope_theta'\] have no meaning for the mT5 preset"):
        families.MT5.resolve("mt5-tiny", 1000, {"rope_theta": 1.0})


def test_decoder_fused_loss_equals_logits_cross_entropy():
    model, cfg = pretrained.build_model(_model_config("cohere-tiny", vocab_size=300, num_layers=2), None)
    rng = np.random.default_rng(0)
    rows = _packed_rows(rng, 2, 24, cfg.vocab_size)
    targets = np.where(rows["segment_ids"] > 0, rng.integers(2, cfg.vocab_size, rows["tokens"].shape), 0)
    weights = (rows["segment_ids"] > 0).astype(np.float32)
    batch = {
        "decoder_input_tokens": rows["tokens"],
        "decoder_positions": rows["positions"],
        "decoder_segment_ids": rows["segment_ids"],
        "decoder_target_tokens": targets.astype(np.int32),
        "decoder_loss_weights": weights,
    }
    params = nn.unbox(model.init(jax.random.PRNGKey(0), *families.COHERE.init_inputs(24))["params"])
    loss_sum, aux = sft_objective.forward_loss(model, params, jax.tree.map(jnp.asarray, batch), 0.0)
    logits = model.apply(
        {"params": params},
        batch["decoder_input_tokens"],
        batch["decoder_positions"],
        batch["decoder_segment_ids"],
    )
    assert cfg.logit_scale != 1.0  # the scale is part of what is checked
    np.testing.assert_allclose(
        float(loss_sum), _reference_nll(np.asarray(logits), targets, weights), rtol=1e-5
    )
    assert float(aux["weight_sum"]) == weights.sum()


@pytest.mark.parametrize("tied", [False, True])
def test_encoder_decoder_fused_loss_equals_logits_cross_entropy(tied):
    model, cfg = pretrained.build_model(_model_config("mt5-tiny", vocab_size=300), None)
    if tied:
        cfg = cfg.replace(tie_word_embeddings=True)
        model = families.build(cfg, dtype=jnp.float32, param_dtype=jnp.float32)
    rng = np.random.default_rng(1)
    enc = _packed_rows(rng, 2, 20, cfg.vocab_size)
    dec = _packed_rows(rng, 2, 16, cfg.vocab_size)
    # Segment k of the decoder row reads segment k of the encoder row.
    targets = np.where(dec["segment_ids"] > 0, rng.integers(2, cfg.vocab_size, dec["tokens"].shape), 0)
    weights = (dec["segment_ids"] > 0).astype(np.float32)
    batch = {
        "encoder_input_tokens": enc["tokens"],
        "encoder_segment_ids": enc["segment_ids"],
        "encoder_positions": enc["positions"],
        "decoder_input_tokens": dec["tokens"],
        "decoder_segment_ids": dec["segment_ids"],
        "decoder_positions": dec["positions"],
        "decoder_target_tokens": targets.astype(np.int32),
        "decoder_loss_weights": weights,
    }
    lengths = {"inputs": 20, "targets": 16}
    # Jitted (compiling is faster than running these eagerly); the two paths are still separate computations.
    init = jax.jit(lambda key: model.init(key, *families.MT5.init_inputs(lengths))["params"])
    params = nn.unbox(init(jax.random.PRNGKey(0)))
    assert ("lm_head" in params) != tied
    loss_sum, _ = jax.jit(lambda p, b: sft_objective.forward_loss(model, p, b, 0.0))(
        params, jax.tree.map(jnp.asarray, batch)
    )
    logits = jax.jit(
        lambda p, b: model.apply(
            {"params": p},
            b["encoder_input_tokens"],
            b["decoder_input_tokens"],
            encoder_segment_ids=b["encoder_segment_ids"],
            decoder_segment_ids=b["decoder_segment_ids"],
            encoder_positions=b["encoder_positions"],
            decoder_positions=b["decoder_positions"],
        )
    )(params, batch)
    np.testing.assert_allclose(
        float(loss_sum), _reference_nll(np.asarray(logits), targets, weights), rtol=1e-5
    )
    assert families.MT5.logit_scale(cfg) == 1.0
    assert families.MT5.param_count(cfg) == sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.parametrize("preset", ["cohere-tiny", "mt5-tiny"])
def test_scan_unroll_keeps_parameters_loss_and_gradients(preset):
    """config.model.scan_unroll changes how the scan loop runs, not the model: the same parameter tree, and
    the same loss and gradients as one layer per iteration (fp32; separately compiled, so to 1e-5)."""
    rolled, cfg = pretrained.build_model(_model_config(preset, vocab_size=300, num_layers=3), None)
    unrolled = rolled.clone(scan_unroll=2)  # 3 layers, 2 per iteration: the remainder path too
    family = families.family_of(cfg)
    lengths = {"inputs": 12, "targets": 12}
    params = nn.unbox(
        jax.jit(lambda k: rolled.init(k, *family.init_inputs(lengths))["params"])(jax.random.PRNGKey(0))
    )
    other = nn.unbox(
        jax.jit(lambda k: unrolled.init(k, *family.init_inputs(lengths))["params"])(jax.random.PRNGKey(0))
    )
    assert jax.tree.structure(params) == jax.tree.structure(other)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other), strict=True):
        np.testing.assert_array_equal(a, b)  # the same init (the same RNG splits), not a computed value
    rng = np.random.default_rng(3)
    batch = {}
    for side in ("decoder", "encoder") if family.encoder_decoder else ("decoder",):
        rows = _packed_rows(rng, 2, 12, cfg.vocab_size)
        batch |= {f"{side}_input_tokens": rows["tokens"], f"{side}_positions": rows["positions"]}
        batch[f"{side}_segment_ids"] = rows["segment_ids"]
    real = batch["decoder_segment_ids"] > 0
    batch["decoder_target_tokens"] = np.where(real, rng.integers(2, cfg.vocab_size, real.shape), 0).astype(
        np.int32
    )
    batch["decoder_loss_weights"] = real.astype(np.float32)

    def loss_and_grad(model):
        loss = lambda p: sft_objective.forward_loss(model, p, jax.tree.map(jnp.asarray, batch), 0.0)[0]
        return jax.jit(jax.value_and_grad(loss))(params)

    (l1, g1), (l2, g2) = loss_and_grad(rolled), loss_and_grad(unrolled)
    np.testing.assert_allclose(float(l2), float(l1), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
