"""The summary box of a rerun that trains nothing (a finished run resumed at its last step): DPO, RLOO and the
reward model read the run's figures from its metrics.jsonl (non-finite values there are null), or say that
nothing was trained, never placeholders like "- -> -"."""

import math

from aya_jax import metrics
from aya_jax.training import dpo, loop, reward, rloo


def _summary(start, end, evaluations=(), first=None, last=None, preempted=False):
    return loop.RunSummary(
        title="t", workdir="w", start_step=start, end_step=end, preempted=preempted, checkpoint_dir="c",
        metrics_jsonl="m", tensorboard_dir="", first=dict(first or {}), last=dict(last or {}),
        evaluations=list(evaluations),
    )  # fmt: skip


def _history(tmp_path, rows):
    """metrics.jsonl as the run's own writer wrote it: rows of (step, kind, scalars)."""
    writer = metrics.MetricWriter(tmp_path, tensorboard=False)
    for step, kind, scalars in rows:
        writer.write(step, scalars, kind=kind)
    writer.close()
    return writer.jsonl_path


NOTHING = "  nothing trained in this run (resumed at step 4, already finished)"
FROM_HISTORY = "; the run's figures from its metrics.jsonl:"


def test_rloo_rerun_reads_the_run_history(tmp_path):
    jsonl = _history(tmp_path, [
        (0, "eval", {"reward": 0.1, "reward_greedy": 0.2}),
        (2, "train", {"reward": 0.3, "kl": 0.01}),
        (4, "train", {"reward": 0.5, "kl": 0.05}),
        (4, "eval", {"reward": 0.3, "reward_greedy": math.nan}),
    ])  # fmt: skip
    assert rloo.summary_lines(_summary(4, 4), jsonl) == [
        NOTHING + FROM_HISTORY,
        "  held-out reward (sampled)  0.1000 -> 0.3000",
        "  held-out reward (greedy)   0.2000 -> nan",
        "  KL to the reference        0.0500 (last step)",
    ]
    # No history (metrics.jsonl off, or the run logged nothing): one plain line.
    assert rloo.summary_lines(_summary(4, 4), tmp_path / "none.jsonl") == [NOTHING]
    # A run that trained reports its own figures, as before.
    own = _summary(0, 4, [{"reward": 1.0, "reward_greedy": 2.0}, {"reward": 3.0, "reward_greedy": 4.0}],
                   last={"kl": 0.5})  # fmt: skip
    assert rloo.summary_lines(own, jsonl) == [
        "  held-out reward (sampled)  1.0000 -> 3.0000",
        "  held-out reward (greedy)   2.0000 -> 4.0000",
        "  KL to the reference        0.5000 (last step)",
    ]


def test_dpo_rerun_shows_the_run_evaluations(tmp_path):
    row = {"score": 0.5, "kl": 0.0, "completion_length": 12.0}
    jsonl = _history(tmp_path, [
        (0, "eval", {"stage": "sft", "iteration": 0, **row}),
        (2, "train", {"loss": 0.7}),
        (2, "eval", {"stage": "offline", "iteration": 0, **row, "score": 0.6, "kl": 0.1}),
        (4, "eval", {"stage": "online", "iteration": 2, **row, "score": 0.9, "kl": math.inf}),
        (4, "eval", {"stage": "online", "iteration": 2, **row, "score": 0.8, "kl": math.inf}),  # a redone step
    ])  # fmt: skip
    assert dpo.summary_lines(_summary(4, 4), jsonl, "none") == [
        NOTHING + "; the run's evaluations from its metrics.jsonl:",
        "  held-out       RM score        none       KL  length",
        "  SFT              0.5000                0.000    12.0",
        "  offline          0.6000                0.100    12.0",
        "  iter 2           0.8000                  nan    12.0",
    ]
    assert dpo.summary_lines(_summary(4, 4), tmp_path / "none.jsonl", "none") == [NOTHING]
    # Preempted before its first step: not "already finished", and no table without evaluations.
    assert dpo.summary_lines(_summary(2, 2, preempted=True), tmp_path / "none.jsonl", "none") == []


def test_reward_rerun_reads_the_run_history(tmp_path):
    evaluation = {"loss": 0.6, "accuracy": 0.75, "pairs": 16.0, "accuracy/fra": 1.0, "pairs/fra": 4.0}
    jsonl = _history(tmp_path, [
        (0, "eval", {**evaluation, "accuracy": 0.5}),
        (1, "train", {"loss": 0.69}),
        (4, "train", {"loss": 0.65}),
        (4, "eval", evaluation),
    ])  # fmt: skip
    lines, last = reward.summary_figures(_summary(4, 4), jsonl)
    assert lines == [NOTHING + FROM_HISTORY, "  train loss    0.6900 -> 0.6500"]
    assert last == {"step": 4, "kind": "eval", **evaluation}
    assert reward.summary_figures(_summary(4, 4), tmp_path / "none.jsonl") == ([NOTHING], {})
