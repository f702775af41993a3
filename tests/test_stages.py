"""aya_jax.stages: the make-like decisions over a chain of stages whose jobs write real files — a first run runs
all, a rerun skips all, a changed setting redoes that stage and the ones reading it (not those before, not a
sibling), an interrupted stage resumes, a subset runs alone, and bad input stops with one line naming the
stage and the artefact, keeping what was made."""

from __future__ import annotations

import json
import pathlib

import pytest

from aya_jax import stages


class Jobs:
    """Stage jobs that write `out.txt` from their inputs' outputs and count their calls."""

    def __init__(self):
        self.calls: list[str] = []
        self.interrupt: str | None = None

    def stage(self, name, inputs=(), **settings):
        def run(folder: pathlib.Path):
            self.calls.append(name)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "partial.txt").write_text("half")
            if self.interrupt == name:
                self.interrupt = None
                raise KeyboardInterrupt  # a kill: the record stays "running"
            text = name + json.dumps(settings, sort_keys=True)
            text += "".join((folder.parent / i / "out.txt").read_text() for i in inputs)
            (folder / "out.txt").write_text(text)
            return {"chars": len(text)}

        return stages.Stage(name, "test", settings, tuple(inputs), "out.txt", run)

    def chain(self, a=1, b=1, c=1, side=1):
        return [self.stage("a", x=a), self.stage("b", ("a",), x=b), self.stage("side", ("a",), x=side),
                self.stage("c", ("b", "side"), x=c)]  # fmt: skip


def actions(outcomes):
    return {o.stage: o.action for o in outcomes}


def test_run_skip_redo_downstream_only_and_resume(tmp_path):
    jobs = Jobs()
    first = stages.run_stages(jobs.chain(), tmp_path)
    assert actions(first) == dict.fromkeys(["a", "b", "side", "c"], "run") and jobs.calls == [
        "a",
        "b",
        "side",
        "c",
    ]
    out = (tmp_path / "c/out.txt").read_text()
    jobs.calls.clear()
    assert actions(stages.run_stages(jobs.chain(), tmp_path)) == dict.fromkeys(
        ["a", "b", "side", "c"], "skip"
    )
    assert jobs.calls == []
    # b changes: b and c are redone, a and side (a sibling) are not; the old b is kept aside
    outcomes = stages.run_stages(jobs.chain(b=2), tmp_path)
    assert actions(outcomes) == {"a": "skip", "b": "redo", "side": "skip", "c": "redo"}
    assert jobs.calls == ["b", "c"]
    reasons = {o.stage: o.reason for o in outcomes}
    assert reasons["b"] == "changed: x" and reasons["c"] == "its input changed: b"
    assert (tmp_path / "b.superseded-1/out.txt").read_text() == 'b{"x": 1}' + 'a{"x": 1}'
    assert (tmp_path / "c/out.txt").read_text() != out
    # back to b=1: redone again (a second folder aside), and c equals the first run's
    jobs.calls.clear()
    stages.run_stages(jobs.chain(), tmp_path)
    assert jobs.calls == ["b", "c"] and (tmp_path / "b.superseded-2").is_dir()
    assert (tmp_path / "c/out.txt").read_text() == out
    # killed in `side` after a change to it: the rerun skips a, resumes side (same folder, its partial file
    # still there), redoes c; the result equals an uninterrupted run's
    jobs.calls.clear()
    jobs.interrupt = "side"
    with pytest.raises(KeyboardInterrupt):
        stages.run_stages(jobs.chain(side=3), tmp_path)
    assert json.loads((tmp_path / "side/stage.json").read_text())["state"] == "running"
    outcomes = stages.run_stages(jobs.chain(side=3), tmp_path)
    assert actions(outcomes) == {"a": "skip", "b": "skip", "side": "resume", "c": "redo"}
    assert (tmp_path / "side/partial.txt").exists() and jobs.calls == ["side", "side", "c"]
    uninterrupted = tmp_path / "clean"
    stages.run_stages(Jobs().chain(side=3), uninterrupted)
    assert (tmp_path / "c/out.txt").read_text() == (uninterrupted / "c/out.txt").read_text()


def test_subsets_forced_redo_and_bad_input_are_one_line(tmp_path):
    jobs = Jobs()
    with pytest.raises(
        stages.StageError, match=r"^pipeline.stages: unknown stage\(s\) \['sft'\] \(stages: a, b"
    ):
        stages.run_stages(jobs.chain(), tmp_path, only=["sft"])
    with pytest.raises(stages.StageError, match=r"^stage b: its input stage\(s\) \['a'\] have not finished"):
        stages.run_stages(jobs.chain(), tmp_path, only=["b"])
    assert jobs.calls == []
    assert actions(stages.run_stages(jobs.chain(), tmp_path, only=["a", "b"])) == {"a": "run", "b": "run"}
    assert actions(stages.run_stages(jobs.chain(), tmp_path, only=["b"], redo=["b"])) == {"b": "redo"}
    # an input artefact deleted: the stage reading it stops, naming itself, the input stage and the file
    stages.run_stages(jobs.chain(), tmp_path)
    kept = (tmp_path / "a/out.txt").read_text()
    (tmp_path / "a/out.txt").unlink()
    with pytest.raises(
        stages.StageError, match=r"^stage a: finished, but its artefact .*a/out.txt is missing"
    ):
        stages.run_stages(jobs.chain(), tmp_path)
    with pytest.raises(
        stages.StageError, match=r"^stage b: the artefact of stage a, .*a/out.txt, is missing"
    ):
        stages.run_stages(jobs.chain(), tmp_path, only=["b"], redo=["b"])
    assert (tmp_path / "c/out.txt").exists()  # nothing already made is lost
    (tmp_path / "a/out.txt").write_text(kept)
    # a damaged record, a job's own error (named with the stage), a job that makes no artefact
    (tmp_path / "b/stage.json").write_text("{")
    with pytest.raises(stages.StageError, match=r"^stage b: .*b/stage.json is damaged"):
        stages.run_stages(jobs.chain(), tmp_path, only=["b"])

    def failing(folder):
        raise ValueError("config.merge.models: no checkpoint at /x")

    bad = [stages.Stage("m", "merge", {}, (), "out.txt", failing)]
    with pytest.raises(
        stages.StageError, match=r"^stage m \(merge\): config.merge.models: no checkpoint at /x$"
    ):
        stages.run_stages(bad, tmp_path / "bad")
    silent = [stages.Stage("s", "sft", {}, (), "checkpoints", lambda folder: None)]
    with pytest.raises(
        stages.StageError, match=r"^stage s \(sft\) ended without its artefact .*s/checkpoints"
    ):
        stages.run_stages(silent, tmp_path / "silent")


def test_changed_keys_name_every_difference():
    old = {"train": {"steps": 10, "lr": 1e-3}, "data": {"task": "x"}}
    new = {"train": {"steps": 20, "lr": 1e-3}, "data": {"task": "x", "languages": ["fr"]}}
    assert stages.changed_keys(old, new) == ["data.languages", "train.steps"]
    assert stages.fingerprint(old, {"a": "1"}) != stages.fingerprint(old, {"a": "2"})
    assert stages.fingerprint(old, {}) == stages.fingerprint(json.loads(json.dumps(old)), {})
