"""The one prompt/answer format of the project: the Cohere chat template (Command R, Aya 23, Aya Expanse), in
Python and as seqio preprocessors. Every path that reads or writes a conversation for a decoder-only model goes
through it: SFT rows, preference pairs (their prompt and both answers), RL prompt sets, generation, and the
exported tokenizer's chat template.

A user turn and its reply, rendered (one line in reality):

    <BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>{user.strip()}<|END_OF_TURN_TOKEN|>
    <|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{reply.strip()}<|END_OF_TURN_TOKEN|>

with an optional system turn `<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{system}<|END_OF_TURN_TOKEN|>` right after
BOS. For training, a row's `inputs` becomes everything up to and including `<|CHATBOT_TOKEN|>` (the generation
prompt, `prompt_text`) and its `targets` the stripped reply followed by `<|END_OF_TURN_TOKEN|>`
(`completion_text`): the loss covers the reply and its end-of-turn, and generation stops at that marker. No EOS
follows in this format (`config.data.format = "chat"`, the default); the raw format (`"raw"`) keeps prompt ++
answer ++ EOS, for plain language modelling, chosen explicitly.

With Command-R's tokenizer the markers are its special tokens (its EOS *is* the end-of-turn token); the
project's own SentencePiece vocabularies reserve them as single user-defined pieces (aya_jax/data/vocab.py), so
a quickstart model and an Aya model see a conversation the same way. `render` mirrors the Jinja template token
for token (checked against the template itself in the tests). The Python half imports no TensorFlow (generation
uses it); the tf half imports TensorFlow and seqio when first called.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

BOS = "<BOS_TOKEN>"
START_OF_TURN = "<|START_OF_TURN_TOKEN|>"
END_OF_TURN = "<|END_OF_TURN_TOKEN|>"
USER = "<|USER_TOKEN|>"
CHATBOT = "<|CHATBOT_TOKEN|>"
SYSTEM = "<|SYSTEM_TOKEN|>"
# For SentencePiece training: each marker one piece, never split or merged with text.
SPECIAL_TOKENS = (BOS, START_OF_TURN, END_OF_TURN, USER, CHATBOT, SYSTEM)

_ROLE_TOKENS = {"user": USER, "assistant": CHATBOT}
# Python's str.strip() whitespace (str.isspace), as an RE2 class: Jinja's `content.strip()` is Python's.
_SPACE = r"[\t-\r\x1c-\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_STRIP = f"^{_SPACE}+|{_SPACE}+$"


def render(
    messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False, bos_token: str = BOS
) -> str:
    """The default Cohere template for `[{"role": "system"|"user"|"assistant", "content": ...}, ...]`."""
    out = [bos_token]
    if messages and messages[0]["role"] == "system":
        out.append(f"{START_OF_TURN}{SYSTEM}{messages[0]['content']}{END_OF_TURN}")  # not stripped
        messages = messages[1:]
    for i, message in enumerate(messages):
        if (message["role"] == "user") != (i % 2 == 0):
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        out.append(f"{START_OF_TURN}{_ROLE_TOKENS[message['role']]}{message['content'].strip()}{END_OF_TURN}")
    if add_generation_prompt:
        out.append(f"{START_OF_TURN}{CHATBOT}")
    return "".join(out)


def prompt_text(user: str, system: str = "") -> str:
    """A single-turn prompt up to the generation prompt: what a row's `inputs` becomes."""
    messages = [{"role": "system", "content": system}] if system else []
    return render([*messages, {"role": "user", "content": user}], add_generation_prompt=True)


def completion_text(reply: str) -> str:
    """A reply as the template writes it: stripped, then the closing end-of-turn marker."""
    return reply.strip() + END_OF_TURN


def strip_tf(text: tf.Tensor) -> tf.Tensor:
    """Python's str.strip() on a string tensor."""
    import tensorflow as tf

    return tf.strings.regex_replace(text, _STRIP, "")


def prompt_text_tf(user: tf.Tensor, system: str = "") -> tf.Tensor:
    import tensorflow as tf

    system_turn = f"{START_OF_TURN}{SYSTEM}{system}{END_OF_TURN}" if system else ""
    return tf.strings.join(
        [BOS, system_turn, START_OF_TURN, USER, strip_tf(user), END_OF_TURN, START_OF_TURN, CHATBOT]
    )


def _format(ex, prompt_field: str, completion_fields: tuple[str, ...], system: str):
    import tensorflow as tf

    ex = dict(ex)
    ex[prompt_field] = prompt_text_tf(ex[prompt_field], system)
    for field in completion_fields:
        ex[field] = tf.strings.join([strip_tf(ex[field]), END_OF_TURN])
    return ex


def chat_preprocessor(
    prompt_field: str = "inputs", completion_fields: tuple[str, ...] = ("targets",), system: str = ""
):
    """A seqio preprocessor (before `tokenize`) that formats string features with the template: SFT rows
    (`inputs` -> prompt, `targets` -> reply), preference pairs (`prompt`; `chosen`, `rejected`) or
    prompts-only rows (`prompt`; no completion)."""
    import seqio

    return seqio.map_over_dataset(
        functools.partial(
            _format, prompt_field=prompt_field, completion_fields=tuple(completion_fields), system=system
        )
    )
