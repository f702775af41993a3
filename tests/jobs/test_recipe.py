"""The aya_expanse pipeline end to end through main, shrunk (a few steps per stage, two teachers, two prompts per
language): every stage runs, a rerun skips every one; killed inside the SFT stage, the rerun skips the stages
before it, resumes it from its checkpoint and ends with the uninterrupted run's figures; a changed SFT setting
redoes that stage and those after it, not those before; bad input stops with one line naming the stage and the
artefact, and keeps what was made."""

import json
import signal

import pytest
import runs  # the helper module beside this file

pytestmark = pytest.mark.slow

CONFIG = "configs/aya_expanse.py"
DEVICES = 2  # the miniature's mesh: a dozen jobs in one process, each a few steps
ARGS = (
    "--config.pipeline.base_steps=16", "--config.pipeline.teacher_steps=8", "--config.pipeline.reward_steps=8",
    "--config.pipeline.sft_steps=16", "--config.pipeline.dpo_offline_steps=2", "--config.pipeline.dpo_iterations=1",
    "--config.pipeline.pool_per_language=2", "--config.pipeline.eval_rows_per_language=2",
    "--config.pipeline.teachers=('euro=@eng,fra', 'cjk=@zho,jpn')", "--config.pipeline.sft_runs=('all=*',)",
    "--config.dpo.prompts_per_iteration=8", "--config.dpo.eval_prompts=8", "--config.checkpoint.every=4",
)  # fmt: skip
BEFORE_SFT = ["base", "teacher_euro", "teacher_cjk", "reward", "arbitrage"]
AFTER_SFT = ["merge_sft", "dpo_offline", "dpo_online", "merge_final"]


def _results(workdir):
    return json.loads((workdir / "report/results.json").read_text())


def _actions(workdir):
    return {s["stage"]: s["action"] for s in _results(workdir)["stages"]}


def test_stages_skip_resume_and_redo_like_make(tmp_path, data_dir, global_mmlu_dir):
    args = (*ARGS, f"--config.pipeline.global_mmlu={global_mmlu_dir}")
    whole = tmp_path / "whole"
    proc = runs.run(CONFIG, whole, data_dir, *args, devices=DEVICES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = _results(whole)
    models = ["base", "sft_all", "merge_sft", "dpo_offline", "dpo_online", "merge_final"]
    assert list(reference["models"]) == models
    assert all(m["loss"]["nll"]["low"] <= m["loss"]["nll"]["mean"] <= m["loss"]["nll"]["high"]
               for m in reference["models"].values())  # fmt: skip
    for name, m in reference["models"].items():
        assert all(
            m["global_mmlu"][k]["n"] > 0 and 0 <= m["global_mmlu"][k]["mean"] <= 1 for k in ("CS", "CA")
        )
        if name != "base":  # judged against the base and against the model it was made from
            assert 0 <= m["win_rate"]["vs_baseline"]["win_rate"]["mean"] <= 1
            assert 0 <= m["win_rate"]["vs_previous"]["win_rate"]["mean"] <= 1
    previous = {m: reference["models"][m]["win_rate"]["vs_previous"]["opponent"] for m in models[1:]}
    assert previous == {"sft_all": "base", "merge_sft": "sft_all", "dpo_offline": "merge_sft",
                        "dpo_online": "dpo_offline", "merge_final": "dpo_online"}  # fmt: skip
    assert 0 <= reference["reward_model"]["accuracy"] <= 1
    assert set(_actions(whole).values()) == {"run"} and (whole / "report.md").exists()
    assert (whole / "report/stages.png").stat().st_size > 0
    proc = runs.run(CONFIG, whole, data_dir, *args, devices=DEVICES)
    assert proc.returncode == 0 and set(_actions(whole).values()) == {"skip"}, proc.stderr[-3000:]
    assert _results(whole)["models"] == reference["models"]

    # Killed inside sft_all after its first checkpoint: the rerun skips what came before, resumes sft_all and
    # ends with the same figures (fp32, the same seeds).
    killed = tmp_path / "killed"
    proc = runs.start_and_wait(CONFIG, killed, data_dir, [*args, "--config.train.progress_bar=False"],
                               lambda w: (w / "sft_all/checkpoints/4").is_dir(), timeout=900, devices=DEVICES)  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "sft_all/stage.json").read_text())["state"] == "running"
    proc = runs.run(CONFIG, killed, data_dir, *args, devices=DEVICES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    actions = _actions(killed)
    assert [actions[s] for s in BEFORE_SFT] == ["skip"] * len(BEFORE_SFT) and actions["sft_all"] == "resume"
    got = _results(killed)["models"]
    for name in models:
        for field in ("nll", "perplexity"):
            a, b = got[name]["loss"][field], reference["models"][name]["loss"][field]
            assert a["mean"] == pytest.approx(b["mean"], rel=1e-5), (name, field)
        assert got[name]["global_mmlu"] == reference["models"][name]["global_mmlu"], name
        for versus in ("vs_baseline", "vs_previous"):
            a, b = (
                got[name].get("win_rate", {}).get(versus),
                reference["models"][name].get("win_rate", {}).get(versus),
            )
            assert (a is None) == (b is None) and (a is None or a["win_rate"] == b["win_rate"]), (
                name,
                versus,
            )

    # A changed SFT setting: sft_all and everything after it are redone (the old folders kept aside), nothing
    # before it.
    proc = runs.run(CONFIG, killed, data_dir, *args, "--config.pipeline.sft_steps=12", devices=DEVICES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    actions = _actions(killed)
    assert [actions[s] for s in [*BEFORE_SFT, "eval_base", "global_mmlu_base"]] == ["skip"] * 7
    assert [actions[s] for s in ["sft_all", *AFTER_SFT, "eval_merge_final", "win_rates"]] == ["redo"] * 7
    reasons = {s["stage"]: s["reason"] for s in _results(killed)["stages"]}
    assert (
        reasons["sft_all"] == "changed: config.train.steps"
        and "its input changed: sft_all" in reasons["merge_sft"]
    )
    assert (killed / "sft_all.superseded-1/checkpoints").is_dir()


@pytest.mark.bad_input
def test_bad_input_is_one_line_naming_the_stage(tmp_path, data_dir):
    work = tmp_path / "w"
    cases = [
        (("--config.pipeline.stages=('sft',)",), "pipeline.stages: unknown stage(s) ['sft']"),
        (("--config.pipeline.stages=('merge_sft',)",),
         "stage merge_sft: its input stage(s) ['sft_all', 'base'] have not finished"),
        (("--config.pipeline.teachers=('gone=/nowhere/teacher',)", "--config.pipeline.stages=('arbitrage',)",
          "--config.pipeline.reward_model=/nowhere/reward"),
         "stage arbitrage (arbitrage): config.curation.teachers: teacher gone: no checkpoint at /nowhere/teacher"),
        (("--config.pipeline.sft_runs=('x=klingon',)",), "config.pipeline.sft_runs: 'klingon' is not a known language"),
    ]  # fmt: skip
    for extra, message in cases:
        named = {flag.partition("=")[0] for flag in extra}  # a flag given twice keeps its first value
        args = [flag for flag in ARGS if flag.partition("=")[0] not in named]
        proc = runs.run(CONFIG, work, data_dir, *args, *extra, devices=DEVICES)
        lines = runs.error_lines(proc.stderr)
        assert proc.returncode != 0 and len(lines) == 1 and message in lines[0], (
            message,
            proc.stderr[-2000:],
        )
    # A corrupt input artefact: the SFT stage reading the arbitrage rows names the stage and file:line, and the
    # stages already made stay.
    proc = runs.run(CONFIG, work, data_dir, *ARGS, "--config.pipeline.stages=('base', 'teacher_euro', "
                    "'teacher_cjk', 'reward', 'arbitrage')", devices=DEVICES)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = work / "arbitrage/arbitrage/dataset/train-00000-of-00001.jsonl"
    rows.write_text(rows.read_text(encoding="utf-8") + "{torn", encoding="utf-8")
    proc = runs.run(CONFIG, work, data_dir, *ARGS, "--config.pipeline.stages=('sft_all',)", devices=DEVICES)
    lines = runs.error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"error: stage sft_all (sft): {rows}:") and "not valid JSON" in lines[0]
    assert all((work / s / "stage.json").exists() for s in BEFORE_SFT)
    # a finished stage's artefact deleted: named, with the way to make it again
    (work / "arbitrage/arbitrage/dataset/train-00000-of-00001.jsonl").unlink()
    proc = runs.run(
        CONFIG, work, data_dir, *ARGS, "--config.pipeline.stages=('arbitrage', 'sft_all')", devices=DEVICES
    )
    lines = runs.error_lines(proc.stderr)
    assert (
        proc.returncode != 0 and len(lines) == 1 and "stage arbitrage: finished, but its artefact" in lines[0]
    )
