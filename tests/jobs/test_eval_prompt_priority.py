"""The eval_prompt_priority job end to end through main: the session's tiny SFT run (120 steps) against an
earlier, shorter run of the same recipe (40 steps, the same vocabulary) on real French prompts and Arena-Hard
questions; the selected prompts come out in the question layout, and a reward-model judge's tie rates on them are
compared with random subsets. A rerun generates and judges nothing again."""

import json

import pytest
import runs  # the helper module beside this file

from aya_jax.evaluation import arena_hard

pytestmark = pytest.mark.slow

SFT = ("--config.data.seq_len=64",)  # runs.tiny_sft's data flags
PER_LANGUAGE = 10


def test_prompts_ranked_by_divergence_with_tie_rates(tmp_path, data_dir, shared_data, sft_run, early_sft_run,
                                                     tiny_reward_model):  # fmt: skip
    questions = (f"fr={shared_data / 'instruct/hplt_oasst_test_prompts/test_fr.jsonl'}",
                 f"en={shared_data / 'eval/arena_hard/arena-hard-v0.1_question.jsonl'}")  # fmt: skip
    args = (
        *SFT, f"--config.eval.questions={questions!r}", f"--config.eval.max_items={PER_LANGUAGE}",
        f"--config.eval.models=('late={sft_run}', 'early={early_sft_run}')", "--config.eval.max_new_tokens=24",
        "--config.eval.batch_size=8", "--config.eval.rounds=200", "--config.eval.judge=reward",
        f"--config.eval.reward_model={tiny_reward_model}", "--config.eval.prompt_len=32",
    )  # fmt: skip
    proc = runs.run("configs/eval_prompt_priority.py", tmp_path, data_dir, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "prompt_priority"
    results = json.loads((out / "results.json").read_text())
    scores = results["scores"]
    assert results["scored"] == len(scores) == 2 * PER_LANGUAGE - len(results["empty_answers"]) >= 15
    for s in scores:
        assert s["kl"] == pytest.approx((s["kl_a"] + s["kl_b"]) / 2) and s["kl_a"] >= 0 and s["kl_b"] >= 0
        assert s["cross_entropy"] > s["kl"]  # H(p, q) = H(p) + KL(p || q), averaged the same way
    assert max(s["kl"] for s in scores) > 0.01  # 40 and 120 steps of training differ
    selected = results["selected"]
    assert len(selected) == round(0.2 * len(scores))
    cut = min(s["kl"] for s in scores if s["key"] in selected)
    assert cut == results["cut"] and all(s["kl"] <= cut for s in scores if s["key"] not in selected)
    # The selection is a question file the win-rate job reads.
    chosen = arena_hard.read_questions([str(out / "selected.jsonl")])
    assert [q.key for q in chosen] == selected
    ties = results["tie_rates"]
    assert ties["selected"]["prompts"] == len(selected) and ties["random"]["draws"] == 200
    assert 0 <= ties["selected"]["tie_rate"] <= 1 and results["judged_now"] == 2 * len(scores)
    assert (out / "prompt_priority.png").stat().st_size > 1000
    assert "prompt priority: top 20% of" in proc.stdout

    again = runs.run("configs/eval_prompt_priority.py", tmp_path, data_dir, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["judged_now"] == 0 and all(a["generated"] == 0 for a in rerun["answers"].values())
    assert rerun["selected"] == selected
