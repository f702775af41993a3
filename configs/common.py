"""Experiment files start from `base_config()`: every config field, its default and its check live in
aya_jax/defaults/ (one module per section). Experiment files change values only — the config is locked, so a
field that does not exist is an error."""

from aya_jax.defaults import base_config, default_rules  # noqa: F401


def quickstart_model(config):
    """The quickstart's model and data (configs/quickstart.py): what a job reading `workdirs/quickstart` needs
    to rebuild its model and SentencePiece vocabulary."""
    config.model.preset = "cohere-tiny"
    config.model.dtype = "float32"
    config.data.task = "aya_default"
    config.data.seq_len = 256
    config.data.vocab.size = 8000
    return config
