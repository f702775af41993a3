"""The reward-model trainer: its step is the Bradley–Terry loss of the model's scores (accumulation equal to one
batch), held-out sums per language, a trained model reloaded onto a mesh, config errors; end to end through
`python -m aya_jax.main` from a tiny SFT checkpoint: held-out accuracy clearly above chance, a SIGTERM'd run
that resumes where it stopped (matching an uninterrupted run), not from step 0, and a rerun of a finished run
that adds no metric rows and reports the run's figures."""

from __future__ import annotations

import json
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import runs  # the helper module beside this file
from flax import linen as nn

from aya_jax import checkpoint as ckpt_lib
from aya_jax import pretrained, sharding
from aya_jax.jobs import reward as reward_job
from aya_jax.models import cohere, reward
from aya_jax.training import loop
from aya_jax.training import reward as reward_trainer
from aya_jax.training import state as ts
from configs import common
from configs import reward as reward_config

CFG = cohere.CohereConfig(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
    max_position_embeddings=128, logit_scale=0.125, bos_id=-1, eos_id=1,
)  # fmt: skip
MODEL = reward.RewardModel(CFG)


def _params(seed=0):
    return nn.unbox(MODEL.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"])


def _pair_batch(n=4, length=12, seed=0):
    """Pair features in the PreferencePairFeatureConverter layout (random prompts and completions)."""
    rng = np.random.default_rng(seed)
    batch = {}
    prompts = [rng.integers(2, 96, rng.integers(2, 5)).tolist() for _ in range(n)]
    for side in ("chosen", "rejected"):
        tokens = np.zeros((n, length), np.int32)
        seg, pos, w = (np.zeros((n, length), np.int32) for _ in range(3))
        for i, p in enumerate(prompts):
            row = p + rng.integers(2, 96, rng.integers(1, length - len(p))).tolist() + [1]
            row = row[:length]
            tokens[i, : len(row)] = row
            seg[i, : len(row)] = 1
            pos[i, : len(row)] = np.arange(len(row))
            w[i, len(p) : len(row)] = 1
        batch.update({
            f"{side}_target_tokens": tokens, f"{side}_segment_ids": seg, f"{side}_positions": pos,
            f"{side}_loss_weights": w.astype(np.int32),
            f"{side}_input_tokens": np.concatenate([np.zeros((n, 1), np.int32), tokens[:, :-1]], 1),
        })  # fmt: skip
    batch["language_id"] = np.asarray([3, 7, 3, 9, 7, 3, 3, 9][:n], np.int32)
    return batch


def _scores_alone(params, batch, side):
    """Each side through the model on its own (not the trainer's concatenated batch)."""
    return np.asarray(
        MODEL.apply(
            {"params": params},
            jnp.asarray(batch[f"{side}_target_tokens"]),
            jnp.asarray(batch[f"{side}_positions"]),
            jnp.asarray(batch[f"{side}_segment_ids"]),
        ),
        np.float64,
    )


def test_train_step_is_bradley_terry_on_the_scores_and_accumulation_equals_one_batch():
    params, batch = _params(), _pair_batch(n=8)
    tx = optax.sgd(0.5)
    state = ts.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(0)
    )
    r_c, r_r = _scores_alone(params, batch, "chosen"), _scores_alone(params, batch, "rejected")
    expected_loss = np.mean(np.logaddexp(0.0, -(r_c - r_r)))
    out = {}
    for accum in (1, 4):
        step = jax.jit(reward_trainer.make_train_step(MODEL, tx, lambda s: 0.5, accum))
        new_state, m = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
        np.testing.assert_allclose(float(m["loss"]), expected_loss, rtol=1e-5)
        np.testing.assert_allclose(float(m["accuracy"]), np.mean(r_c > r_r), rtol=1e-6)
        np.testing.assert_allclose(float(m["margin"]), np.mean(r_c - r_r), rtol=1e-4, atol=1e-6)
        out[accum] = new_state.params
        assert int(new_state.step) == 1
    for accum in (4,):
        for a, b in zip(jax.tree.leaves(out[1]), jax.tree.leaves(out[accum]), strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    # One SGD step on the BT loss raises the margin of these pairs.
    new_c, new_r = _scores_alone(out[1], batch, "chosen"), _scores_alone(out[1], batch, "rejected")
    assert np.mean(new_c - new_r) > np.mean(r_c - r_r)


def test_eval_step_sums_overall_and_per_language_over_weighted_pairs():
    params, batch = _params(1), _pair_batch(n=8, seed=1)
    weights = np.asarray([1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # the last two are repeats
    out = jax.device_get(
        jax.jit(reward_trainer.make_eval_step(MODEL, 12))(
            params, {k: jnp.asarray(v) for k, v in batch.items()}, jnp.asarray(weights)
        )
    )
    r_c, r_r = _scores_alone(params, batch, "chosen"), _scores_alone(params, batch, "rejected")
    correct = np.where(r_c > r_r, 1.0, np.where(r_c == r_r, 0.5, 0.0))
    np.testing.assert_allclose(out["loss_sum"], np.sum(np.logaddexp(0.0, -(r_c - r_r)) * weights), rtol=1e-5)
    assert float(out["correct_sum"]) == np.sum(correct * weights) and float(out["pairs"]) == 6
    for lang in range(12):
        keep = (batch["language_id"] == lang) & (weights > 0)
        assert float(out["lang_pairs"][lang]) == keep.sum()
        assert float(out["lang_correct"][lang]) == correct[keep].sum()


def test_load_reward_model_rebuilds_it_on_a_mesh(tmp_path):
    params = _params(2)
    params["head"]["bias"] = jnp.asarray(-0.8, jnp.float32)
    ckpt = ckpt_lib.Checkpointer(tmp_path / "checkpoints", async_save=False)
    ckpt.save(17, {"params": params, "step": jnp.asarray(17)}, {"position": 0})
    ckpt.close()
    pretrained.write_reward_record(tmp_path, CFG, "/some/vocab.model", "/some/sft")
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    rules = sharding.normalize_rules(common.default_rules(), mesh)
    loaded = pretrained.load_reward_model(tmp_path, mesh, rules)
    assert loaded.step == 17 and loaded.vocab_path == "/some/vocab.model" and loaded.model.cfg == CFG
    assert loaded.params["backbone"]["embedding"].sharding.spec == jax.sharding.PartitionSpec(
        "tensor", "fsdp"
    )
    batch = _pair_batch(n=8)
    with mesh, nn.logical_axis_rules(rules):
        scores = jax.jit(lambda p, b: reward_trainer.pair_scores(loaded.model, p, b))(
            loaded.params, {k: jnp.asarray(v) for k, v in batch.items()}
        )
    np.testing.assert_allclose(
        np.asarray(scores[0]), _scores_alone(params, batch, "chosen"), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(FileNotFoundError, match="no reward_model.json"):
        pretrained.load_reward_model(_empty_run(tmp_path), mesh, rules)


def _empty_run(tmp_path):
    run = tmp_path / "not_a_reward_run"
    (run / "checkpoints").mkdir(parents=True)
    return run


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reward.prompt_len", 96, "config.reward.prompt_len: must be in [1, config.data.seq_len=96)"),
        ("reward.max_eval_pairs", -1, "config.reward.max_eval_pairs"),
        ("checkpoint.init_from", "", "config.checkpoint.init_from: empty"),
        ("train.global_batch_size", 6, "config.train.global_batch_size: 6 is not divisible"),
        ("model.preset", "mt5-base", "config.model.preset: 'mt5-base' is not a Cohere decoder"),
    ],
)
def test_bad_config_values_name_the_field(field, value, message):
    config = reward_config.get_config()
    config.mesh.shape = (2, 2, 2)
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(
        loop.ConfigError,
        match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)"),
    ):
        loop.validate_config(config, reward_job.SECTIONS, 8, 1)


# ---- end to end -------------------------------------------------------------------------------------------

RM_ARGS = [
    "--config.data.seq_len=64", "--config.reward.prompt_len=32", "--config.train.steps=100",
    "--config.train.log_every=1", "--config.train.eval_every=50", "--config.checkpoint.every=20",
    "--config.mesh.shape=(2,2,2)", "--config.optimizer.learning_rate=5e-4", "--config.optimizer.warmup_steps=5",
    "--config.train.global_batch_size=16",
]  # fmt: skip


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, data_dir, sft_run):
    workdir = tmp_path_factory.mktemp("reward")
    proc = runs.run(
        "configs/reward.py", workdir, data_dir, *RM_ARGS, f"--config.checkpoint.init_from={sft_run}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow
def test_reward_model_learns_the_held_out_preference(reward_run):
    workdir, proc = reward_run
    evals = runs.metric_rows(workdir, "eval")
    assert [r["step"] for r in evals] == [0, 50, 100]
    assert evals[0]["pairs"] == evals[-1]["pairs"] > 400  # every held-out pair, once
    assert abs(evals[0]["accuracy"] - 0.5) < 0.1  # a fresh head: chance
    # Clearly above it: 0.58 on ~500 pairs is 3.5 standard deviations of a coin's accuracy above 0.5.
    assert evals[-1]["accuracy"] > 0.58, [r["accuracy"] for r in evals]
    per_language = {k: v for k, v in evals[-1].items() if k.startswith("accuracy/")}
    assert len(per_language) > 50 and all(0.0 <= v <= 1.0 for v in per_language.values())
    train = runs.metric_rows(workdir, "train")
    assert [r["step"] for r in train] == list(range(1, 101))
    assert np.mean([r["loss"] for r in train[-10:]]) < np.mean([r["loss"] for r in train[:10]])
    for name in ("reward_curves.png", "reward_accuracy_by_language.png", "reward_model.json"):
        assert (workdir / name).stat().st_size > 100, name
    record = json.loads((workdir / "reward_model.json").read_text())
    assert record["cohere_config"]["num_layers"] == 2 and record["vocab_path"].endswith(".model")
    for what in ("memory per device: reward model state", "held-out accuracy", "per language"):
        assert what in proc.stderr, what


@pytest.mark.slow
def test_sigterm_then_rerun_resumes_and_matches_the_uninterrupted_run(
    reward_run, data_dir, sft_run, tmp_path
):
    ref_dir, _ = reward_run
    workdir = tmp_path / "interrupted"
    args = [*RM_ARGS, f"--config.checkpoint.init_from={sft_run}"]
    proc = runs.start_and_wait(
        "configs/reward.py", workdir, data_dir, args,
        lambda w: any(r["step"] >= 25 for r in runs.metric_rows(w, "train")),
    )  # fmt: skip
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "preempted: saved step" in err, err[-2000:]
    stopped = max(r["step"] for r in runs.metric_rows(workdir, "train"))
    assert stopped < 100, "the run finished before SIGTERM; the test proves nothing"

    proc2 = runs.run("configs/reward.py", workdir, data_dir, *args)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} step {stopped}" in proc2.stderr
    train = runs.metric_rows(workdir, "train")
    assert [r["step"] for r in train] == list(range(1, 101))  # no step trained twice: resumed, not restarted
    reference = {r["step"]: r["loss"] for r in runs.metric_rows(ref_dir, "train")}
    for r in train:
        np.testing.assert_allclose(
            r["loss"], reference[r["step"]], rtol=1e-5, atol=1e-6, err_msg=f"step {r['step']}"
        )
    final = runs.metric_rows(workdir, "eval")[-1]
    assert final["step"] == 100
    np.testing.assert_allclose(
        final["accuracy"], runs.metric_rows(ref_dir, "eval")[-1]["accuracy"], atol=1e-6
    )


@pytest.mark.slow
def test_rerun_of_a_finished_run_adds_no_rows_and_reports_the_run(
    tiny_reward_model, data_dir, sft_run, tmp_path
):
    workdir = tmp_path / "reward"
    shutil.copytree(tiny_reward_model, workdir)  # the session's run stays as the other tests expect it
    before = (workdir / "metrics.jsonl").read_text()
    # The fixture's own command, again: it resumes at its last step and has nothing left to do.
    proc = runs.run(
        "configs/reward.py", workdir, data_dir, "--config.data.seq_len=64", "--config.reward.prompt_len=32",
        "--config.train.steps=4", "--config.reward.max_eval_pairs=16", "--config.mesh.shape=(2,2,2)",
        f"--config.checkpoint.init_from={sft_run}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} step 4" in proc.stderr
    assert (workdir / "metrics.jsonl").read_text() == before  # nothing trained, evaluated or logged again
    # The summary says so, and shows the finished run's figures from its metrics.jsonl.
    assert "nothing trained in this run (resumed at step 4, already finished)" in proc.stderr
    last = runs.metric_rows(workdir, "eval")[-1]
    assert f"held-out accuracy {last['accuracy']:.3f} on {int(last['pairs'])} pairs" in proc.stderr
