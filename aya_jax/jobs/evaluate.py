"""The evaluation jobs: one evaluator (aya_jax/evaluation/) on one checkpoint, results in `<workdir>/<eval>/`.

    python -m aya_jax.main --config configs/eval_global_mmlu.py --config.eval.checkpoint=/ckpt/aya-expanse-8b \\
        --config.eval.data_dir=/data/Global-MMLU --config.eval.languages="('fr','sw')" --config.eval.num_fewshot=5
    python -m aya_jax.main --config configs/eval_m_rewardbench.py --config.eval.reward_model=workdirs/reward \\
        --config.eval.data_dir=/data/m-rewardbench
    python -m aya_jax.main --config configs/eval_perplexity.py --config.eval.checkpoint=workdirs/quickstart \\
        --config.eval.texts=../shared/data/parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl
    python -m aya_jax.main --config configs/eval_battles.py --config.eval.judgments=judgments.jsonl \\
        --config.eval.baseline=gpt-4-0314

Each job checks its config and reads its data before it loads a model (bad input costs one line, not a model
load), loads any checkpoint the project reads (`pretrained.load_inference_model`: an HF directory, an aya_jax run
or step directory, a merge; Cohere and mT5) onto `config.mesh`, scores with a progress bar (items/s), and writes
`results.json`, `results.md` and its PNGs into `<workdir>/<eval>/` (process 0; every host scores its share of
each batch). The last lines printed say where everything went. (lm-evaluation-harness tasks: aya_jax/jobs/eval_harness.py.)
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aya_jax import defaults, plots, pretrained, sharding
from aya_jax.data import chat_template
from aya_jax.evaluation import battles as bt
from aya_jax.evaluation import global_mmlu as gm
from aya_jax.evaluation import judges, likelihood, report, reward_scores
from aya_jax.evaluation import m_rewardbench as mrb
from aya_jax.evaluation import perplexity as ppl

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
        try:
            loaded = pretrained.load_reward_model(str(e.reward_model), mesh, rules)
        except (FileNotFoundError, ValueError) as err:
            raise type(err)(f"config.eval.reward_model: {err}") from None
        return reward_scores.ClassifierReward(
            loaded, mesh=mesh, rules=rules, prompt_len=prompt_len, seq_len=int(config.data.seq_len), chat=chat,
            batch_size=int(e.batch_size),
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
    cache = judges.JudgmentCache(out / "judgments.jsonl")
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
