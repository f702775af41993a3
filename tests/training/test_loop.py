"""The one loop's non-finite guard, with a real Run (mesh, orbax checkpointer, metric writer) around an objective
whose losses are scripted: `stop` raises before anything of the bad iteration is logged or saved, `skip` counts
and goes on, too many in a row stop; metrics.jsonl stays strict JSON. And the in-graph half of the guard:
TrainState.apply_gradients drops an update whose gradients are not finite."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aya_jax import checkpoint
from aya_jax.training import loop
from aya_jax.training import state as ts
from configs import common

SECTIONS = ("mesh", "train", "checkpoint", "metrics")


class Scripted(loop.Objective):
    """Adds 1 to a counter each iteration; the loss of iteration i (1-based) is `losses.get(i, 1.0)`."""

    title = "scripted"

    def __init__(self, total: int, losses: dict[int, float]):
        self.total, self.losses = total, losses

    def step(self, state, iteration):
        loss = self.losses.get(iteration + 1, 1.0)
        return {"w": state["w"] + 1.0}, loop.Step({"loss": jnp.float32(loss), "grad_norm": jnp.float32(0.5)})


def _run(tmp_path, total, losses, **train):
    config = common.base_config()
    config.job = "sft"
    config.train.update(steps=total, log_every=1, progress_bar=False, plot=False, **train)
    config.checkpoint.update(every=2, async_save=False)
    config.metrics.tensorboard = False
    run = loop.Run.start(config, tmp_path, SECTIONS)
    return run, Scripted(total, losses)


def _rows(tmp_path):
    def strict(token):
        raise AssertionError(f"metrics.jsonl holds the non-JSON token {token}")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line, parse_constant=strict) for line in lines]


def test_stop_raises_naming_the_step_and_saves_nothing_of_it(tmp_path):
    run, objective = _run(tmp_path, 8, {5: math.nan})
    with pytest.raises(
        loop.NonFiniteError, match=r"^step 5: non-finite loss nan; stopped without saving .*step 4\)"
    ):
        loop.train(run, objective, {"w": jnp.zeros(3)}, 0)
    run.close()
    assert checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4]
    assert [r["step"] for r in _rows(tmp_path) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_skip_counts_and_goes_on_with_strict_json_metrics(tmp_path):
    run, objective = _run(tmp_path, 8, {3: math.inf, 6: math.nan}, nonfinite="skip")
    summary = loop.train(run, objective, {"w": jnp.zeros(3)}, 0)
    assert summary.end_step == 8 and summary.results["skipped_updates"] == 2
    assert any("skipped       2 update(s)" in line for line in summary.lines)
    rows = {r["step"]: r for r in _rows(tmp_path) if r["kind"] == "train"}
    assert rows[3]["loss"] is None and rows[3]["nonfinite"] == ["loss"]
    assert rows[6]["loss"] is None and rows[4]["loss"] == 1.0 and "nonfinite" not in rows[4]
    assert checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step() == 8


def test_skip_stops_after_max_skipped_in_a_row(tmp_path):
    run, objective = _run(
        tmp_path, 10, {4: math.nan, 5: math.nan, 6: math.nan}, nonfinite="skip", max_skipped=2
    )
    with pytest.raises(loop.NonFiniteError, match=r"^step 6: non-finite loss nan for 3 steps in a row"):
        loop.train(run, objective, {"w": jnp.zeros(3)}, 0)
    run.close()
    assert checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4]


def test_apply_gradients_drops_a_non_finite_update():
    params = {"w": jnp.ones((3,)), "b": jnp.zeros((2,))}
    tx = optax.adamw(0.1)
    state = ts.TrainState(
        step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(0)
    )
    bad = {"w": jnp.array([1.0, np.nan, 0.0]), "b": jnp.ones((2,))}
    after, norm = jax.jit(lambda s, g: s.apply_gradients(g, tx))(state, bad)
    assert not np.isfinite(float(norm)) and int(after.step) == 1
    for x, y in zip(jax.tree.leaves((after.params, after.opt_state)), jax.tree.leaves((params, state.opt_state)),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    good, _ = jax.jit(lambda s, g: s.apply_gradients(g, tx))(state, jax.tree.map(jnp.ones_like, params))
    assert not np.allclose(np.asarray(good.params["w"]), 1.0)
