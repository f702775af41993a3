"""aya_jax/defaults: every count, period, size, rate and probability field refuses an out-of-range value with
one line naming it, and no numeric field goes without such a check (or a stated reason to have none)."""

import ml_collections
import pytest

from aya_jax import defaults
from aya_jax.defaults import ConfigError
from aya_jax.defaults import model as model_defaults


def _valid_config() -> ml_collections.ConfigDict:
    """base_config() plus what some sections need that has no default (an input to read), so that every
    section validates and each failure below is the field's own."""
    config = defaults.base_config()
    config.generate.checkpoint_dir = "workdirs/run"
    config.generate.prompt = "Hola"
    config.serve.checkpoint_dir = "workdirs/run"
    config.checkpoint.init_from = "workdirs/sft"  # the reward model's backbone
    config.curation.pool = ("pool.jsonl",)
    config.curation.embed_checkpoint = "workdirs/run"
    return config


# (dotted field under config, an out-of-range value): the value is just past the bound where there is one.
OUT_OF_RANGE = [
    ("curation.batch_size", 0),
    ("curation.max_length", 0),
    ("curation.part_rows", 0),
    ("curation.clusters", 0),
    ("curation.kmeans_iterations", 0),
    ("curation.kmeans_restarts", 0),
    ("curation.sample_per_centroid", -1),
    ("curation.budget", 0.0),
    ("curation.budget", 2.5),  # neither a fraction nor a row count
    ("curation.temperature", 0.0),
    ("curation.rounds", 0),
    ("curation.finetune_steps", 0),
    ("curation.weight_temperature", 0.0),
    ("curation.max_new_tokens", 0),
    ("curation.sample_temperature", -0.1),
    ("curation.top_k", -1),
    ("curation.top_p", 0.0),
    ("curation.gen_batch", 0),
    ("curation.reward_prompt_len", -1),
    ("curation.router_fraction", 1.0),
    ("curation.router_holdout", 0.0),
    ("curation.router_l2", 0.0),
    ("curation.samples", 0),
    ("pipeline.base_steps", 0),
    ("pipeline.teacher_steps", 0),
    ("pipeline.reward_steps", 0),
    ("pipeline.sft_steps", 0),
    ("pipeline.pool_per_language", 0),
    ("pipeline.eval_rows_per_language", 0),
    ("pipeline.eval_questions_per_language", 0),
    ("pipeline.dpo_offline_steps", -1),
    ("pipeline.dpo_iterations", -1),
    ("evals.every", -1),
    ("evals.max_items", 0),
    ("evals.num_fewshot", -1),
    ("evals.max_texts", 0),
    ("evals.batch_size", 0),
    ("evals.rounds", 0),
    ("eval.batch_size", 0),
    ("eval.max_length", -1),
    ("eval.rounds", 0),
    ("eval.confidence", 1.0),
    ("eval.num_fewshot", -1),
    ("eval.max_items", -1),
    ("eval.beta", 0.0),
    ("eval.prompt_len", -1),
    ("eval.max_texts", -1),
    ("eval.top_tokens", 0),
    ("eval.limit", -1),
    ("eval.harness_num_fewshot", -2),
    ("eval.elo_permutations", 0),
    ("eval.bt_rounds", 0),
    ("eval.judge_concurrency", 0),
    ("eval.judge_max_tokens", 0),
    ("eval.judge_tie", -0.1),
    ("eval.judge_strong", 0.05),
    ("eval.max_new_tokens", 0),
    ("eval.temperature", -1.0),
    ("eval.top_k", -1),
    ("eval.top_p", 0.0),
    ("eval.top_fraction", 0.0),
    ("aot.hbm_gib", -1.0),
    ("checkpoint.every", 0),
    ("checkpoint.keep", 0),
    ("data.seq_len", 1),
    ("data.inputs_len", -1),
    ("data.shuffle_buffer", 0),
    ("data.max_example_chars", -1),
    ("data.mixture_temperature", -1.0),
    ("data.num_shards", -1),
    ("data.vocab.size", 0),
    ("data_stats.sample_examples", -1),
    ("data_stats.max_rows_per_source", -1),
    ("dpo.beta", 0.0),
    ("dpo.label_smoothing", 0.5),
    ("dpo.label_smoothing", -0.1),
    ("dpo.offline_steps", -1),
    ("dpo.prompt_len", 0),
    ("dpo.prompt_len", 512),  # config.data.seq_len: no room for a reply
    ("dpo.iterations", -1),
    ("dpo.prompts_per_iteration", 0),
    ("dpo.samples_per_prompt", 1),
    ("dpo.missing_eos_penalty", -1.0),
    ("dpo.min_score_gap", -1.0),
    ("dpo.epochs_per_iteration", 0),
    ("dpo.temperature", 0.0),
    ("dpo.top_k", -1),
    ("dpo.top_p", 0.0),
    ("dpo.top_p", 1.5),
    ("dpo.max_new_tokens", 0),
    ("dpo.eval_prompts", -1),  # 0 = all; a negative count must not slice the prompt set from the end
    ("dpo.eval_samples", 0),
    ("generate.max_new_tokens", 0),
    ("generate.temperature", -1.0),
    ("generate.top_k", -1),
    ("generate.top_p", 0.0),
    ("generate.batch_size", 0),
    ("generate.prompt_bucket", 0),
    ("serve.port", 65536),
    ("serve.slots", 0),
    ("serve.max_len", 1),
    ("serve.prompt_bucket", 0),
    ("serve.encoder_len", 0),
    ("serve.max_tokens", 0),
    ("serve.score_batch_size", 0),
    ("hf_convert.step", -2),  # -1 = the newest; the job would read any negative step so
    ("hf_convert.max_shard_gb", 0.0),
    ("merge.last_steps", -1),
    ("merge.eval_batches", -1),  # 0 = no evaluation; -1 must not turn it off silently
    ("merge.density", 0.0),
    ("merge.density", (0.5, 1.5)),
    ("mesh.shape", (1, 0, 1)),
    ("mesh.shape", (1, -2, 1)),
    ("mesh.shape", (-1, -1, 1)),
    ("mesh.shape", (1, -1)),
    ("mesh.heartbeat_timeout_seconds", 0),
    ("mesh.initialization_timeout_seconds", 0),
    ("mesh.shutdown_timeout_seconds", 0),
    ("metrics.peak_flops_per_device", -1.0),
    ("model.overrides.vocab_size", -1),
    ("model.overrides.hidden_size", 0),
    ("model.overrides.intermediate_size", 0),
    ("model.overrides.num_layers", 0),
    ("model.overrides.num_heads", 0),
    ("model.overrides.num_kv_heads", 0),
    ("model.overrides.head_dim", 0),
    ("model.overrides.max_position_embeddings", 0),
    ("model.overrides.rope_theta", 0.0),
    ("model.overrides.logit_scale", 0.0),
    ("model.overrides.layer_norm_eps", 0.0),
    ("model.overrides.initializer_range", -0.02),
    ("model.scan_unroll", 0),
    ("model_info.num_devices", -1),
    ("optimizer.learning_rate", 0.0),
    ("optimizer.warmup_steps", -1),
    ("optimizer.end_lr_fraction", 1.5),
    ("optimizer.b1", 1.0),
    ("optimizer.b2", -0.1),
    ("optimizer.eps", 0.0),
    ("optimizer.weight_decay", -0.1),
    ("optimizer.grad_clip_norm", -1.0),
    ("reward.prompt_len", 0),
    ("reward.max_eval_pairs", -1),  # 0 = the whole eval split; -1 must not turn evaluation off
    ("rloo.prompts_per_step", 0),
    ("rloo.k", 1),
    ("rloo.beta", -0.1),
    ("rloo.temperature", 0.0),
    ("rloo.top_k", -1),
    ("rloo.top_p", 1.5),
    ("rloo.max_new_tokens", 0),
    ("rloo.max_prompt_tokens", 0),
    ("rloo.missing_eos_penalty", -1.0),
    ("rloo.reward_clip", -1.0),
    ("rloo.num_ppo_epochs", 0),
    ("rloo.num_minibatches", 0),
    ("rloo.clip_eps", -0.1),
    ("rloo.eval_prompts", -1),  # 0 = no evaluation; -1 must not turn it off silently
    ("rloo.eval_samples", -1),
    ("train.steps", 0),
    ("train.global_batch_size", 0),
    ("train.grad_accum_steps", 0),
    ("train.z_loss", -1.0),
    ("train.log_every", 0),
    ("train.eval_every", 0),
    ("train.eval_every", -1),  # DPO and RLOO evaluate every config.train.eval_every too
    ("train.eval_batches", -1),  # 0 = no evaluation; -1 must not turn it off silently
    ("train.sample_prompts", -1),
    ("train.max_skipped", 0),
    ("train_vocab.size", 0),
    ("train_vocab.max_rows", 0),
    ("train_vocab.temperature", 0.0),
]

# Numeric fields with no range to check, and why.
NO_RANGE = {
    "seed": "any integer seeds the run",
    "generate.seed": "any integer seeds the sampler",
    "merge.t": "slerp's t may extrapolate past [0, 1]; the job requires it finite",
    "merge.lambda_": "a scale of the task vector; any finite value (the job requires it finite)",
}


def _set(config: ml_collections.ConfigDict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
        node = node[name]
    node[leaf] = value


def _numeric_fields(node: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            found |= _numeric_fields(value, path + ".")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.add(path)
    return found


def test_the_valid_config_passes_every_section():
    defaults.validate(_valid_config(), defaults.SECTIONS)


@pytest.mark.bad_input
@pytest.mark.parametrize("path, value", OUT_OF_RANGE, ids=[f"{p}={v}" for p, v in OUT_OF_RANGE])
def test_out_of_range_value_is_a_one_line_error_naming_the_field(path, value):
    config = _valid_config()
    with config.unlocked():
        _set(config, path, value)
    with pytest.raises(ConfigError) as info:
        defaults.validate(config, [path.split(".")[0]])
    message = str(info.value)
    assert message.startswith(f"config.{path}: "), message
    assert "\n" not in message


def test_every_numeric_field_has_a_range_test_or_a_reason():
    # A new numeric field (or override) fails here until it has a check and a line in OUT_OF_RANGE.
    tested = {path for path, _ in OUT_OF_RANGE}
    fields = _numeric_fields(defaults.base_config())
    fields |= {f"model.overrides.{name}" for name, kind in model_defaults.OVERRIDES if kind is not bool}
    assert sorted(fields - tested - set(NO_RANGE)) == []
    assert sorted((tested | set(NO_RANGE)) - fields - {"mesh.shape"}) == []  # no stale entries


@pytest.mark.parametrize(
    "path, value",
    [
        ("data_stats.max_rows_per_source", 0),  # 0 = all rows
        ("dpo.eval_prompts", 0),  # 0 = all prompts
        ("hf_convert.step", -1),  # -1 = the newest checkpoint
        ("merge.eval_batches", 0),  # 0 = no evaluation
        ("merge.density", (0.5, 1.0)),
        ("mesh.shape", (2, -1, 1)),
        ("model.overrides.vocab_size", 0),  # 0 = the tokenizer's
        ("model_info.num_devices", 0),  # 0 = this machine's
        ("reward.max_eval_pairs", 0),  # 0 = the whole eval split
        ("rloo.eval_prompts", 0),  # 0 = no evaluation
        ("rloo.eval_samples", 0),  # greedy completions only
        ("rloo.missing_eos_penalty", 0.0),
        ("train.eval_batches", 0),  # 0 = no evaluation
    ],
)
def test_documented_special_values_are_accepted(path, value):
    config = _valid_config()
    with config.unlocked():
        _set(config, path, value)
    defaults.validate(config, [path.split(".")[0]])


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("teachers", ("no-equals",), "'no-equals' is not name=value"),
        ("sft_runs", ("a=*", "a=fr"), "names repeat: ['a', 'a']"),
        ("merge_weights", (1.0,), "1 weights for 2 SFT runs"),
        ("final_merge_weights", (1.0,), "two weights"),
        ("routing", "best", "routing"),
    ],
)
def test_pipeline_entries_are_checked_before_anything_runs(field, value, message):
    config = _valid_config()
    config.pipeline.sft_runs = ("a=*", "b=fr")
    config.pipeline[field] = value
    with pytest.raises(ConfigError) as info:
        defaults.validate(config, ["pipeline"])
    assert str(info.value).startswith(f"config.pipeline.{field}: ") and message in str(info.value)
