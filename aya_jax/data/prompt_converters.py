"""Feature converters for prompt-based data: preference pairs (reward models, DPO) and prompts-only sets
(sampling for online DPO / RLOO). One example per row, no packing: the losses there are per sequence.

Preference pairs (`PreferencePairFeatureConverter`), task features `prompt` (no EOS), `chosen`, `rejected`
(EOS appended), lengths `{"prompt": P, "chosen": L, "rejected": L}`: each side is one row of length L holding
the *same* prompt followed by its completion,

    prompt [7, 8]   chosen [3, 9, 1]   rejected [4, 1]   L = 6

    chosen_target_tokens     [7, 8, 3, 9, 1, 0]        rejected_target_tokens     [7, 8, 4, 1, 0, 0]
    chosen_input_tokens      [0, 7, 8, 3, 9, 0]        rejected_input_tokens      [0, 7, 8, 4, 0, 0]
    chosen_loss_weights      [0, 0, 1, 1, 1, 0]        rejected_loss_weights      [0, 0, 1, 1, 0, 0]
    chosen_segment_ids       [1, 1, 1, 1, 1, 0]        rejected_segment_ids       [1, 1, 1, 1, 0, 0]
    chosen_positions         [0, 1, 2, 3, 4, 0]        rejected_positions         [0, 1, 2, 3, 0, 0]
    language_id              scalar, `languages.language_id` of the row's language_code (0 = unknown)

A prompt longer than P keeps its last P tokens (the end holds the question and, with the chat template, the
generation prompt); a completion longer than L - len(prompt) is cut from the right (losing its EOS). Both cuts
are counted in `stats.truncated`. The sequence log-probability of a completion is the sum of the token
log-probs where `*_loss_weights` is 1: what DPO and the Bradley–Terry reward loss score (docs/objectives.md).

Prompts-only (`PromptFeatureConverter`), task feature `prompt`, length `{"prompt": P}`: the prompt left-padded
to P, ready for batched generation (every prompt ends at column P - 1; the first generated token goes at P):

    prompt [7, 8, 9]   P = 5
    prompt_tokens       [0, 0, 7, 8, 9]
    prompt_segment_ids  [0, 0, 1, 1, 1]      0 = padding: attention ignores it
    prompt_positions    [0, 0, 0, 1, 2]      positions count real tokens only
    prompt_lengths      3                    scalar
    language_id         scalar

Prompts longer than P keep their last P tokens (counted).
"""

import dataclasses
import threading
from collections.abc import Mapping

import seqio
import tensorflow as tf

from aya_jax.data import feature_converters, languages

_SIDE_FEATURES = ("target_tokens", "input_tokens", "loss_weights", "segment_ids", "positions")
_INT = tf.int32


@dataclasses.dataclass
class TruncationStats:
    examples: int = 0
    truncated: int = 0


class _CountingConverter(seqio.FeatureConverter):
    """Lengths are checked here (prompts arrive untrimmed: `pipeline` passes features named in
    `untrimmed_features` to the task without a length), so seqio's own length assertions are off."""

    untrimmed_features = ("prompt",)

    def __init__(self, **kwargs):
        super().__init__(pack=False, apply_length_check=False, **kwargs)
        self._lock = threading.Lock()
        self.stats = TruncationStats()

    def _count(self, truncated: tf.Tensor) -> tf.Tensor:
        def add(flag):
            with self._lock:
                self.stats.examples += 1
                self.stats.truncated += int(flag)
            return flag

        return tf.numpy_function(add, [truncated], tf.bool, stateful=True)

    def _language(self, ex, table) -> tf.Tensor:
        if "language_code" in ex:
            return feature_converters.language_ids(table, ex["language_code"])
        return tf.constant(languages.UNKNOWN_LANGUAGE_ID, _INT)


def _side(prompt: tf.Tensor, completion: tf.Tensor, length: int) -> dict[str, tf.Tensor]:
    """One row: prompt ++ completion (cut to `length`), padded; features as in the module docstring."""
    completion = completion[: tf.maximum(length - tf.size(prompt), 0)]
    tokens = tf.concat([prompt, completion], 0)  # [n <= length]
    n = tf.size(tokens)
    pad = [[0, length - n]]
    loss = tf.concat([tf.zeros_like(prompt), tf.ones_like(completion)], 0)
    targets = tf.pad(tokens, pad)
    row = {
        "target_tokens": targets,
        "input_tokens": tf.pad(tokens[:-1], [[1, length - n]]),  # shifted right, 0 first
        "loss_weights": tf.pad(loss, pad),
        "segment_ids": tf.pad(tf.ones_like(tokens), pad),
        "positions": tf.pad(tf.range(n, dtype=_INT), pad),
    }
    return {k: tf.ensure_shape(v, [length]) for k, v in row.items()}


class PreferencePairFeatureConverter(_CountingConverter):
    """(prompt, chosen, rejected) -> two right-padded rows sharing the prompt (module docstring)."""

    TASK_FEATURES = {
        name: seqio.FeatureConverter.FeatureSpec(dtype=_INT) for name in ("prompt", "chosen", "rejected")
    }
    MODEL_FEATURES = {
        **{
            f"{side}_{name}": seqio.FeatureConverter.FeatureSpec(dtype=_INT)
            for side in ("chosen", "rejected")
            for name in _SIDE_FEATURES
        },
        "language_id": seqio.FeatureConverter.FeatureSpec(dtype=_INT, rank=0),
    }
    PACKING_FEATURE_DTYPES = {}

    def _convert_features(
        self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
    ) -> tf.data.Dataset:
        prompt_length, length = task_feature_lengths["prompt"], task_feature_lengths["chosen"]
        if task_feature_lengths["rejected"] != length:
            raise ValueError(
                f"task_feature_lengths: chosen and rejected need the same length, got {dict(task_feature_lengths)}"
            )
        if not 0 < prompt_length < length:
            raise ValueError(f"task_feature_lengths: prompt length {prompt_length} must be in [1, {length})")
        table = feature_converters.language_table()

        def convert(ex):
            prompt = ex["prompt"][-prompt_length:]
            room = length - tf.size(prompt)
            truncated = (
                (tf.size(ex["prompt"]) > prompt_length)
                | (tf.size(ex["chosen"]) > room)
                | (tf.size(ex["rejected"]) > room)
            )
            truncated = self._count(truncated)
            out = {"language_id": tf.reshape(self._language(ex, table), [])}
            with tf.control_dependencies([truncated]):
                for side in ("chosen", "rejected"):
                    for name, value in _side(prompt, ex[side], length).items():
                        out[f"{side}_{name}"] = tf.identity(value)
            return out

        return ds.map(convert)  # sequential: the truncation counter is a Python side effect

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        return {name: task_feature_lengths["chosen"] for name in self.MODEL_FEATURES}


class PromptFeatureConverter(_CountingConverter):
    """prompt -> left-padded prompt for generation (module docstring)."""

    TASK_FEATURES = {"prompt": seqio.FeatureConverter.FeatureSpec(dtype=_INT)}
    MODEL_FEATURES = {
        "prompt_tokens": seqio.FeatureConverter.FeatureSpec(dtype=_INT),
        "prompt_segment_ids": seqio.FeatureConverter.FeatureSpec(dtype=_INT),
        "prompt_positions": seqio.FeatureConverter.FeatureSpec(dtype=_INT),
        "prompt_lengths": seqio.FeatureConverter.FeatureSpec(dtype=_INT, rank=0),
        "language_id": seqio.FeatureConverter.FeatureSpec(dtype=_INT, rank=0),
    }
    PACKING_FEATURE_DTYPES = {}

    def _convert_features(
        self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
    ) -> tf.data.Dataset:
        length = task_feature_lengths["prompt"]
        table = feature_converters.language_table()

        def convert(ex):
            truncated = self._count(tf.size(ex["prompt"]) > length)
            with tf.control_dependencies([truncated]):
                prompt = tf.identity(ex["prompt"][-length:])
            n = tf.size(prompt)
            pad = [[length - n, 0]]
            return {
                "prompt_tokens": tf.ensure_shape(tf.pad(prompt, pad), [length]),
                "prompt_segment_ids": tf.ensure_shape(tf.pad(tf.ones_like(prompt), pad), [length]),
                "prompt_positions": tf.ensure_shape(tf.pad(tf.range(n, dtype=_INT), pad), [length]),
                "prompt_lengths": n,
                "language_id": tf.reshape(self._language(ex, table), []),
            }

        return ds.map(convert)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        return {name: task_feature_lengths["prompt"] for name in self.MODEL_FEATURES}
