"""config.hf_convert: Hugging Face export of a run and import of an HF directory (jobs/hf_convert.py)."""

import ml_collections

from aya_jax.defaults.checks import Section


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.hf_dir = ""  # import: the Hugging Face directory to read
    c.checkpoint_dir = ""  # export: an aya_jax workdir (or its checkpoints/)
    c.step = -1  # export: which checkpoint step; -1 = the newest
    c.out_dir = ""  # export: the HF directory to write; import: the workdir to write checkpoints/ into
    c.dtype = "bfloat16"  # export: bfloat16 | float16 | float32
    c.tokenizer = ""  # export: tokenizer.json[.gz] or HF directory to copy; "" = the run's (see the job)
    c.max_shard_gb = 4.0  # export: safetensors shard size
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(c, "hf_convert")
    s.one_of("dtype", ("bfloat16", "float16", "float32"))
    # Any negative step would also read as "the newest" in the job: only -1 says so on purpose.
    s.at_least("step", -1, " (-1 = the newest)")
    s.greater("max_shard_gb", 0.0)
    if config.job == "hf_export" and not (c.checkpoint_dir and c.out_dir):
        s.fail("checkpoint_dir", "export needs checkpoint_dir and out_dir")
    if config.job == "hf_import" and not (c.hf_dir and c.out_dir):
        s.fail("hf_dir", "import needs hf_dir and out_dir")
