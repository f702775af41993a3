"""Preference-pair and prompts-only converters on hand-written examples (the layouts in their docstring)."""

import numpy as np
import pytest
import tensorflow as tf

from aya_jax.data import languages, prompt_converters

FR = languages.language_id("fra")


def _dataset(examples, fields):
    spec = {f: tf.TensorSpec([None], tf.int32) for f in fields} | {
        "language_code": tf.TensorSpec([], tf.string)
    }
    return tf.data.Dataset.from_generator(
        lambda: (
            {
                **{f: np.array(v, np.int32) for f, v in zip(fields, ex[:-1], strict=True)},
                "language_code": ex[-1],
            }
            for ex in examples
        ),
        output_signature=spec,
    )


def test_preference_pair_layout_matches_the_docstring():
    converter = prompt_converters.PreferencePairFeatureConverter()
    ds = _dataset([([7, 8], [3, 9, 1], [4, 1], "fra")], ("prompt", "chosen", "rejected"))
    (row,) = [
        {k: v.tolist() for k, v in r.items()}
        for r in converter(ds, {"prompt": 4, "chosen": 6, "rejected": 6}).as_numpy_iterator()
    ]
    assert row == {
        "chosen_target_tokens": [7, 8, 3, 9, 1, 0], "rejected_target_tokens": [7, 8, 4, 1, 0, 0],
        "chosen_input_tokens": [0, 7, 8, 3, 9, 0], "rejected_input_tokens": [0, 7, 8, 4, 0, 0],
        "chosen_loss_weights": [0, 0, 1, 1, 1, 0], "rejected_loss_weights": [0, 0, 1, 1, 0, 0],
        "chosen_segment_ids": [1, 1, 1, 1, 1, 0], "rejected_segment_ids": [1, 1, 1, 1, 0, 0],
        "chosen_positions": [0, 1, 2, 3, 4, 0], "rejected_positions": [0, 1, 2, 3, 0, 0],
        "language_id": FR,
    }  # fmt: skip
    assert (converter.stats.examples, converter.stats.truncated) == (1, 0)


def test_long_prompts_keep_their_end_and_completions_their_start():
    converter = prompt_converters.PreferencePairFeatureConverter()
    ds = _dataset(
        [([1, 2, 3, 4, 5, 6], [20, 21, 22, 23, 24, 2], [30, 2], "xx")], ("prompt", "chosen", "rejected")
    )
    (row,) = list(converter(ds, {"prompt": 3, "chosen": 7, "rejected": 7}).as_numpy_iterator())
    assert row["chosen_target_tokens"].tolist() == [
        4,
        5,
        6,
        20,
        21,
        22,
        23,
    ]  # prompt's last 3, then the room left
    assert row["rejected_target_tokens"].tolist() == [4, 5, 6, 30, 2, 0, 0]
    assert row["language_id"] == 0 and converter.stats.truncated == 1
    with pytest.raises(ValueError, match="prompt length 8 must be in"):
        converter(ds, {"prompt": 8, "chosen": 7, "rejected": 7})


def test_prompts_are_left_padded():
    converter = prompt_converters.PromptFeatureConverter()
    ds = _dataset([([7, 8, 9], "fra"), (list(range(1, 9)), "fra")], ("prompt",))
    rows = [{k: v.tolist() for k, v in r.items()} for r in converter(ds, {"prompt": 5}).as_numpy_iterator()]
    assert rows[0] == {
        "prompt_tokens": [0, 0, 7, 8, 9], "prompt_segment_ids": [0, 0, 1, 1, 1], "prompt_positions": [0, 0, 0, 1, 2],
        "prompt_lengths": 3, "language_id": FR,
    }  # fmt: skip
    assert rows[1]["prompt_tokens"] == [4, 5, 6, 7, 8] and rows[1]["prompt_lengths"] == 5  # the end is kept
    assert (converter.stats.examples, converter.stats.truncated) == (2, 1)
