"""The evaluation jobs: one evaluator (aya_jax/evaluation/) on one checkpoint, results in `<workdir>/<eval>/`.

    python -m aya_jax.main --config configs/eval_global_mmlu.py --config.eval.checkpoint=/ckpt/aya-expanse-8b \\
        --config.eval.data_dir=/data/Global-MMLU --config.eval.languages="('fr','sw')" --config.eval.num_fewshot=5
    python -m aya_jax.main --config configs/eval_m_rewardbench.py --config.eval.reward_model=workdirs/reward \\
        --config.eval.data_dir=/data/m-rewardbench
    python -m aya_jax.main --config configs/eval_perplexity.py --config.eval.checkpoint=workdirs/quickstart \\
        --config.eval.texts=../shared/data/parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl
    python -m aya_jax.main --config configs/eval_battles.py --config.eval.judgments=judgments.jsonl \\
        --config.eval.baseline=gpt-4-0314
    python -m aya_jax.main --config configs/eval_win_rate.py --config.eval.questions="('/data/m-ArenaHard',)" \\
        --config.eval.models="('mine=workdirs/sft', 'base=/ckpt/aya-expanse-8b')" --config.eval.baseline=base \\
        --config.eval.judge_base_url=http://127.0.0.1:8000/v1 --config.eval.judge_model=judge

Each job checks its config and reads its data before it loads a model (bad input costs one line, not a model
load), loads any checkpoint the project reads (`pretrained.load_inference_model`: an HF directory, an aya_jax run
or step directory, a merge; Cohere and mT5) onto `config.mesh`, scores with a progress bar (items/s), and writes
`results.json`, `results.md` and its PNGs into `<workdir>/<eval>/` (process 0; every host scores its share of
each batch). The last lines printed say where everything went. (lm-evaluation-harness tasks: aya_jax/jobs/eval_harness.py.)
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import json
import logging
import pathlib
import time
from typing import Any

import jax

from aya_jax import defaults, plots, pretrained, sampling, sharding
from aya_jax.data import chat_template
from aya_jax.evaluation import arena_hard, judges, likelihood, report, reward_scores, rows
from aya_jax.evaluation import battles as bt
from aya_jax.evaluation import global_mmlu as gm
from aya_jax.evaluation import m_rewardbench as mrb
from aya_jax.evaluation import perplexity as ppl
from aya_jax.evaluation import prompt_priority as pp
from aya_jax.models import families

log = logging.getLogger(__name__)

SECTIONS = ("model", "mesh", "data", "eval")


def text_model(config: Any, source: str, field: str, mesh, rules) -> likelihood.TextModel:
    e = config.eval
    return likelihood.TextModel.from_checkpoint(
        source, config.model, config.data, mesh, rules, tokenizer=str(e.tokenizer),
        batch_size=int(e.batch_size), max_length=int(e.max_length), field=field,
    )  # fmt: skip


# ============================================================================================================
# Global-MMLU
# ============================================================================================================


def global_mmlu(config: Any, workdir: str) -> report.EvalSummary:
    defaults.validate(config, SECTIONS)
    e, t0 = config.eval, time.perf_counter()
    out = report.output_dir(workdir, "global_mmlu")
    items = gm.load(e.data_dir, tuple(e.languages), str(e.split))
    if e.max_items:
        items = {lang: rows[: int(e.max_items)] for lang, rows in items.items()}
    dev = gm.load(e.data_dir, tuple(items), "dev") if e.num_fewshot else None
    mesh, rules = sharding.setup(config.mesh)
    model = text_model(config, str(e.checkpoint), "config.eval.checkpoint", mesh, rules)
    chat = chat_template.prompt_text if e.chat_template == "cohere" else None
    n = sum(len(rows) for rows in items.values())
    with report.progress(n, "item", "Global-MMLU") as bar:
        results = gm.evaluate(
            items, model.loglikelihood, dev=dev, num_fewshot=int(e.num_fewshot), chat=chat,
            rounds=int(e.rounds), confidence=float(e.confidence), seed=int(config.seed),
            batch=len(gm.CHOICES) * int(e.batch_size), progress=lambda k: bar.update(k // len(gm.CHOICES)),
        )  # fmt: skip
    results["checkpoint"] = str(e.checkpoint)
    overall = results["overall"]
    headline = (
        f"accuracy {_interval(overall['macro']['all'])} (macro over {len(items)} languages; micro "
        f"{_interval(overall['micro']['all'])}); CS {_interval(overall['macro']['CS'])}, "
        f"CA {_interval(overall['macro']['CA'])}"
    )
    return report.finish(
        "Global-MMLU", out, results, gm.markdown(results), headline, t0,
        lambda d: {"CS vs CA": plots.global_mmlu_cs_ca(results, d / "cs_ca_by_language.png")}, bool(e.plot),
    )  # fmt: skip


def _interval(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "—"
    return f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


# ============================================================================================================
# M-RewardBench
# ============================================================================================================


def _reward_function(config: Any, mesh, rules) -> Any:
    """The classifier reward model of config.eval.reward_model, or the implicit reward of the DPO policy
    config.eval.checkpoint against config.eval.reference."""
    e = config.eval
    chat = e.data_format == "chat"
    prompt_len = int(e.prompt_len) or int(defaults.base_config().reward.prompt_len)
    if e.reward_model:
        return reward_scores.classifier_reward_of_run(
            str(e.reward_model), "config.eval.reward_model", mesh=mesh, rules=rules, prompt_len=prompt_len,
            seq_len=int(config.data.seq_len), chat=chat, batch_size=int(e.batch_size),
        )  # fmt: skip
    policy = text_model(config, str(e.checkpoint), "config.eval.checkpoint", mesh, rules)
    reference = text_model(config, str(e.reference), "config.eval.reference", mesh, rules)
    return reward_scores.ImplicitReward(
        policy.scorer, reference.scorer, policy.codec, beta=float(e.beta), chat=chat, prompt_len=prompt_len,
        seq_len=int(config.data.seq_len),
    )  # fmt: skip


def _m_rewardbench_with_judge(
    config: Any, pairs: list[Any], out: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """M-RewardBench judged by an LLM behind config.eval.judge_base_url; judgments cached in
    <out>/judgments.jsonl, so a rerun asks only for what is missing."""
    e = config.eval
    try:
        judge = judges.EndpointJudge(
            str(e.judge_base_url), str(e.judge_model), api_key_env=str(e.judge_api_key_env),
            batch_size=int(e.judge_concurrency), messages=judges.choice_messages,
        )  # fmt: skip
    except ValueError as err:
        raise ValueError(f"config.eval.judge_api_key_env: {err}") from None
    cache = rows.KeyedLog(out / "judgments.jsonl")
    with report.progress(len(pairs), "pair", "M-RewardBench (judge)") as bar:
        try:
            results = mrb.evaluate_with_judge(pairs, judge, cache, progress=bar.update, **options)
        except judges.JudgeError as err:
            raise ValueError(
                f"config.eval.judge_base_url: {err}; the {len(cache.records)} judgments so far are kept in "
                f"{cache.path}"
            ) from None
    results["reward"] = f"generative judge {judge.name} ({results['unparsed']} answers without a verdict)"
    return results


def m_rewardbench(config: Any, workdir: str) -> report.EvalSummary:
    defaults.validate(config, SECTIONS)
    e, t0 = config.eval, time.perf_counter()
    out = report.output_dir(workdir, "m_rewardbench")
    pairs = mrb.read(e.data_dir, tuple(e.languages))
    if e.max_items:
        by_language: dict[str, list[Any]] = {}
        for pair in pairs:
            by_language.setdefault(pair.language, []).append(pair)
        pairs = [p for rows in by_language.values() for p in rows[: int(e.max_items)]]
    options = {"rounds": int(e.rounds), "confidence": float(e.confidence), "seed": int(config.seed)}
    if e.judge_base_url:
        results = _m_rewardbench_with_judge(config, pairs, out, options)
    else:
        mesh, rules = sharding.setup(config.mesh)
        reward = _reward_function(config, mesh, rules)
        with report.progress(len(pairs), "pair", "M-RewardBench") as bar:
            results = mrb.evaluate(pairs, reward, batch=int(e.batch_size), progress=bar.update, **options)
        results["reward"] = str(e.reward_model) or f"{e.checkpoint} vs {e.reference} (beta {e.beta})"
    average = results["average"]
    headline = f"average accuracy {_interval(average)} over {len(average.get('languages', []))} languages"
    if results.get("english"):
        headline += f"; English {_interval(results['english'])}"
    return report.finish(
        "M-RewardBench", out, results, mrb.markdown(results), headline, t0,
        lambda d: {"heatmap": plots.m_rewardbench_heatmap(results, d / "language_by_category.png")}, bool(e.plot),
    )  # fmt: skip


# ============================================================================================================
# Perplexity
# ============================================================================================================


def perplexity(config: Any, workdir: str) -> report.EvalSummary:
    defaults.validate(config, SECTIONS)
    e, t0 = config.eval, time.perf_counter()
    out = report.output_dir(workdir, "perplexity")
    limit = int(e.max_texts)
    if e.text_field:
        texts = ppl.read_jsonl(
            str(e.texts), str(e.text_field), str(e.language_field), tuple(e.languages), limit
        )
    else:
        texts = ppl.read_parallel(str(e.texts), tuple(e.languages), limit)
    mesh, rules = sharding.setup(config.mesh)
    before = text_model(config, str(e.checkpoint), "config.eval.checkpoint", mesh, rules)
    n = sum(len(v) for v in texts.values())
    common = dict(
        rounds=int(e.rounds), confidence=float(e.confidence), seed=int(config.seed), batch=int(e.batch_size)
    )
    if not e.compare_to:
        with report.progress(n, "text", "perplexity") as bar:
            results = ppl.perplexity(texts, before.token_scores, progress=bar.update, **common)
        micro = results["overall"]["micro"]
        headline = (
            f"perplexity {_interval(micro['perplexity'])}, {micro['bits_per_byte']:.3f} bits/byte "
            f"(token-weighted, {len(texts)} languages)"
        )
        png = ("per language", plots.perplexity_by_language, "perplexity_by_language.png")
    else:
        after = text_model(config, str(e.compare_to), "config.eval.compare_to", mesh, rules)

        def decode(token: int) -> str:
            return before.codec.decode([int(token)])

        with report.progress(2 * n, "text", "perplexity (before, after)") as bar:
            results = ppl.compare(texts, before.token_scores, after.token_scores, decode, top=int(e.top_tokens),
                                  progress=bar.update, **common)  # fmt: skip
        ratio = results["overall"]["micro"]["perplexity_ratio"]
        headline = f"perplexity after / before {_interval(ratio)} (token-weighted); largest rise: {results['largest_rise']}"
        png = ("change", plots.perplexity_change, "perplexity_change.png")
    results.update(checkpoint=str(e.checkpoint), compare_to=str(e.compare_to), texts=str(e.texts))
    what, plot, name = png
    return report.finish(
        "perplexity", out, results, ppl.markdown(results), headline, t0, lambda d: {what: plot(results, d / name)},
        bool(e.plot),
    )  # fmt: skip


# ============================================================================================================
# Pairwise battles
# ============================================================================================================


def battles(config: Any, workdir: str) -> report.EvalSummary:
    """A judgment log (config.eval.judgments) -> win rates, Bradley–Terry ratings and Elo reliability; no model."""
    defaults.validate(config, SECTIONS)
    e, t0 = config.eval, time.perf_counter()
    out = report.output_dir(workdir, "battles")
    try:
        records = bt.read_judgments(str(e.judgments))
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"config.eval.judgments: {err}") from None
    try:
        results = bt.evaluate(
            records, baseline=str(e.baseline), ks=tuple(float(k) for k in e.elo_k),
            permutations=int(e.elo_permutations), bt_rounds=int(e.bt_rounds), rounds=int(e.rounds),
            confidence=float(e.confidence), seed=int(config.seed),
        )  # fmt: skip
    except ValueError as err:
        field = "baseline" if "baseline" in str(err) else "judgments"
        raise ValueError(f"config.eval.{field}: {err}") from None
    results["judgments"] = str(e.judgments)
    headline = (
        f"{results['parsed']} of {results['games']} games with a verdict, {len(results['models'])} models"
    )
    if e.baseline:
        overall = {m: _interval(w["overall"]["win_rate"]) for m, w in results["win_rates"].items()}
        headline += (
            "; win rate vs " + str(e.baseline) + ": " + ", ".join(f"{m} {v}" for m, v in overall.items())
        )
    return report.finish(
        "battles", out, results, bt.markdown(results), headline, t0,
        lambda d: {"win rates": plots.win_rate_forest(results, d / "win_rate_by_language.png"),
                   "Elo by K": plots.elo_spread(results, d / "elo_by_k.png")},
        bool(e.plot),
    )  # fmt: skip


# ============================================================================================================
# Win rates (Arena-Hard protocol)
# ============================================================================================================


def _questions(config: Any) -> list[arena_hard.Question]:
    """config.eval.questions (the first max_items of each language), and every config.eval.models source
    checked to exist: bad input costs one line before any model is loaded."""
    e = config.eval
    try:
        questions = arena_hard.read_questions(tuple(e.questions))
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"config.eval.questions: {err}") from None
    if e.max_items:
        seen: dict[str, int] = collections.Counter()
        kept = []
        for q in questions:
            seen[q.language] += 1
            if seen[q.language] <= int(e.max_items):
                kept.append(q)
        questions = kept
    for entry in e.models:
        name, _, source = str(entry).partition("=")
        if not pathlib.Path(source).exists():
            raise FileNotFoundError(f"config.eval.models: {name}: no checkpoint or answers file at {source}")
    return questions


def _chat_model(config: Any, source: str, field: str, mesh, rules, max_new_tokens: int, greedy: bool):
    e = config.eval
    return pretrained.chat_model(
        source, config.model, config.data, mesh, rules,
        lambda eos: sampling.SamplingParams(
            max_new_tokens=max_new_tokens, temperature=0.0 if greedy else float(e.temperature),
            top_k=0 if greedy else int(e.top_k), top_p=1.0 if greedy else float(e.top_p), eos_ids=eos,
        ),
        tokenizer=str(e.tokenizer), field=field, template=str(e.answer_template), batch_size=int(e.batch_size),
        seed=int(config.seed),
    )  # fmt: skip


def _answers(
    config: Any, out: pathlib.Path, questions, mesh, rules, *, greedy: bool = False
) -> tuple[dict[str, dict[str, str]], dict]:
    """{model: {question key: answer}} for every config.eval.models entry — read from its answers file, or
    generated (only what <out>/answers/<name>.jsonl lacks) one model at a time, each freed before the next."""
    e = config.eval
    answers: dict[str, dict[str, str]] = {}
    made: dict[str, dict[str, int]] = {}
    for entry in e.models:
        name, _, source = str(entry).partition("=")
        path = pathlib.Path(source)
        if path.is_file():
            try:
                answers[name] = arena_hard.read_answers(path, questions)
            except (FileNotFoundError, ValueError) as err:
                raise type(err)(f"config.eval.models: {name}: {err}") from None
            made[name] = {"read": len(answers[name]), "generated": 0}
            continue
        log_ = rows.KeyedLog(out / "answers" / f"{name}.jsonl", writer=jax.process_index() == 0)
        if all(q.key in log_ for q in questions):
            answers[name] = {q.key: log_.records[q.key]["answer"] for q in questions}
            made[name] = {"read": len(questions), "generated": 0}
            continue
        chat = _chat_model(config, source, f"config.eval.models ({name})", mesh, rules, int(e.max_new_tokens),
                           greedy=greedy)  # fmt: skip
        with report.progress(len(questions) - len(log_), "answer", f"answers: {name}") as bar:
            answers[name], generated = arena_hard.answer_questions(
                questions, name, chat.reply, log_, batch=int(e.batch_size), progress=bar.update
            )
        made[name] = {"read": len(questions) - generated, "generated": generated, "prompts_cut": chat.cut}
        del chat
        gc.collect()  # the next model's weights replace this one's
    return answers, made


def _judge(config: Any, mesh, rules) -> Any:
    e = config.eval
    if e.judge == "endpoint":
        try:
            return judges.EndpointJudge(
                str(e.judge_base_url), str(e.judge_model), api_key_env=str(e.judge_api_key_env),
                batch_size=int(e.judge_concurrency), max_tokens=int(e.judge_max_tokens),
            )  # fmt: skip
        except ValueError as err:
            raise ValueError(f"config.eval.judge_api_key_env: {err}") from None
    if e.judge == "reward":
        return judges.RewardJudge(
            _reward_function(config, mesh, rules), tie=float(e.judge_tie), strong=float(e.judge_strong),
            batch_size=int(e.batch_size), name=f"reward:{e.reward_model}",
        )  # fmt: skip
    chat = _chat_model(config, str(e.judge_checkpoint), "config.eval.judge_checkpoint", mesh, rules,
                       int(e.judge_max_tokens), greedy=True)  # fmt: skip
    return judges.ModelJudge(chat, name=f"model:{e.judge_checkpoint}", batch_size=int(e.batch_size))


def _judged(config: Any, out: pathlib.Path, items, mesh, rules):
    """(judge, a judgment record per item, how many were asked for now, the log): only what
    <out>/judgments.jsonl lacks is judged, each batch appended as it arrives."""
    judge = _judge(config, mesh, rules)
    cache = rows.KeyedLog(out / "judgments.jsonl", writer=jax.process_index() == 0)
    with report.progress(len(items), "game", f"judging ({judge.name})") as bar:
        try:
            records, asked = judges.judge_pairs(items, judge, cache, progress=bar.update)
        except judges.JudgeError as err:
            raise ValueError(
                f"config.eval.judge_base_url: {err}; the {len(cache)} judgments so far are kept in {cache.path}"
            ) from None
    return judge, records, asked, cache


def win_rate(config: Any, workdir: str) -> report.EvalSummary:
    """Questions -> every model's answers (generated or read) -> two judged games per question against the
    baseline (or every pair) -> win rates, Bradley–Terry (optionally style-controlled), Elo reliability.
    Answers and judgments are kept as they arrive in <workdir>/win_rate/, so a rerun redoes nothing finished."""
    defaults.validate(config, SECTIONS)
    e, t0 = config.eval, time.perf_counter()
    out = report.output_dir(workdir, "win_rate")
    questions = _questions(config)
    mesh, rules = sharding.setup(config.mesh)
    answers, made = _answers(config, out, questions, mesh, rules)
    names = [str(entry).partition("=")[0] for entry in e.models]
    items, missing = arena_hard.games(
        questions, answers, arena_hard.model_pairs(names, str(e.baseline), bool(e.every_pair))
    )
    judge, records, asked, cache = _judged(config, out, items, mesh, rules)
    info = dict(
        questions=len(questions), languages=sorted({q.language for q in questions}), answers=made,
        missing_answers=missing, judge=judge.name, judged_now=asked, judgments_file=str(cache.path),
    )  # fmt: skip
    # A judge that never writes a verdict label: reported, not a crash.
    if not bt.battles_from_judgments(records)[0]:
        results = {"games": len(records), "parsed": 0, "unparsed": len(records), **info}
        headline = f"none of the {len(records)} judgments has a verdict label (see {cache.path})"
        return report.finish("win rate", out, results, f"# Win rate\n\n{headline}", headline, t0, None, False)
    style = arena_hard.style_features(records, answers, tuple(e.style)) if e.style else None
    results = bt.evaluate(
        records, baseline=str(e.baseline), ks=tuple(float(k) for k in e.elo_k),
        permutations=int(e.elo_permutations), bt_rounds=int(e.bt_rounds), rounds=int(e.rounds),
        confidence=float(e.confidence), seed=int(config.seed), style=style,
    )  # fmt: skip
    results.update(info)
    overall = {m: _interval(w["overall"]["win_rate"]) for m, w in results["win_rates"].items()}
    headline = (
        f"win rate vs {e.baseline}: " + ", ".join(f"{m} {v}" for m, v in overall.items())
        + f" ({results['parsed']} of {results['games']} games with a verdict; {asked} judged now)"
    )  # fmt: skip
    return report.finish(
        "win rate", out, results, bt.markdown(results), headline, t0,
        lambda d: {"win rates": plots.win_rate_forest(results, d / "win_rate_by_language.png"),
                   "Elo by K": plots.elo_spread(results, d / "elo_by_k.png")},
        bool(e.plot),
    )  # fmt: skip


# ============================================================================================================
# Prompt prioritisation
# ============================================================================================================


def _divergence_requests(model: likelihood.TextModel, questions, answers: dict[str, str], template: str):
    """(prompt ids as the model reads them, answer ids) per question — the answer re-encoded from its text."""
    family = families.family_of(model.scorer.model)
    out = []
    for q in questions:
        context = pretrained.encode_conversation(
            model.codec, [{"role": "user", "content": q.prompt}], template=template,
            encoder_decoder=family.encoder_decoder, field="config.eval.answer_template",
        )  # fmt: skip
        out.append((context, model.codec.encode(answers[q.key], False)))
    return out


def prompt_priority(config: Any, workdir: str) -> report.EvalSummary:
    """Two models' greedy answers -> per prompt the divergence of their next-token distributions along each
    answer (aya_jax/evaluation/prompt_priority.py) -> the top config.eval.top_fraction of prompts, written as a
    question file; with a judge, its tie rate on those prompts against random subsets of the same size."""
    defaults.validate(config, SECTIONS)
    e, t0 = config.eval, time.perf_counter()
    out = report.output_dir(workdir, "prompt_priority")
    questions = _questions(config)
    mesh, rules = sharding.setup(config.mesh)
    answers, made = _answers(config, out, questions, mesh, rules, greedy=True)
    (name_a, source_a), (name_b, source_b) = (str(m).partition("=")[::2] for m in e.models)
    empty = [q.key for q in questions if not answers[name_a][q.key] or not answers[name_b][q.key]]
    scored = [q for q in questions if q.key not in set(empty)]
    if not scored:
        raise ValueError(
            f"config.eval.models: every answer of {name_a} or {name_b} is empty; nothing to compare"
        )
    model_a = text_model(config, source_a, f"config.eval.models ({name_a})", mesh, rules)
    model_b = text_model(config, source_b, f"config.eval.models ({name_b})", mesh, rules)
    template = str(e.answer_template)
    on_a_requests = _divergence_requests(model_a, scored, answers[name_a], template)
    on_b_requests = _divergence_requests(model_a, scored, answers[name_b], template)
    if on_a_requests[:8] != _divergence_requests(model_b, scored[:8], answers[name_a], template):
        raise ValueError(f"config.eval.models: {name_a} and {name_b} tokenize differently; the divergence of "
                         "their distributions needs one tokenizer")  # fmt: skip
    try:
        forward = likelihood.Divergence(model_a.scorer, model_b.scorer)
        backward = likelihood.Divergence(model_b.scorer, model_a.scorer)
    except ValueError as err:
        raise ValueError(f"config.eval.models: {name_a} and {name_b}: {err}") from None
    with report.progress(2 * len(scored), "answer", "divergences") as bar:
        on_a = forward.token_divergences(on_a_requests, progress=bar.update)
        on_b = backward.token_divergences(on_b_requests, progress=bar.update)
    del model_a, model_b, forward, backward
    gc.collect()
    scores = [pp.prompt_score(q.key, a, b) for q, a, b in zip(scored, on_a, on_b, strict=True)]
    metric, fraction = str(e.priority_metric), float(e.top_fraction)
    selected = pp.select(scores, fraction, metric)
    by_key = {q.key: q for q in questions}
    value = {s.key: getattr(s, metric) for s in scores}
    results: dict[str, Any] = {
        "models": [name_a, name_b], "metric": metric, "fraction": fraction, "prompts": len(questions),
        "scored": len(scored), "empty_answers": empty, "answers": made, "cut": value[selected[-1]],
        "selected": selected, "scores": [dataclasses.asdict(s) for s in scores],
    }  # fmt: skip
    if jax.process_index() == 0:
        with open(out / "selected.jsonl", "w", encoding="utf-8") as f:
            for key in selected:
                q = by_key[key]
                row = {"question_id": q.question_id, "language": q.language, "category": q.category,
                       "cluster": q.cluster, "prompt": q.prompt, metric: value[key]}  # fmt: skip
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    headline = (
        f"top {100 * fraction:g}% of {len(scored)} prompts by {metric} (cut {results['cut']:.4g}) -> "
        f"{out / 'selected.jsonl'}"
    )
    if e.judge != "none":
        items, _ = arena_hard.games(scored, answers, [(name_a, name_b)])
        judge, records, asked, _ = _judged(config, out, items, mesh, rules)
        ties = pp.tie_rates(records, selected, [s.key for s in scores], draws=int(e.rounds),
                            confidence=float(e.confidence), seed=int(config.seed))  # fmt: skip
        results.update(judge=judge.name, judged_now=asked, tie_rates=ties)
        headline += (
            f"; tie rate {ties['selected']['tie_rate']:.3f} on them vs {_interval(ties['random']['tie_rate'])} "
            f"on random {100 * fraction:g}% subsets"
        )
    return report.finish(
        "prompt priority", out, results, pp.markdown(results), headline, t0,
        lambda d: {"scores and ties": plots.prompt_priority(results, d / "prompt_priority.png")}, bool(e.plot),
    )  # fmt: skip
