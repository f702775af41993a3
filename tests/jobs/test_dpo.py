"""The DPO trainer: its step is `dpo_loss` of independently computed sequence log-probs (padding pairs ignored),
online pairs are the best / worst of k samples re-laid out without changing their log-probs, config errors;
end to end through `python -m aya_jax.main` from a tiny SFT checkpoint and reward model: offline + online DPO
raise the implicit-reward margin and the held-out reward-model score, and a SIGTERM'd run resumes where it
stopped, matching the uninterrupted run."""

from __future__ import annotations

import re
import shutil
import signal

import faults  # tests/faults.py
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import runs  # the helper module beside this file
from flax import linen as nn

from aya_jax import defaults, sampling
from aya_jax.models import cohere
from aya_jax.training import dpo, rollouts
from aya_jax.training import state as ts
from configs import dpo as dpo_config

CFG = cohere.CohereConfig(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
    max_position_embeddings=128, logit_scale=0.125, bos_id=-1, eos_id=1,
)  # fmt: skip
MODEL = cohere.CohereLM(CFG)


def _params(seed=0):
    return nn.unbox(MODEL.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"])


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


_LOGITS = jax.jit(lambda params, tokens: MODEL.apply({"params": params}, tokens))


def _sequence_log_prob(params, prompt, completion):
    """log π(completion | prompt) from full logits of the sequence alone (right-padded to 32: causal, so the
    padding changes nothing before it), summed in float64."""
    seq = np.asarray(prompt + completion, np.int32)
    padded = np.zeros((1, 32), np.int32)
    padded[0, : len(seq) - 1] = seq[:-1]
    logits = np.asarray(_LOGITS(params, jnp.asarray(padded)), np.float64)[0, : len(seq) - 1]
    logp = np.take_along_axis(_np_log_softmax(logits), seq[1:, None], -1)[:, 0]
    return logp[len(prompt) - 1 :].sum()


def _pairs(n=4, length=16, seed=0):
    """(features in the PreferencePairFeatureConverter layout, the (prompt, chosen, rejected) token lists)."""
    rng = np.random.default_rng(seed)
    raw = []
    for _ in range(n):
        prompt = rng.integers(2, 96, rng.integers(2, 5)).tolist()
        c = rng.integers(2, 96, rng.integers(1, 8)).tolist() + [1]
        r = rng.integers(2, 96, rng.integers(1, 8)).tolist() + [1]
        raw.append((prompt, c, r))
    batch = {}
    for s, side in enumerate(("chosen", "rejected")):
        f = {
            name: np.zeros((n, length), np.int32)
            for name in ("target_tokens", "input_tokens", "loss_weights", "segment_ids", "positions")
        }
        for i, (prompt, *completions) in enumerate(raw):
            seq = prompt + completions[s]
            f["target_tokens"][i, : len(seq)] = seq
            f["input_tokens"][i, 1 : len(seq)] = seq[:-1]
            f["loss_weights"][i, len(prompt) : len(seq)] = 1
            f["segment_ids"][i, : len(seq)] = 1
            f["positions"][i, : len(seq)] = np.arange(len(seq))
        batch.update({f"{side}_{k}": v for k, v in f.items()})
    return batch, raw


def _config(**dpo_fields):
    config = dpo_config.get_config()
    for k, v in dpo_fields.items():
        config.dpo[k] = v
    return config


def test_pair_log_probs_equal_full_logit_sums():
    params, (batch, raw) = _params(), _pairs()
    pi_c, pi_r = jax.jit(lambda p, b: dpo.pair_log_probs(MODEL, p, b))(params, batch)
    for i, (prompt, c, r) in enumerate(raw):
        np.testing.assert_allclose(float(pi_c[i]), _sequence_log_prob(params, prompt, c), rtol=1e-5)
        np.testing.assert_allclose(float(pi_r[i]), _sequence_log_prob(params, prompt, r), rtol=1e-5)


def test_train_step_is_dpo_of_the_log_probs_and_ignores_padding_pairs():
    policy, ref = _params(0), _params(1)
    batch, raw = _pairs(n=4)
    config = _config(beta=0.2, label_smoothing=0.1)
    tx = optax.sgd(0.05)
    state = ts.TrainState(
        step=jnp.zeros((), jnp.int32), params=policy, opt_state=tx.init(policy), rng=jax.random.PRNGKey(0)
    )
    step = jax.jit(dpo.make_train_step(MODEL, tx, lambda s: 0.05, config))
    # All four pairs, and the first three with a weight-0 copy of pair 0 in the last slot.
    new_all, m_all = step(state, ref, batch, jnp.ones(4))
    padded = {k: np.concatenate([v[:3], v[:1]]) for k, v in batch.items()}
    new_pad, m_pad = step(state, ref, padded, jnp.asarray([1.0, 1.0, 1.0, 0.0]))
    lp = np.asarray(
        [[_sequence_log_prob(p, prompt, x) for prompt, *cr in raw for x in cr] for p in (policy, ref)]
    )
    pi_c, pi_r, ref_c, ref_r = lp[0, 0::2], lp[0, 1::2], lp[1, 0::2], lp[1, 1::2]
    h = (pi_c - ref_c) - (pi_r - ref_r)
    expected = np.mean(0.9 * np.logaddexp(0, -0.2 * h) + 0.1 * np.logaddexp(0, 0.2 * h))
    np.testing.assert_allclose(float(m_all["loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(m_all["rewards/margin"]), np.mean(0.2 * h), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(m_all["logps/chosen"]), pi_c.mean(), rtol=1e-5)
    expected3 = np.mean(0.9 * np.logaddexp(0, -0.2 * h[:3]) + 0.1 * np.logaddexp(0, 0.2 * h[:3]))
    np.testing.assert_allclose(float(m_pad["loss"]), expected3, rtol=1e-5)
    # The padded batch's update is that of the three real pairs alone.
    state3 = ts.TrainState(
        step=jnp.zeros((), jnp.int32), params=policy, opt_state=tx.init(policy), rng=jax.random.PRNGKey(0)
    )
    new3, _ = jax.jit(dpo.make_train_step(MODEL, tx, lambda s: 0.05, config))(
        state3, ref, {k: v[:3] for k, v in batch.items()}, jnp.ones(3)
    )
    for a, b in zip(jax.tree.leaves(new3.params), jax.tree.leaves(new_pad.params), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    assert int(new_all.step) == 1


def test_a_policy_equal_to_its_reference_starts_at_log_2_and_a_step_raises_the_margin():
    params, (batch, _) = _params(3), _pairs(n=4, seed=3)
    config = _config(beta=0.5)
    tx = optax.sgd(0.5)
    state = ts.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(0)
    )
    step = jax.jit(dpo.make_train_step(MODEL, tx, lambda s: 0.5, config))
    state, m0 = step(state, params, batch, jnp.ones(4))
    np.testing.assert_allclose(float(m0["loss"]), np.log(2.0), rtol=1e-6)
    # Policy and reference are the same params, but their log-probs come from two forward passes that XLA may
    # fuse and order differently (seen: 2.4e-7 apart on AVX-512): the margin is 0 up to float32 rounding of
    # sequence log-probs of magnitude ~10-30 (1e-5 is ~100 ulps there). The implicit-reward accuracy counts a
    # pair by the sign of that rounding noise, so only its range is asserted.
    assert abs(float(m0["rewards/margin"])) < 1e-5 and 0.0 <= float(m0["rewards/accuracy"]) <= 1.0
    _, m1 = step(state, params, batch, jnp.ones(4))
    assert float(m1["rewards/margin"]) > 0 and float(m1["loss"]) < np.log(2.0)


def test_best_and_worst_skip_tied_prompts():
    scores = np.asarray([0.1, 0.9, 0.5, 0.2, 3.0, 3.0, 3.0, 3.0, -1.0, 2.0, 2.0, -1.0])
    best, worst, keep = dpo.best_and_worst(scores, 4, 0.0)
    assert best.tolist() == [1, 4, 9] and worst.tolist() == [0, 4, 8] and keep.tolist() == [True, False, True]
    _, _, keep = dpo.best_and_worst(scores, 4, 0.85)
    assert keep.tolist() == [False, False, True]


def test_online_pairs_keep_the_samplers_log_probs():
    """Rollout rows (left-padded prompt ++ completion) re-laid out as right-padded pair rows: the policy's
    sequence log-probs of the completions are those of the rollouts, and best / worst go to chosen / rejected."""
    params = _params(4)
    prompt_tokens = np.asarray([[0, 0, 7, 8, 9], [0, 11, 12, 13, 14]], np.int32)
    start = np.asarray([2, 1], np.int32)

    sp = sampling.SamplingParams(max_new_tokens=6, temperature=1.0, eos_ids=(1,))
    ro = rollouts.sample(
        MODEL, params, jnp.asarray(prompt_tokens), jnp.asarray(start), 3, jax.random.PRNGKey(5), sp
    )
    sums, _, _ = rollouts.sequence_log_probs(MODEL, params, ro)
    host = jax.device_get(ro)
    scores = np.asarray([0.3, 0.9, 0.1, 0.5, 0.5, 0.5])  # prompt 0: best 1, worst 2; prompt 1: tied
    pairs, stats = dpo.online_pairs(host, scores, 3, 16, 0.0)
    assert stats["pairs"] == 1 and stats["prompts_tied"] == 1
    np.testing.assert_allclose([stats["score_best"], stats["score_worst"]], [0.9, 0.1])
    pi_c, pi_r = dpo.pair_log_probs(MODEL, params, {k: jnp.asarray(v) for k, v in pairs.items()})
    np.testing.assert_allclose(float(pi_c[0]), float(sums[1]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(pi_r[0]), float(sums[2]), rtol=1e-5, atol=1e-5)
    n = 3 + int(host.lengths[1])
    assert pairs["chosen_target_tokens"][0, :3].tolist() == [7, 8, 9]
    assert pairs["chosen_loss_weights"][0].tolist() == [0] * 3 + [1] * int(host.lengths[1]) + [0] * (16 - n)
    assert pairs["chosen_positions"][0, :n].tolist() == list(range(n))
    with pytest.raises(ValueError, match="does not fit pair rows of 8"):
        dpo.online_pairs(host, scores, 3, 8, 0.0)


def test_pair_batches_cover_every_pair_each_epoch_and_pad_with_weight_zero():
    pairs = {
        "chosen_target_tokens": np.arange(10)[:, None],
        "rejected_target_tokens": -np.arange(10)[:, None],
    }
    out = list(dpo.pair_batches(pairs, 4, 2, np.random.default_rng(0)))
    assert len(out) == 6
    for epoch in (out[:3], out[3:]):
        seen = np.concatenate([b["chosen_target_tokens"][:, 0][w > 0] for b, w in epoch])
        assert sorted(seen.tolist()) == list(range(10))
        assert [int(w.sum()) for _, w in epoch] == [4, 4, 2]
    for b, _ in out:
        assert (b["rejected_target_tokens"] == -b["chosen_target_tokens"]).all()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"beta": 0.0}, "config.dpo.beta: must be > 0"),
        ({"reference": "last"}, "config.dpo.reference: 'last' is not one of iteration_start, sft"),
        ({"loss_type": "hinge"}, "config.dpo.loss_type"),
        ({"samples_per_prompt": 1}, "config.dpo.samples_per_prompt: must be >= 2"),
        ({"offline_steps": 0, "iterations": 0}, "nothing to train"),
        ({"reward_model": ""}, "config.dpo.reward_model: empty"),
        ({"verifiable_reward": "nope"}, "config.dpo.verifiable_reward: unknown reward function 'nope'"),
        ({"max_new_tokens": 60}, "config.dpo.max_new_tokens: prompt_len 48 \\+ max_new_tokens 60 must fit"),
        ({"temperature": 0.0}, "config.dpo.temperature: must be > 0"),
        ({"missing_eos_penalty": -1.0}, "config.dpo.missing_eos_penalty: must be >= 0"),
    ],
)
def test_bad_config_values_name_the_field(fields, message):
    with pytest.raises(defaults.ConfigError, match=message):
        defaults.validate(_config(**fields), ["dpo"])


# ---- end to end -------------------------------------------------------------------------------------------

DPO_ARGS = [
    "--config.data.seq_len=64", "--config.dpo.prompt_len=32", "--config.dpo.max_new_tokens=16",
    "--config.dpo.offline_steps=12", "--config.dpo.iterations=3", "--config.dpo.prompts_per_iteration=32",
    "--config.dpo.samples_per_prompt=4", "--config.dpo.epochs_per_iteration=2", "--config.dpo.eval_prompts=32",
    "--config.dpo.eval_samples=2", "--config.train.global_batch_size=8", "--config.checkpoint.every=4",
    "--config.mesh.shape=(2,2,2)", "--config.optimizer.learning_rate=3e-3",
    # The tiny SFT policy almost never stops by itself: no EOS penalty, so the ranking is the reward model's.
    "--config.dpo.missing_eos_penalty=0",
    "--config.checkpoint.keep=3",  # the fault tests damage two checkpoints and resume from the third
]  # fmt: skip


@pytest.fixture(scope="module")
def sft_and_rm(sft_run, tiny_reward_model):
    return sft_run, tiny_reward_model


def _args(sft_and_rm):
    sft_run, rm_run = sft_and_rm
    return [*DPO_ARGS, f"--config.checkpoint.init_from={sft_run}", f"--config.dpo.reward_model={rm_run}"]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, data_dir, sft_and_rm):
    workdir = tmp_path_factory.mktemp("dpo")
    proc = runs.run("configs/dpo.py", workdir, data_dir, *_args(sft_and_rm))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow
def test_offline_then_online_dpo_raises_the_margin_and_the_held_out_reward_model_score(dpo_run):
    workdir, proc = dpo_run
    evals = runs.metric_rows(workdir, "eval")
    stages = [(r["stage"], r["iteration"]) for r in evals]
    assert stages == [("sft", 0), ("offline", 0), ("online", 1), ("online", 2), ("online", 3)]
    assert evals[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the SFT policy against itself
    # Online DPO on the reward model's best / worst raises its held-out score, iteration after iteration,
    # above the SFT policy's and the offline stage's (same prompts and sampling keys at every evaluation).
    scores = [r["score"] for r in evals]
    # (Iteration to iteration the gain is within noise at this size — 1.864 then 1.859 on an AMD Zen 3 — so the
    # claim is the trend: the last online iteration above the first, and above SFT and offline by 0.05.)
    assert scores[4] > scores[2] and scores[4] > max(scores[0], scores[1]) + 0.05, scores
    assert all("verifiable" in r for r in evals)
    train = runs.metric_rows(workdir, "train")
    offline = [r for r in train if r["iteration"] == 0]
    assert len(offline) == 12 and offline[0]["loss"] == pytest.approx(np.log(2), abs=1e-5)
    online = runs.metric_rows(workdir, "online")
    assert [r["iteration"] for r in online] == [1, 2, 3] and all(r["pairs"] > 0 for r in online)
    for it in (1, 2, 3):
        rows = [r for r in train if r["iteration"] == it]
        # Reference = the policy at the iteration's start: every iteration begins at log 2, then its pairs'
        # implicit-reward margin and accuracy grow over the two passes.
        assert rows[0]["loss"] == pytest.approx(np.log(2), abs=1e-4)
        assert np.mean([r["rewards/margin"] for r in rows[-4:]]) > 0.1
        # 8-pair batches: the mean of four moves in steps of 1/32; exactly 0.75 seen on an AMD Zen 3.
        assert np.mean([r["rewards/accuracy"] for r in rows[-4:]]) >= 0.75
    for r in online:
        assert r["score_best"] > r["score_worst"] and r["update_steps"] == 2 * int(np.ceil(r["pairs"] / 8))
    for key in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "grad_norm"):
        assert key in train[-1], key
    assert (workdir / "dpo_progress.png").stat().st_size > 1000
    for what in (
        "memory per device: policy state",
        "memory per device: reward model",
        "held-out",
        "generation",
    ):
        assert what in proc.stderr, what


@pytest.mark.slow
def test_sigterm_then_rerun_resumes_and_matches_the_uninterrupted_run(
    dpo_run, data_dir, sft_and_rm, tmp_path
):
    ref_dir, _ = dpo_run
    workdir = tmp_path / "interrupted"
    args = _args(sft_and_rm)
    proc = runs.start_and_wait(
        "configs/dpo.py",
        workdir,
        data_dir,
        args,
        lambda w: any(r["step"] >= 6 for r in runs.metric_rows(w, "train")),
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "preempted" in err, err[-2000:]
    stopped = max(r["step"] for r in runs.metric_rows(workdir, "train"))
    assert stopped < 12, "SIGTERM came after the offline stage; the test proves less than it says"

    proc2 = runs.run("configs/dpo.py", workdir, data_dir, *args)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert "resumed the policy from" in proc2.stderr
    train, reference = runs.metric_rows(workdir, "train"), runs.metric_rows(ref_dir, "train")
    assert [r["step"] for r in train] == [
        r["step"] for r in reference
    ]  # each step once: resumed, not restarted
    for a, b in zip(train, reference, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6, err_msg=f"step {a['step']}")
    evals, ref_evals = runs.metric_rows(workdir, "eval"), runs.metric_rows(ref_dir, "eval")
    assert [(r["stage"], r["iteration"]) for r in evals] == [(r["stage"], r["iteration"]) for r in ref_evals]
    np.testing.assert_allclose(
        [r["score"] for r in evals], [r["score"] for r in ref_evals], rtol=1e-5, atol=1e-6
    )


# ---- fault injection: damaged checkpoints, a full disk, a kill during an async save ----------------------------


def _losses_by_row(rows: dict) -> dict:
    return {key: row["loss"] for key, row in rows.items() if row.get("loss") is not None}


@pytest.mark.faults
@pytest.mark.slow
def test_damaged_checkpoints_fall_back_and_the_rerun_matches(dpo_run, data_dir, sft_and_rm, tmp_path):
    """The two newest checkpoints (online iterations 14 and 15) damaged: the rerun warns naming each, resumes
    from 13 and redoes iterations 14-15 exactly as the uninterrupted run did them."""
    ref_dir, _ = dpo_run
    workdir = tmp_path / "damaged"
    shutil.copytree(ref_dir, workdir)
    assert faults.step_dirs(workdir / "checkpoints") == [13, 14, 15]
    faults.overwrite_middle(workdir / "checkpoints" / "15")
    faults.garbage_metadata(workdir / "checkpoints" / "14")
    before = (workdir / "metrics.jsonl").read_text()
    proc = runs.run("configs/dpo.py", workdir, data_dir, *_args(sft_and_rm))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in (15, 14):
        assert re.search(rf"checkpoint step {step} in \S+ (fails verification: tensor \S+|does not load|holds non-finite)",
                         proc.stderr), proc.stderr[-3000:]  # fmt: skip
    assert "step 13" in proc.stderr and "resumed the policy from" in proc.stderr
    rerun = _losses_by_row(runs.appended_rows(workdir, before, kinds=("train", "online")))
    reference = _losses_by_row(runs.appended_rows(ref_dir, "", kinds=("train", "online")))
    assert rerun and set(rerun) <= set(reference), (sorted(rerun), sorted(reference))
    for key, loss in rerun.items():
        np.testing.assert_allclose(loss, reference[key], rtol=1e-5, atol=1e-6, err_msg=str(key))
    assert {"14.corrupt", "15.corrupt"} <= {p.name for p in (workdir / "checkpoints").iterdir()}


@pytest.mark.faults
@pytest.mark.slow
def test_kill_during_an_async_save_then_full_disk_then_rerun_matches(dpo_run, data_dir, sft_and_rm, tmp_path):
    """(1) SIGKILL while step 8 is being saved (asynchronously): step 4 is complete. (2) The rerun resumes from it,
    and the disk fills while step 8 is saved: one line naming the step, exit 2, step 4 intact. (3) With space
    again, the rerun resumes from step 4 and every loss equals the uninterrupted run's."""
    ref_dir, _ = dpo_run
    workdir = tmp_path / "faulty"
    args = [*_args(sft_and_rm), "--config.checkpoint.keep=20"]
    runs.kill_during_an_async_save("configs/dpo.py", workdir, data_dir, *args, min_step=8)
    assert faults.step_dirs(workdir / "checkpoints") == [4]

    proc = runs.run_on_a_full_disk("configs/dpo.py", workdir, data_dir, *args)
    errors = runs.error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert re.match(r"error: checkpoint step 8 could not be written to \S+ \((No space left on device|File too large)\)",
                    errors[0]), errors[0]  # fmt: skip
    assert "Traceback" not in proc.stderr and faults.step_dirs(workdir / "checkpoints") == [4]

    final = runs.run("configs/dpo.py", workdir, data_dir, *args)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resumed the policy from" in final.stderr and "step 4" in final.stderr
    rows = _losses_by_row(runs.appended_rows(workdir, "", kinds=("train", "online")))
    reference = _losses_by_row(runs.appended_rows(ref_dir, "", kinds=("train", "online")))
    assert set(rows) == set(reference), (sorted(rows), sorted(reference))
    for key, loss in rows.items():
        np.testing.assert_allclose(loss, reference[key], rtol=1e-5, atol=1e-6, err_msg=str(key))
