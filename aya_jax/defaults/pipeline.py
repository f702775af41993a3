"""config.pipeline: the Aya Expanse recipe as one job of stages (aya_jax/jobs/recipe.py, aya_jax/stages.py).

Each stage runs an existing job with the rest of the config as it is (model, data, mesh, train, curation, dpo,
merge, eval ...) and only its wiring set here: which checkpoint it starts from, which data it reads, how many
steps. So the same config runs the CPU miniature (the defaults: a small base trained first, teachers fine-tuned
on language groups of the embedded data) or Aya Expanse 8B on a TPU slice (`base` and `teachers` given,
presets, data and mesh overridden)."""

import ml_collections

from aya_jax.curation import arbitrage
from aya_jax.defaults.checks import Section

JUDGES = ("reward", "endpoint", "model")
MERGE_METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties")


def defaults() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    p.stages = ()  # run only these stages (names as the plan prints them); () = every stage
    p.redo = ()  # stages to redo although nothing they depend on changed
    # The starting point of every SFT run, the reward model and the merges; "" = stage `base` trains one on
    # config.data for base_steps (the miniature)
    p.base = ""
    p.base_steps = 600
    # The teacher pool of the arbitrage stage: config.curation.teachers entries ("name=checkpoint",
    # "name=http://host/v1;model=..."), or "name=@lang,lang,...": stage teacher_<name> fine-tunes the base for
    # teacher_steps on the embedded default data's train rows in those languages (the miniature)
    p.teachers = (
        "euro=@eng,ita,spa,por,nld,deu,fra,ukr",
        "cjk=@zho,jpn,kor",
        "indic=@pes,ben,mar,hin,tam,urd",
    )
    p.teacher_steps = 200
    # The reward model (arbitrage's scorer, DPO's ranker, the win-rate judge); "" = stage `reward` trains one
    # from the base on config.data's preference pairs for reward_steps
    p.reward_model = ""
    p.reward_steps = 150
    # Arbitrage prompts: pool files in the Aya Dataset format; () = the default data's train rows in the
    # teachers' languages, the last pool_per_language of each
    p.pool = ()
    p.pool_per_language = 16
    p.routing = "reward"  # fixed | reward | learned | single | random (config.curation: its other options)
    # SFT runs on the arbitrage data: "name=lang,lang,..." (its rows in those languages) or "name=*" (all);
    # the recipe trains several and merges them
    p.sft_runs = (
        "euro=eng,ita,spa,por,nld,deu,fra,ukr",
        "asia=zho,jpn,kor,pes,ben,mar,hin,tam,urd",
        "all=*",
    )
    p.sft_steps = 200
    p.merge_method = "linear"
    p.merge_weights = ()  # one per SFT run; () = uniform
    # Preference training from the SFT merge: offline DPO on the arbitrage replies ranked by the reward model
    # (reward / learned routing; otherwise config.dpo's pairs), then online iterative DPO ranked by it (Aya
    # Expanse: 3 iterations)
    p.dpo_offline_steps = 40
    p.dpo_iterations = 3
    # The final merge: the online DPO model and the SFT merge, linearly
    p.final_merge_weights = (0.5, 0.5)
    # Evaluation of every model stage: per-language loss on held-out rows (a file of Aya Dataset rows; "" = the
    # default data's validation rows in the teachers' languages), at most eval_rows_per_language each
    p.eval_rows = ""
    p.eval_rows_per_language = 16
    # Win rates: every model answers the questions (config.eval.questions' layouts; () = the held-out rows'
    # prompts, eval_questions_per_language each) and a judge compares every two models (both orders); each is
    # reported against `baseline` (a model stage; "" = base) and against the stage before it
    p.questions = ()
    p.eval_questions_per_language = 4
    p.baseline = ""
    p.judge = "reward"  # reward (the pipeline's reward model) | endpoint | model (config.eval's judge fields)
    # Benchmarks when their data is given: Global-MMLU (config.eval.data_dir's layout; CS / CA accuracy of every
    # model) and M-RewardBench (the reward model); without the latter the reward run's own held-out pairwise
    # accuracy is reported
    p.global_mmlu = ""
    p.m_rewardbench = ""
    return p


def parse_entries(entries, field: str) -> list[tuple[str, str]]:
    """[(name, value)] of "name=value" entries; ValueError naming the field and the entry otherwise."""
    out = []
    for entry in entries:
        name, eq, value = str(entry).partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise ValueError(
                f"config.pipeline.{field}: {entry!r} is not name=value (a name of letters, digits, -, _)"
            )
        out.append((name, value))
    names = [n for n, _ in out]
    if len(set(names)) < len(names):
        raise ValueError(f"config.pipeline.{field}: names repeat: {names}")
    return out


def validate(p: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    del config
    s = Section(p, "pipeline")
    for field in ("base_steps", "teacher_steps", "reward_steps", "sft_steps", "pool_per_language",
                  "eval_rows_per_language", "eval_questions_per_language"):  # fmt: skip
        s.at_least(field, 1)
    s.at_least("dpo_offline_steps", 0)
    s.at_least("dpo_iterations", 0)
    if p.dpo_offline_steps + p.dpo_iterations == 0:
        s.fail("dpo_offline_steps", "dpo_offline_steps and dpo_iterations are both 0: no preference training")
    s.one_of("routing", arbitrage.STRATEGIES)
    s.one_of("merge_method", MERGE_METHODS)
    s.one_of("judge", JUDGES)
    for field in ("teachers", "sft_runs"):
        if not p[field]:
            s.fail(field, "empty")
        try:
            parse_entries(p[field], field)
        except ValueError as e:
            s.fail(field, str(e).split(": ", 1)[1])
    if p.merge_weights and len(p.merge_weights) != len(p.sft_runs):
        s.fail("merge_weights", f"{len(p.merge_weights)} weights for {len(p.sft_runs)} SFT runs")
    if len(p.final_merge_weights) != 2:
        s.fail("final_merge_weights", "two weights: the online DPO model's and the SFT merge's")
