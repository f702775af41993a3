"""config.eval: the evaluation jobs (aya_jax/jobs/evaluate.py; the evaluators in aya_jax/evaluation/).

One section for the evaluation jobs: what they share (the checkpoint, its tokenizer, batching, the bootstrap) once,
then each evaluation's own fields. A job checks only the fields it reads."""

import ml_collections

from aya_jax.defaults.checks import Section

CHAT_TEMPLATES = ("none", "cohere")
JUDGES = ("endpoint", "model", "reward", "none")
STYLE_FEATURES = ("length", "markdown")  # aya_jax/evaluation/arena_hard.py


def defaults() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    # --- the model (every job) ---
    e.checkpoint = ""  # an HF directory, an aya_jax run (workdir, checkpoints/, a step directory) or a merge
    e.tokenizer = (
        ""  # tokenizer.json[.gz]; "" = <HF dir>/tokenizer.json, or the run's vocabulary (config.data)
    )
    e.batch_size = 32  # rows per jitted batch (rounded up to a multiple of the mesh's batch devices)
    e.max_length = 0  # tokens a row may hold; 0 = the model's maximum (2048 for mT5)
    # --- reporting ---
    e.rounds = 1000  # bootstrap resamples behind every interval
    e.confidence = 0.95
    e.plot = True
    # --- Global-MMLU (eval_global_mmlu) ---
    e.data_dir = (
        ""  # Global-MMLU / Global-MMLU-Lite / M-RewardBench in the published layout: <dir>/<lang>/<split>-*
    )
    e.languages = ()  # () = every language folder present
    e.split = "test"
    e.num_fewshot = 0  # k shots from the `dev` split (the first k of the item's subject)
    e.chat_template = (
        "none"  # none | cohere: the prompt as one user turn of the Cohere chat template (instruct)
    )
    e.max_items = 0  # per language; 0 = all (a quick look at a large benchmark)
    # --- M-RewardBench (eval_m_rewardbench): a classifier reward model, or a DPO policy against a reference ---
    e.reward_model = ""  # a `reward` run's workdir: scores with its model
    e.reference = ""  # with `checkpoint` (the policy): the implicit reward beta * (log pi - log pi_ref)
    e.beta = 0.1  # the DPO run's config.dpo.beta
    e.prompt_len = 0  # prompt tokens kept (its last); 0 = the reward run's config.reward.prompt_len default
    e.data_format = "chat"  # chat | raw: how the reward / DPO run formatted its pairs (config.data.format)
    # ... or a generative judge behind an OpenAI-compatible endpoint, asked [[A]] or [[B]] per pair
    e.judge_base_url = ""  # e.g. http://127.0.0.1:8000/v1 (the serve job, vLLM) or a hosted API
    e.judge_model = ""
    e.judge_api_key_env = ""  # the NAME of the environment variable holding the key ("" = none needed)
    e.judge_concurrency = 8  # requests in flight
    # --- perplexity (eval_perplexity) ---
    e.texts = ""  # NTREX-128 jsonl (one field per language) or jsonl rows with text_field + language_field
    e.text_field = ""  # "" = the NTREX layout; e.g. "targets" for Aya Dataset rows
    e.language_field = "language_code"
    e.max_texts = 0  # per language; 0 = all
    e.compare_to = ""  # a second checkpoint (after continued training): per-language change, tokens that rose
    e.top_tokens = 20
    # --- lm-evaluation-harness (eval_harness) ---
    e.tasks = ()  # harness task names, e.g. ("global_mmlu_full_fr",) or local ones under include_path
    e.include_path = ""  # a folder of task YAMLs (local data files: dataset_path json|parquet + data_files)
    e.limit = 0  # documents per task; 0 = all
    e.harness_num_fewshot = -1  # -1 = each task's own
    # --- pairwise battles (eval_battles): a judgment log -> win rates, Bradley–Terry, Elo reliability ---
    e.judgments = ""  # JSONL: question_id, model_a, model_b, verdict or judgment [, language, game] per line
    e.baseline = ""  # the model every other is compared with and the Bradley–Terry anchor; "" = none
    e.elo_k = (1, 2, 4, 8, 16, 32, 64)  # K-factors of the Elo sweep
    e.elo_permutations = 100  # random battle orders per K
    e.bt_rounds = 100  # bootstrap refits of the Bradley–Terry ratings
    # --- win rates (eval_win_rate): answers generated or read, two judged games per question, then as above ---
    e.questions = ()  # question files / folders: "path" or "language=path" (m-ArenaHard, arena-hard-auto layouts)
    e.models = ()  # "name=source": a checkpoint (its answers are generated) or an answers file (.jsonl/.parquet)
    e.every_pair = (
        False  # judge every two models (model-vs-model Bradley–Terry), not only each vs the baseline
    )
    e.judge = (
        "endpoint"  # endpoint (judge_base_url) | model (judge_checkpoint, in process) | reward (reward_model)
    )
    e.judge_checkpoint = ""  # the in-process LLM judge: any checkpoint the project reads
    e.judge_max_tokens = 1024  # the judgment's length (endpoint and in-process judges)
    e.judge_tie = 0.1  # reward judge: |r(A) - r(B)| below this is a tie ...
    e.judge_strong = 1.0  # ... and at or above this a strong verdict (>>)
    e.style = ()  # style-controlled Bradley–Terry on these features: ("length", "markdown") or either alone
    e.answer_template = "auto"  # how questions reach an answering model: auto | cohere | none (chat_template)
    e.max_new_tokens = 512  # answer length
    e.temperature = 0.0  # 0 = greedy (a rerun reproduces the answers)
    e.top_k = 0
    e.top_p = 1.0
    # --- prompt prioritisation (eval_prompt_priority): the questions, models (two checkpoints, one tokenizer)
    # and judge fields above; judge "none" ranks without judging ---
    e.top_fraction = 0.2  # the share of prompts kept (highest divergence first)
    e.priority_metric = "kl"  # kl | cross_entropy (aya_jax/evaluation/prompt_priority.py)
    return e


def validate(e: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    s = Section(e, "eval")
    job = config.job
    if job == "eval_m_rewardbench":
        chosen = [f for f in ("reward_model", "checkpoint", "judge_base_url") if e[f]]
        if len(chosen) != 1:
            s.fail(
                "reward_model",
                "set exactly one of reward_model (a reward run), checkpoint (+ reference: a DPO policy) and "
                f"judge_base_url (a generative judge); got reward_model={e.reward_model!r}, "
                f"checkpoint={e.checkpoint!r}, judge_base_url={e.judge_base_url!r}",
            )
        if e.checkpoint and not e.reference:
            s.fail("reference", "the implicit reward of checkpoint (a DPO policy) needs its reference model")
        if e.judge_base_url and not e.judge_model:
            s.fail("judge_model", "the judge's model name at judge_base_url")
    elif (
        job.startswith("eval_")
        and job not in ("eval_battles", "eval_win_rate", "eval_prompt_priority")
        and not e.checkpoint
    ):
        s.fail(
            "checkpoint", "no model to evaluate (an HF directory, an aya_jax run or step directory, a merge)"
        )
    if job in ("eval_global_mmlu", "eval_m_rewardbench") and not e.data_dir:
        s.fail(
            "data_dir", "the benchmark's files in the published layout (<dir>/<language>/<split>-*.parquet)"
        )
    if job == "eval_perplexity" and not e.texts:
        s.fail("texts", "held-out text: the NTREX-128 jsonl or jsonl rows (text_field, language_field)")
    if job == "eval_battles" and not e.judgments:
        s.fail(
            "judgments", "a JSONL judgment log (question_id, model_a, model_b, verdict or judgment per line)"
        )
    if job == "eval_battles" and (not e.elo_k or any(not float(k) > 0 for k in e.elo_k)):
        s.fail("elo_k", f"K-factors must be > 0, got {tuple(e.elo_k)}")
    if job in ("eval_win_rate", "eval_prompt_priority"):
        _validate_pairwise(s, e, job)
    if job == "eval_harness" and not e.tasks:
        s.fail("tasks", "no harness task to run, e.g. --config.eval.tasks=\"('global_mmlu_full_fr',)\"")
    s.at_least("batch_size", 1)
    s.at_least("max_length", 0)
    s.at_least("rounds", 1)
    if not 0 < e.confidence < 1:
        s.fail("confidence", f"must be in (0, 1), got {e.confidence}")
    s.at_least("num_fewshot", 0)
    s.one_of("chat_template", CHAT_TEMPLATES)
    s.at_least("max_items", 0)
    s.at_least("max_texts", 0)
    s.at_least("top_tokens", 1)
    s.at_least("limit", 0)
    s.at_least("harness_num_fewshot", -1)
    s.greater("beta", 0.0)
    s.at_least("prompt_len", 0)
    s.one_of("data_format", ("chat", "raw"))
    s.at_least("judge_concurrency", 1)
    s.at_least("elo_permutations", 1)
    s.at_least("bt_rounds", 1)
    s.one_of("judge", JUDGES)
    s.at_least("judge_max_tokens", 1)
    s.at_least("judge_tie", 0.0)
    s.greater(
        "judge_strong", e.judge_tie, " (judge_tie: a strong verdict needs a larger score gap than a win)"
    )
    s.one_of("answer_template", ("auto", "cohere", "none"))
    s.sampling()
    if not 0 < e.top_fraction <= 1:
        s.fail("top_fraction", f"must be in (0, 1], got {e.top_fraction}")
    s.one_of("priority_metric", ("kl", "cross_entropy"))


def _validate_pairwise(s: Section, e: ml_collections.ConfigDict, job: str) -> None:
    if not e.questions:
        s.fail("questions", 'no question files ("path" or "language=path" entries)')
    names = []
    for entry in e.models:
        name, _, source = str(entry).partition("=")
        if not name or not source:
            s.fail("models", f"{entry!r} is not name=source (a checkpoint or an answers file)")
        names.append(name)
    if len(names) < 2 or len(set(names)) < len(names):
        s.fail("models", f"need two or more models with distinct names, got {names}")
    if job == "eval_prompt_priority":
        if len(names) != 2:
            s.fail("models", f"prompt prioritisation compares exactly two checkpoints, got {names}")
    elif e.baseline not in names:
        s.fail("baseline", f"{e.baseline!r} is none of the models {names}")
    if e.judge == "none" and job != "eval_prompt_priority":
        s.fail("judge", "'none' only ranks prompts (eval_prompt_priority); a win rate needs a judge")
    need = {"endpoint": "judge_base_url", "model": "judge_checkpoint", "reward": "reward_model"}.get(e.judge)
    if need and not e[need]:
        s.fail(need, f"judge {e.judge!r} needs it")
    if e.judge == "endpoint" and not e.judge_model:
        s.fail("judge_model", "the judge's model name at judge_base_url")
    bad = [f for f in e.style if f not in STYLE_FEATURES]
    if bad:
        s.fail("style", f"unknown feature(s) {bad}; known: {', '.join(STYLE_FEATURES)}")
