"""The aya_expanse pipeline end to end through main, shrunk (a few steps per stage, two teachers, two prompts per
language): every stage runs, a rerun skips every one; killed inside the SFT stage, the rerun skips the stages
before it, resumes it from its checkpoint and ends with the uninterrupted run's figures; a changed SFT setting
redoes that stage and those after it, not those before; bad input stops with one line naming the stage and the
artefact, and keeps what was made. The reward model is scored on a small M-RewardBench folder (the published
layout) as the pipeline's own stage."""

import itertools
import json

import pytest
import runs  # the helper module beside this file

from aya_jax.data import default_data
from aya_jax.evaluation import m_rewardbench as mrb

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


# M-RewardBench configurations of the test's pairs (FLORES names, as the benchmark's folders are named)
BENCH = {"fra": "fra_Latn", "ara": "arb_Arab"}  # the rows' language_code -> configuration
PAIRS_PER_CONFIG = 4


def _m_rewardbench(root):
    """M-RewardBench pairs from the embedded CLDR rows: a prompt, its own answer (chosen) and the answer to
    another prompt of the same language (rejected), in one RewardBench subset."""
    by_code = {code: [] for code in BENCH}
    for row in itertools.islice(default_data.cldr_rows(), 20_000):
        found = by_code.get(row["language_code"])
        if found is not None and len(found) < PAIRS_PER_CONFIG + 1:
            found.append(row)
    for code, config in BENCH.items():
        found = by_code[code]
        assert len(found) == PAIRS_PER_CONFIG + 1, (code, len(found))
        pairs = [
            {"id": f"{code}-{i}", "language": config, "prompt": r["inputs"], "chosen": r["targets"],
             "rejected": found[i + 1]["targets"], "chosen_model": "", "rejected_model": "", "subset": "alpacaeval-easy"}
            for i, r in enumerate(found[:-1])
        ]  # fmt: skip
        mrb.write_jsonl(root / config / "test.jsonl", pairs)
    return root


def _results(workdir):
    return json.loads((workdir / "report/results.json").read_text())


def _actions(workdir):
    return {s["stage"]: s["action"] for s in _results(workdir)["stages"]}


def test_stages_skip_resume_and_redo_like_make(tmp_path, data_dir, global_mmlu_dir):
    bench = _m_rewardbench(tmp_path / "m_rewardbench")
    args = (*ARGS, f"--config.pipeline.global_mmlu={global_mmlu_dir}", f"--config.pipeline.m_rewardbench={bench}")  # fmt: skip
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
    # the pipeline's reward model, scored on every pair of the folder
    scored = json.loads((whole / "m_rewardbench/m_rewardbench/results.json").read_text())
    assert scored["reward"] == str(whole / "reward") and scored["n"] == PAIRS_PER_CONFIG * len(BENCH)
    assert set(scored["languages"]) == set(BENCH.values())
    assert reference["reward_model"]["source"] == "M-RewardBench average"
    assert reference["reward_model"]["average"] == scored["average"]
    assert 0 <= scored["average"]["mean"] <= 1
    assert set(_actions(whole).values()) == {"run"} and (whole / "report.md").exists()
    assert (whole / "report/stages.png").stat().st_size > 0
    proc = runs.run(CONFIG, whole, data_dir, *args, devices=DEVICES)
    assert proc.returncode == 0 and set(_actions(whole).values()) == {"skip"}, proc.stderr[-3000:]
    assert _results(whole)["models"] == reference["models"]

    # Killed inside sft_all after its first checkpoint: the rerun skips what came before, resumes sft_all and
    # ends with the same figures (fp32, the same seeds).
    killed = tmp_path / "killed"
    runs.kill_when(CONFIG, killed, data_dir, [*args, "--config.train.progress_bar=False"],
                   lambda w: (w / "sft_all/checkpoints/4").is_dir(), timeout=900, devices=DEVICES)  # fmt: skip
    assert json.loads((killed / "sft_all/stage.json").read_text())["state"] == "running"
    proc = runs.run(CONFIG, killed, data_dir, *args, devices=DEVICES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    actions = _actions(killed)
    assert [actions[s] for s in BEFORE_SFT] == ["skip"] * len(BEFORE_SFT) and actions["sft_all"] == "resume"
    assert actions["m_rewardbench"] == "run"  # it comes last: the kill came before it
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
    kept = [*BEFORE_SFT, "eval_base", "global_mmlu_base", "m_rewardbench"]
    assert [actions[s] for s in kept] == ["skip"] * len(kept)
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
