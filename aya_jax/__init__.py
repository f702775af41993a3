"""aya_jax: JAX/Flax training of Aya-style multilingual language models."""

__version__ = "0.1.0"
