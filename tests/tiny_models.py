"""A tiny random Cohere configuration for the tests that need a model of the real architecture but not a trained
one (hidden 64, 2 layers, 4 heads / 2 KV heads, float32; weights drawn wide enough that greedy text varies)."""

from aya_jax import defaults


def cohere_config(max_positions: int = 256):
    config = defaults.base_config()
    config.model.preset = "cohere-tiny"
    for name, value in dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                            max_position_embeddings=max_positions, initializer_range=0.3).items():  # fmt: skip
        config.model.overrides[name] = value
    config.model.dtype = "float32"
    return config
