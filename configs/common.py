"""Experiment files start from `base_config()`: every config field, its default and its check live in
aya_jax/defaults/ (one module per section). Experiment files change values only — the config is locked, so a
field that does not exist is an error."""

from aya_jax.defaults import base_config, default_rules  # noqa: F401
