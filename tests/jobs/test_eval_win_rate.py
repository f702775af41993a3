"""The eval_win_rate job end to end through main, on CPU: two checkpoints of one recipe (the session's tiny SFT run
at 120 steps and the same recipe stopped at 40) and GPT-4's published Arena-Hard answers, on real multilingual
prompts (HPLT OASST test prompts, Arena-Hard-Auto v0.1 questions); judged (i) by a reward model of the same run,
(ii) over HTTP by the 120-step model served by the `serve` job — killed midway and rerun, no judgment requested
twice — and (iii) by the same model in process; bad input in one line."""

import ast
import json
import re

import pytest
import runs  # the helper module beside this file

pytestmark = pytest.mark.slow

SFT = ("--config.data.seq_len=64",)  # runs.tiny_sft's data flags
LANGUAGES = ("fr", "ru", "zh")  # HPLT languages (not hi: its published file has a malformed line)
PER_LANGUAGE = 3


@pytest.fixture(scope="module")
def setup(shared_data, sft_run, early_sft_run, tiny_reward_model):
    prompts = shared_data / "instruct/hplt_oasst_test_prompts"
    arena = shared_data / "eval/arena_hard"
    questions = (*(f"{lang}={prompts / f'test_{lang}.jsonl'}" for lang in LANGUAGES),
                 f"en={arena / 'arena-hard-v0.1_question.jsonl'}")  # fmt: skip
    common = (
        *SFT, f"--config.eval.questions={questions!r}", f"--config.eval.max_items={PER_LANGUAGE}",
        "--config.eval.max_new_tokens=24", "--config.eval.batch_size=4", "--config.eval.rounds=200",
        "--config.eval.bt_rounds=20", "--config.eval.elo_permutations=10",
    )  # fmt: skip
    models = (f"--config.eval.models=('late={sft_run}', 'early={early_sft_run}', "
              f"'gpt-4-0314={arena / 'arena-hard-v0.1_answer_gpt-4-0314.jsonl'}')",
              "--config.eval.baseline=early")  # fmt: skip
    # tie 0: every score difference of this barely trained reward model is a verdict (the default 0.1 would
    # call nearly all of them ties)
    reward = ("--config.eval.judge=reward", f"--config.eval.reward_model={tiny_reward_model}",
              "--config.eval.prompt_len=32", "--config.eval.judge_tie=0", "--config.eval.judge_strong=0.5")  # fmt: skip
    return common, models, reward


def setup_questions(args) -> tuple[str, ...]:
    """The entries of the --config.eval.questions flag among `args`."""
    flag = next(a for a in args if a.startswith("--config.eval.questions="))
    return ast.literal_eval(flag.split("=", 1)[1])


def _results(workdir):
    return json.loads((workdir / "win_rate" / "results.json").read_text())


N = (len(LANGUAGES) + 1) * PER_LANGUAGE  # questions


def test_reward_judged_win_rates_of_two_checkpoints_and_published_answers(setup, data_dir, tmp_path):
    common, models, reward = setup
    workdir = tmp_path / "reward"
    style = "--config.eval.style=('length', 'markdown')"
    proc = runs.run("configs/eval_win_rate.py", workdir, data_dir, *common, *models, *reward, style)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(workdir)
    assert results["questions"] == N and results["languages"] == ["en", *sorted(LANGUAGES)]
    assert (
        results["answers"]["late"]
        == results["answers"]["early"]
        == {"read": 0, "generated": N, "prompts_cut": 0}
    )
    assert results["answers"]["gpt-4-0314"] == {"read": PER_LANGUAGE, "generated": 0}
    assert results["missing_answers"] == {"late": 0, "early": 0, "gpt-4-0314": N - PER_LANGUAGE}
    # Both games of every question each model shares with the baseline, all with a verdict (a reward judge).
    games = 2 * N + 2 * PER_LANGUAGE
    assert results["games"] == results["judged_now"] == games and results["unparsed"] == 0
    late = results["win_rates"]["late"]
    assert set(late) == {"en", *LANGUAGES, "overall"} and late["overall"]["games"] == 2 * N
    overall = late["overall"]["win_rate"]
    assert 0 <= overall["low"] <= overall["mean"] <= overall["high"] <= 1 and overall["n"] == N
    assert results["win_rates"]["gpt-4-0314"]["en"]["games"] == 2 * PER_LANGUAGE
    assert set(results["bradley_terry"]["ratings"]) == {"late", "early", "gpt-4-0314"}
    assert results["bradley_terry_style"]["features"] == ["length", "markdown"]
    answers = [
        json.loads(line) for line in (workdir / "win_rate/answers/late.jsonl").read_text().splitlines()
    ]
    assert len(answers) == N and {a["language"] for a in answers} == {"en", *LANGUAGES}
    for name in ("results.md", "win_rate_by_language.png", "elo_by_k.png", "judgments.jsonl"):
        assert (workdir / "win_rate" / name).stat().st_size > 100, name
    # The headline: which checkpoint wins, with its interval, whatever it is.
    assert re.search(r"win rate: win rate vs early: .*late \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", proc.stdout)

    again = runs.run("configs/eval_win_rate.py", workdir, data_dir, *common, *models, *reward, style)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = _results(workdir)
    assert rerun["judged_now"] == 0 and rerun["answers"]["late"] == {"read": N, "generated": 0}
    assert rerun["win_rates"] == results["win_rates"]


def test_a_served_judge_over_http_killed_midway_then_rerun(setup, data_dir, tmp_path, sft_run):
    """The 120-step model behind the `serve` job as the judge: most of its verdicts do not parse — counted and
    reported, the run finishes. Killed after some judgments, the rerun asks only for the rest."""
    common, models, _ = setup
    # A row holds 2048 tokens (configs/serve.py's 512 is too few: the judge's prompt alone has ~1,000).
    with runs.served(sft_run, tmp_path / "serve", data_dir, "judge", 2048, *SFT) as url:
        endpoint = ("--config.eval.judge=endpoint", f"--config.eval.judge_base_url={url}",
                    "--config.eval.judge_model=judge", "--config.eval.judge_max_tokens=12",
                    "--config.eval.judge_concurrency=2")  # fmt: skip
        # The HPLT prompts only: a judge prompt around a long Arena-Hard question does not fit this model's
        # 2048 positions (the server answers 400 context_length_exceeded, and the run stops naming the question).
        hplt = [a for a in common if not a.startswith("--config.eval.questions")]
        hplt.append(
            "--config.eval.questions="
            + repr(tuple(q for q in setup_questions(common) if not q.startswith("en=")))
        )
        common = hplt
        workdir = tmp_path / "http"
        judgments = workdir / "win_rate" / "judgments.jsonl"

        def some_judged(_):
            return judgments.exists() and len(judgments.read_text().splitlines()) >= 4

        runs.kill_when(
            "configs/eval_win_rate.py", workdir, data_dir, [*common, *models, *endpoint], some_judged
        )
        kept = {json.loads(line)["key"] for line in judgments.read_text().splitlines() if line.endswith("}")}
        rerun = runs.run("configs/eval_win_rate.py", workdir, data_dir, *common, *models, *endpoint)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    results = _results(workdir)
    games = 2 * len(LANGUAGES) * PER_LANGUAGE  # late vs early only: the GPT-4 answers are English
    assert results["games"] == games and results["parsed"] + results["unparsed"] == games
    assert results["judged_now"] == games - len(kept) and 4 <= len(kept) < games
    keys = [json.loads(line)["key"] for line in judgments.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == games  # no judgment requested twice
    assert results["judge"] == f"judge@{url}"


def test_an_in_process_model_judge(setup, data_dir, tmp_path, sft_run):
    """The 120-step model as an in-process judge: its judgments are written and counted, parsed or not."""
    common, models, _ = setup
    workdir = tmp_path / "model_judge"
    proc = runs.run(
        "configs/eval_win_rate.py", workdir, data_dir, *common, *models, "--config.eval.max_items=1",
        "--config.eval.judge=model", f"--config.eval.judge_checkpoint={sft_run}", "--config.eval.judge_max_tokens=12",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(workdir)
    games = 2 * (len(LANGUAGES) + 1) + 2 * 1
    assert results["games"] == games and results["judge"] == f"model:{sft_run}"
    assert results["parsed"] + results["unparsed"] == games
    assert len((workdir / "win_rate/judgments.jsonl").read_text().splitlines()) == games


def test_killed_while_answering_the_rerun_generates_only_what_is_missing(setup, data_dir, tmp_path):
    common, models, reward = setup
    workdir = tmp_path / "killed"
    answers = workdir / "win_rate/answers/late.jsonl"

    def one_batch_written(_):
        return answers.exists() and len(answers.read_text().splitlines()) >= 4

    runs.kill_when(
        "configs/eval_win_rate.py", workdir, data_dir, [*common, *models, *reward], one_batch_written
    )
    kept = len(answers.read_text().splitlines())
    assert 4 <= kept < N
    rerun = runs.run("configs/eval_win_rate.py", workdir, data_dir, *common, *models, *reward)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    results = _results(workdir)
    assert results["answers"]["late"]["generated"] == N - kept
    keys = [json.loads(line)["key"] for line in answers.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == N  # none generated twice


def test_bad_input_is_one_line(setup, data_dir, tmp_path):
    common, models, reward = setup
    questions = next(a for a in common if a.startswith("--config.eval.questions"))
    common = [a for a in common if a != questions]
    # (message, the flags that replace setup's questions / models / judge flags)
    cases = [
        ("config.eval.models: late: no checkpoint or answers file at /nowhere",
         (questions, "--config.eval.models=('late=/nowhere', 'early=x')", "--config.eval.baseline=early", *reward)),
        ("config.eval.baseline: 'gpt' is none of the models",
         (questions, models[0], "--config.eval.baseline=gpt", *reward)),
        ("config.eval.judge_checkpoint: judge 'model' needs it", (questions, *models, "--config.eval.judge=model")),
        ("config.eval.style: unknown feature(s) ['bold']",
         (questions, *models, *reward, "--config.eval.style=('bold',)")),
        ("config.eval.questions: no questions file or folder at /nowhere",
         ("--config.eval.questions=('/nowhere',)", *models, *reward)),
    ]  # fmt: skip
    for i, (message, extra) in enumerate(cases):
        workdir = tmp_path / str(i)
        proc = runs.run("configs/eval_win_rate.py", workdir, data_dir, *common, *extra)
        errors = runs.error_lines(proc.stderr)
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
        assert message in errors[0], errors[0]
        assert not (workdir / "win_rate").exists()
