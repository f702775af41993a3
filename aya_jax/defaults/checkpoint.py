"""config.checkpoint: orbax checkpoints of a run (aya_jax/checkpoint.py) and where a new run's params come from."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.every = 500  # steps (iterations) between checkpoints; the last step is always saved
    c.keep = 3
    c.directory = ""  # "" = <workdir>/checkpoints; may be gs://... (needed on multi-host pods)
    c.async_save = True
    # Params-only start (new optimiser, step 0) from another run: its workdir or checkpoints/ directory (the
    # newest step), e.g. a quickstart run, a merge or an hf_import output. Ignored when resuming. The
    # preference objectives (reward, dpo, rloo) always start from one: the SFT run.
    c.init_from = ""
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(c, "checkpoint")
    s.at_least("every", 1)
    s.at_least("keep", 1)
    if c.init_from and config.model.hf_init_dir:
        s.fail(
            "init_from",
            "set either it or config.model.hf_init_dir, not both (both say where the initial params come from)",
        )
