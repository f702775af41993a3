"""The packed decoder feature converter on hand-written examples: layout, masks, shifts, language ids."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from aya_jax.data import feature_converters, languages

FR, SW = languages.language_id("fra"), languages.language_id("swa")


def _dataset(examples, with_language=True):
    spec = {"inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)}
    if with_language:
        spec["language_code"] = tf.TensorSpec([], tf.string)

    def gen():
        for ex in examples:
            out = {"inputs": np.array(ex[0], np.int32), "targets": np.array(ex[1], np.int32)}
            if with_language:
                out["language_code"] = ex[2]
            yield out

    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _convert(examples, length, pack=True, with_language=True, **kwargs):
    converter = feature_converters.DecoderPackedFeatureConverter(pack=pack, **kwargs)
    ds = converter(_dataset(examples, with_language), {"inputs": length, "targets": length})
    rows = list(ds.as_numpy_iterator())
    for row in rows:
        assert set(row) == set(converter.MODEL_FEATURES)
        assert all(v.dtype == np.int32 and v.shape == (length,) for v in row.values())
    return rows, converter.stats


def test_packed_layout_matches_the_documented_example():
    rows, stats = _convert([([7, 8], [3, 9, 1], "fra"), ([5], [4, 1], "swa")], length=10)
    assert len(rows) == 1
    row = {k: v.tolist() for k, v in rows[0].items()}
    assert row["decoder_target_tokens"] == [7, 8, 3, 9, 1, 5, 4, 1, 0, 0]
    assert row["decoder_input_tokens"] == [0, 7, 8, 3, 9, 0, 5, 4, 0, 0]
    assert row["decoder_loss_weights"] == [0, 0, 1, 1, 1, 0, 1, 1, 0, 0]
    assert row["decoder_segment_ids"] == [1, 1, 1, 1, 1, 2, 2, 2, 0, 0]
    assert row["decoder_positions"] == [0, 1, 2, 3, 4, 0, 1, 2, 0, 0]
    assert row["decoder_language_ids"] == [FR] * 5 + [SW] * 3 + [0, 0]
    assert (stats.examples, stats.truncated, stats.rows, stats.tokens) == (2, 0, 1, 8)
    assert feature_converters.packing_efficiency(rows[0]) == 0.8


def test_unpacked_rows_hold_one_example_each():
    rows, _ = _convert([([7, 8], [3, 9, 1], "fra"), ([5], [4, 1], "swa")], length=6, pack=False)
    assert [r["decoder_target_tokens"].tolist() for r in rows] == [[7, 8, 3, 9, 1, 0], [5, 4, 1, 0, 0, 0]]
    assert [r["decoder_input_tokens"].tolist() for r in rows] == [[0, 7, 8, 3, 9, 0], [0, 5, 4, 0, 0, 0]]
    assert [r["decoder_segment_ids"].tolist() for r in rows] == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
    assert [r["decoder_loss_weights"].tolist() for r in rows] == [[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]]
    assert [r["decoder_positions"].tolist() for r in rows] == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 0, 0]]
    assert [r["decoder_language_ids"].tolist() for r in rows] == [[FR] * 5 + [0], [SW] * 3 + [0] * 3]


def test_long_examples_are_truncated_and_counted():
    rows, stats = _convert([([11, 12, 13], [21, 22, 23, 1], "fra"), ([5], [4, 1], "eng")], length=5)
    assert stats.truncated == 1 and stats.examples == 2
    first = rows[0]
    assert first["decoder_target_tokens"].tolist() == [11, 12, 13, 21, 22]  # cut from the right: EOS is lost
    assert first["decoder_loss_weights"].tolist() == [0, 0, 0, 1, 1]
    assert rows[1]["decoder_target_tokens"].tolist() == [5, 4, 1, 0, 0]


def test_best_fit_packing_beats_greedy_order():
    # Greedy packing in arrival order needs 3 rows of 10 (6 | 5+4 | 5); best-fit decreasing needs 2.
    examples = [([1] * 5, [2], "eng"), ([1] * 4, [2], "eng"), ([1] * 3, [2], "eng"), ([1] * 4, [2], "eng")]
    rows, stats = _convert(examples, length=10)
    assert len(rows) == 2 and stats.efficiency(10) == 1.0
    # Rows keep the arrival order of their first example, and examples inside a row keep theirs.
    assert [r["decoder_positions"].tolist() for r in rows] == [
        [0, 1, 2, 3, 4, 5, 0, 1, 2, 3],
        [0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
    ]


def test_pack_examples_never_overflows():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=300).astype(np.int32)
    tokens = np.zeros((300, 40), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = i + 1  # each example's tokens carry its index
    loss = (tokens > 0).astype(np.int32)
    out = feature_converters.pack_examples(tokens, loss, lengths, np.ones(300, np.int32), 64, pack=True)
    targets, _, segments, positions, _ = out
    seen = []
    for row_t, row_s, row_p in zip(targets, segments, positions, strict=True):
        for s in range(1, row_s.max() + 1):
            values = row_t[row_s == s]
            assert len(set(values)) == 1 and len(values) == lengths[values[0] - 1]
            assert row_p[row_s == s].tolist() == list(range(len(values)))
            seen.append(values[0])
    assert sorted(seen) == list(range(1, 301))  # every example exactly once
    assert (segments != 0).sum() / segments.size > 0.97


def test_masks_and_shift_invariants():
    rng = np.random.default_rng(1)
    examples = [
        (
            rng.integers(3, 99, rng.integers(0, 9)).tolist(),
            [*rng.integers(3, 99, rng.integers(1, 9)).tolist(), 1],
            code,
        )
        for code in ["fra", "swa", "arb_Arab", "zh-Hant", "xx-unknown"] * 8
    ]
    rows, _ = _convert(examples, length=32)
    codes = {
        "fra": FR,
        "swa": SW,
        "arb_Arab": languages.language_id("ara"),
        "zh-Hant": languages.language_id("zho"),
    }
    assert sorted({int(v) for r in rows for v in r["decoder_language_ids"]}) == sorted({0, *codes.values()})
    for row in rows:
        pad = row["decoder_segment_ids"] == 0
        assert not row["decoder_loss_weights"][pad].any()  # no loss on padding
        assert not row["decoder_target_tokens"][pad].any() and not row["decoder_input_tokens"][pad].any()
        assert not row["decoder_language_ids"][pad].any()
        for p in range(len(pad)):
            if row["decoder_positions"][p] == 0:
                assert row["decoder_input_tokens"][p] == 0
            else:
                assert row["decoder_input_tokens"][p] == row["decoder_target_tokens"][p - 1]
                assert row["decoder_segment_ids"][p] == row["decoder_segment_ids"][p - 1]
    # Loss falls exactly on the target tokens (EOS included), in total.
    assert sum(int(r["decoder_loss_weights"].sum()) for r in rows) == sum(len(t) for _, t, _ in examples)


def test_without_language_code_the_ids_are_zero():
    rows, _ = _convert([([7], [3, 1], None)], length=4, with_language=False)
    assert rows[0]["decoder_language_ids"].tolist() == [0, 0, 0, 0]


def test_task_feature_lengths_are_checked():
    converter = feature_converters.DecoderPackedFeatureConverter()
    with pytest.raises(ValueError, match="task_feature_lengths"):
        converter(_dataset([([7], [3, 1], "fra")]), {"targets": 8})


# ---- encoder-decoder (mT5) ---------------------------------------------------------------------------------


def _pairs(examples):
    spec = {"inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)}
    return tf.data.Dataset.from_generator(
        lambda: ({"inputs": np.array(i, np.int32), "targets": np.array(t, np.int32)} for i, t in examples),
        output_signature=spec,
    )


@pytest.mark.parametrize("pack", [False, True])
def test_encoder_decoder_rows_equal_seqios(pack):
    # Sizes chosen so that seqio's greedy packer and first-fit decreasing make the same rows.
    examples = [
        ([7, 8, 9], [3, 9, 1]),
        ([5, 6], [4, 1]),
        ([11, 12, 13, 14], [21, 22, 23, 24, 1]),
        ([2, 3, 4], [5, 6, 7, 1]),
    ]
    lengths = {"inputs": 8, "targets": 9}
    mine = list(
        feature_converters.EncoderDecoderFeatureConverter(pack=pack)(
            _pairs(examples), lengths
        ).as_numpy_iterator()
    )
    reference = list(seqio.EncDecFeatureConverter(pack=pack)(_pairs(examples), lengths).as_numpy_iterator())
    assert len(mine) == len(reference) == (2 if pack else 4)
    for m, r in zip(mine, reference, strict=True):
        assert set(r) <= set(m)
        for key in r:
            assert m[key].tolist() == r[key].tolist(), key


def test_encoder_decoder_appends_eos_and_packs_every_example_once():
    rng = np.random.default_rng(2)
    examples = [
        (
            rng.integers(3, 99, rng.integers(1, 25)).tolist(),
            [*rng.integers(3, 99, rng.integers(0, 12)).tolist(), 1],
        )
        for _ in range(200)
    ]
    converter = feature_converters.EncoderDecoderFeatureConverter(pack=True, inputs_eos_id=1)
    rows = list(converter(_pairs(examples), {"inputs": 24, "targets": 16}).as_numpy_iterator())
    seen = []
    for row in rows:
        for s in range(1, row["encoder_segment_ids"].max() + 1):
            enc = row["encoder_input_tokens"][row["encoder_segment_ids"] == s].tolist()
            dec = row["decoder_target_tokens"][row["decoder_segment_ids"] == s].tolist()
            assert enc[-1] == 1 and row["encoder_positions"][
                row["encoder_segment_ids"] == s
            ].tolist() == list(range(len(enc)))
            seen.append((tuple(enc), tuple(dec)))
        shifted = row["decoder_input_tokens"]
        starts = row["decoder_positions"] == 0
        assert (shifted[starts] == 0).all()
        assert (shifted[1:][~starts[1:]] == row["decoder_target_tokens"][:-1][~starts[1:]]).all()
        assert (row["decoder_loss_weights"] == (row["decoder_segment_ids"] > 0)).all()
    expected = [(tuple([*i[:23], 1]), tuple(t[:16])) for i, t in examples]
    assert sorted(seen) == sorted(expected)
    assert converter.stats.truncated == sum(len(i) >= 24 for i, _ in examples)
    assert converter.stats.efficiency(16) > 0.7
