"""config.reward: the reward model (jobs/reward.py) — a Cohere backbone from an SFT run plus a scalar head,
trained with the Bradley–Terry loss on preference pairs."""

import ml_collections

from aya_jax.defaults.checks import Section
from aya_jax.models import families


def defaults() -> ml_collections.ConfigDict:
    r = ml_collections.ConfigDict()
    r.task = "preference_pairs"  # or preference_pairs_<lang>: one language
    # The pairs built from the embedded default data (aya_jax/data/preference_default.py); False: the files
    # of config.data.preference_dir.
    r.default_pairs = True
    r.prompt_len = 48  # a longer prompt keeps its last prompt_len tokens (a pair row is config.data.seq_len)
    r.max_eval_pairs = 0  # held-out pairs scored per evaluation; 0 = the whole eval split
    return r


def validate(r: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(r, "reward")
    if not 0 < r.prompt_len < config.data.seq_len:
        s.fail("prompt_len", f"must be in [1, config.data.seq_len={config.data.seq_len}), got {r.prompt_len}")
    s.at_least("max_eval_pairs", 0, " (0 = all)")
    if not config.checkpoint.init_from:
        Section(config.checkpoint, "checkpoint").fail(
            "init_from",
            "empty; the reward model's backbone starts from an SFT run (e.g. `python -m aya_jax.main "
            "--config configs/quickstart.py --workdir W`, then init_from=W)",
        )
    preset = config.model.preset
    if (
        not config.model.hf_init_dir
        and preset in families.presets()
        and families.family_of_preset(preset).encoder_decoder
    ):
        Section(config.model, "model").fail(
            "preset",
            f"{preset!r} is not a Cohere decoder; reward models here are a Cohere backbone with a scalar head",
        )
