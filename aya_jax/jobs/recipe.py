"""The `aya_expanse` job: the Aya Expanse recipe (Dang et al. 2024, arXiv 2412.04261) as make-like stages, each an
existing job in its own folder under the pipeline's workdir (aya_jax/stages.py decides: skip, resume, redo).

    python -m aya_jax.main --config configs/aya_expanse.py                  # the CPU miniature
    python -m aya_jax.main --config configs/aya_expanse.py --config.pipeline.stages="('sft_all', 'merge_sft')"

Stages, in order (config.pipeline sets their wiring; every other field of the config reaches the jobs as is):

1. `base` (only without pipeline.base): SFT of config.model on config.data — the miniature's starting point;
2. `teacher_<name>` for each "name=@lang,..." teacher: the base fine-tuned on the embedded default data's train
   rows in those languages (the miniature's teacher pool; real pools name checkpoints or endpoints);
3. `reward` (only without pipeline.reward_model): a reward model from the base (the `reward` job);
4. `arbitrage`: synthetic SFT data, every pool prompt answered by the teacher the routing picks;
5. `sft_<name>`: SFT runs from the base on the arbitrage rows of the run's languages;
6. `merge_sft`: the SFT runs merged (pipeline.merge_method, weights);
7. `dpo_offline`: offline DPO from the SFT merge on reward-model-ranked pairs — with reward or learned routing
   every teacher answered the arbitrage prompts and was scored, and each prompt's best and worst replies are a
   pair (other routings: config.dpo's pairs) — for dpo_offline_steps;
8. `dpo_online`: online iterative DPO from the offline model, ranked by the reward model (dpo_iterations);
9. `merge_final`: the online DPO model merged linearly with the SFT merge (final_merge_weights);
10. `eval_<model>`: each model's per-language loss on held-out rows (the eval_perplexity job, with bootstrap
    intervals) — base, SFT runs, merges and DPO models alike; `global_mmlu_<model>` when pipeline.global_mmlu
    names the benchmark's data (CS / CA accuracy);
11. `win_rates`: every model answers the same questions and a judge (the pipeline's reward model by default,
    or config.eval's endpoint / in-process judge) compares every two models in both orders (the eval_win_rate
    job); each model is reported against the baseline and against the model it was made from;
12. `m_rewardbench` when pipeline.m_rewardbench names the benchmark's data: the reward model's accuracy
    (otherwise the report gives its run's held-out pairwise accuracy).

Every stage starts from the vocabulary the base was trained with (its path pinned), so that fine-tuning on other
data never trains another. The report (`report.md`, and `report/` with `results.json` and `stages.png`) puts every
model's figures side by side — held-out loss with its interval, per language, win rates against the baseline and
the previous stage, Global-MMLU CS / CA, the DPO runs' held-out reward — and lists every stage with what this
run did to it and where its artefact is; the run ends with a one-screen summary.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from aya_jax import curation, defaults, jobs, plots, sharding, stages
from aya_jax.data import default_data, languages
from aya_jax.data import pipeline as data_pipeline
from aya_jax.defaults.pipeline import parse_entries
from aya_jax.evaluation import battles, report, rows

# the arbitrage job's rows and ranked pairs, in its folder
DATASET = f"arbitrage/{curation.DATASET}/{curation.ROWS}"
PAIRS = f"arbitrage/{curation.PAIRS}"
CHECKPOINTS = "checkpoints"
MERGED = "merge_report.json"
PERPLEXITY = "perplexity/results.json"
GLOBAL_MMLU = "global_mmlu/results.json"
WIN_RATE = "win_rate/results.json"
M_REWARDBENCH = "m_rewardbench/results.json"
# settings that change how a job reports, not what it makes: left out of the fingerprints
COSMETIC = ("workdir", "pipeline", "train.progress_bar", "train.plot", "metrics.tensorboard", "eval.plot",
            "curation.plot")  # fmt: skip


def _settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    out = json.loads(json.dumps(config.to_dict(), default=str))
    for key in COSMETIC:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return out


def _write_rows(path: pathlib.Path, records: list[dict[str, Any]]) -> pathlib.Path:
    if jax.process_index() == 0:  # every host reads the file; one writes it
        rows.write_rows(path, records)
    return path


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """The JSON rows of `path` (DataError naming file:line for a damaged one)."""
    return [row for _, row in rows.read_rows(path)]


def _codes(spec: str, field: str) -> set[str] | None:
    """The ISO codes of "lang,lang,..." (None for "*": every language)."""
    if spec == "*":
        return None
    out = set()
    for code in spec.split(","):
        known = languages.maybe_resolve(code.strip())
        if known is None:
            raise defaults.ConfigError(f"config.pipeline.{field}: {code.strip()!r} is not a known language")
        out.add(known.code)
    return out


def _in(row: dict[str, Any], codes: set[str] | None) -> bool:
    if codes is None:
        return True
    known = languages.maybe_resolve(str(row.get("language_code", "")))
    return known is not None and known.code in codes


class Plan:
    """The stages of one pipeline config (module docstring), built before anything runs."""

    def __init__(self, config: ml_collections.ConfigDict, root: pathlib.Path):
        self.config, self.root, self.p = config, root, config.pipeline
        self.stages: list[stages.Stage] = []
        self.models: dict[str, str] = {}  # model (stage name, or "base") -> its checkpoint path
        # model -> the model the recipe made it from (the opponent of its "win rate vs previous")
        self.previous: dict[str, str] = {}
        try:
            self.teachers = parse_entries(self.p.teachers, "teachers")
            self.sft_runs = parse_entries(self.p.sft_runs, "sft_runs")
        except ValueError as e:
            raise defaults.ConfigError(str(e)) from None
        # a SentencePiece vocabulary trained on config.data once, pinned in every stage (None: a given one)
        self.vocab_path = data_pipeline.trained_vocab(config.data)
        self._build()

    # -- helpers --------------------------------------------------------------------------------------------

    def folder(self, name: str) -> pathlib.Path:
        return self.root / name

    def add(self, name: str, job: str, cfg: ml_collections.ConfigDict, inputs, artefact: str,
            run: Callable[[pathlib.Path], Any] | None = None, extra: dict[str, Any] | None = None) -> None:  # fmt: skip
        def default_run(folder: pathlib.Path) -> Any:
            return jobs.get_job(job)(cfg, str(folder))

        settings = {"config": _settings(cfg), **(extra or {})}
        self.stages.append(stages.Stage(name, job, settings, tuple(inputs), artefact, run or default_run))

    def pinned(self, job: str) -> ml_collections.ConfigDict:
        """The stage config of `job` with the base's vocabulary pinned (fine-tuning never trains another)."""
        return jobs.config_for(self.config, job, self.vocab_path)

    def sft_on(
        self, name: str, rows_of: Callable[[], list[dict]], steps: int, init: str, inputs, extra,
        model: bool = True,
    ) -> None:  # fmt: skip
        """An SFT stage from `init` on the Aya Dataset rows `rows_of()` writes (in <stage>/data/ when it runs)."""
        cfg = self.pinned("sft")
        data = self.folder(name) / "data"
        cfg.data.task = "aya_dataset"
        cfg.data.aya_dataset_dir = str(data)
        cfg.data.eval_split = "train"  # one file of rows
        cfg.train.steps = int(steps)
        cfg.checkpoint.init_from = init

        def run(folder: pathlib.Path) -> Any:
            found = rows_of()
            if not found:
                raise stages.StageError(f"stage {name}: no training rows (its languages: {extra})")
            _write_rows(data / "train.jsonl", found)
            return jobs.get_job("sft")(cfg, str(folder))

        self.add(name, "sft", cfg, inputs, CHECKPOINTS, run, {"rows": extra})
        if model:  # one of the recipe's models (a teacher is not)
            self.models[name] = str(self.folder(name))

    # -- the recipe -----------------------------------------------------------------------------------------

    def _build(self) -> None:
        p = self.p
        base_inputs: tuple[str, ...] = ()
        if p.base:
            base = str(p.base)
            self.models["base"] = base  # evaluated beside the stages' models (no stage of its own)
        else:
            cfg = self.pinned("sft")
            cfg.train.steps = int(p.base_steps)
            self.add("base", "sft", cfg, (), CHECKPOINTS)
            base, base_inputs = str(self.folder("base")), ("base",)
            self.models["base"] = base

        # teachers
        entries, teacher_stages = [], []
        for name, source in self.teachers:
            if source.startswith("@"):
                codes = _codes(source[1:], "teachers")
                stage = f"teacher_{name}"
                self.sft_on(stage, lambda c=codes: [r for r in self.default_rows("train") if _in(r, c)],
                            int(p.teacher_steps), base, base_inputs, source[1:], model=False)  # fmt: skip
                entries.append(f"{name}={self.folder(stage)}")
                teacher_stages.append(stage)
            else:
                entries.append(f"{name}={source}")

        # the reward model
        if p.reward_model:
            reward, reward_inputs = str(p.reward_model), ()
        else:
            cfg = self.pinned("reward")
            cfg.train.steps = int(p.reward_steps)
            cfg.checkpoint.init_from = base
            self.add("reward", "reward", cfg, base_inputs, CHECKPOINTS)
            reward, reward_inputs = str(self.folder("reward")), ("reward",)
        self.reward = reward

        # arbitrage
        cfg = self.pinned("arbitrage")
        cfg.curation.teachers = tuple(entries)
        cfg.curation.routing = str(p.routing)
        cfg.curation.reward_model = reward if p.routing in ("reward", "learned") or reward_inputs else ""
        if p.routing == "learned" and not cfg.curation.embed_checkpoint:
            cfg.curation.embed_checkpoint = base
        pool_file = self.folder("arbitrage") / "pool.jsonl"
        cfg.curation.pool = tuple(p.pool) or (str(pool_file),)

        def run_arbitrage(folder: pathlib.Path, cfg=cfg) -> Any:
            if not p.pool:
                _write_rows(pool_file, self.pool_rows())
            return jobs.get_job("arbitrage")(cfg, str(folder))

        self.add("arbitrage", "arbitrage", cfg, (*teacher_stages, *reward_inputs), DATASET, run_arbitrage,
                 {"pool": "default" if not p.pool else list(p.pool)})  # fmt: skip
        arbitrage_rows = self.folder("arbitrage") / DATASET

        # SFT runs on the arbitrage data, then their merge
        sft_stages = []
        for name, spec in self.sft_runs:
            codes = _codes(spec, "sft_runs")
            stage = f"sft_{name}"
            self.sft_on(stage, lambda c=codes: [r for r in _read_rows(arbitrage_rows) if _in(r, c)],
                        int(p.sft_steps), base, (*base_inputs, "arbitrage"), spec)  # fmt: skip
            sft_stages.append(stage)
            self.previous[stage] = "base"
        cfg = self.pinned("merge")
        cfg.merge.method = str(p.merge_method)
        cfg.merge.models = tuple(self.models[s] for s in sft_stages)
        cfg.merge.weights = tuple(float(w) for w in p.merge_weights)
        if (
            cfg.merge.method in ("task_arithmetic", "ties", "dare_linear", "dare_ties")
            and not cfg.merge.base_model
        ):
            cfg.merge.base_model = base
        self.add("merge_sft", "merge", cfg, (*sft_stages, *base_inputs), MERGED)
        self.models["merge_sft"] = str(self.folder("merge_sft"))
        self.previous["merge_sft"] = sft_stages[-1]

        # preference training
        previous, previous_stage = self.models["merge_sft"], "merge_sft"
        for stage, offline, iterations in (("dpo_offline", int(p.dpo_offline_steps), 0),
                                           ("dpo_online", 0, int(p.dpo_iterations))):  # fmt: skip
            if offline + iterations == 0:
                continue
            cfg = self.pinned("dpo")
            cfg.dpo.offline_steps, cfg.dpo.iterations = offline, iterations
            cfg.dpo.reward_model = reward
            cfg.checkpoint.init_from = previous
            inputs = (previous_stage, *reward_inputs)
            if offline and p.routing in ("reward", "learned"):  # the arbitrage replies ranked by the scorer
                cfg.dpo.default_pairs = False
                cfg.data.preference_dir = str(self.folder("arbitrage") / PAIRS)
                cfg.data.eval_split = "train"  # one file of pairs; DPO evaluates on its own held-out prompts
                inputs = (*inputs, "arbitrage")
            self.add(stage, "dpo", cfg, inputs, CHECKPOINTS)
            self.previous[stage] = previous_stage
            previous, previous_stage = str(self.folder(stage)), stage
            self.models[stage] = previous
        cfg = self.pinned("merge")
        cfg.merge.method = "linear"
        cfg.merge.models = (previous, self.models["merge_sft"])
        cfg.merge.weights = tuple(float(w) for w in p.final_merge_weights)
        self.add("merge_final", "merge", cfg, (previous_stage, "merge_sft"), MERGED)
        self.models["merge_final"] = str(self.folder("merge_final"))
        self.previous["merge_final"] = previous_stage
        self._evaluations(reward, reward_inputs)

    def _evaluations(self, reward: str, reward_inputs: tuple[str, ...]) -> None:
        p, names = self.p, {s.name for s in self.stages}

        # every model's per-language loss on the held-out rows
        held_out = self.folder("eval_rows.jsonl")
        for model, checkpoint in self.models.items():
            cfg = self.pinned("eval_perplexity")
            cfg.eval.checkpoint = checkpoint
            cfg.eval.texts = str(p.eval_rows or held_out)
            cfg.eval.text_field = "targets"
            cfg.eval.max_texts = int(p.eval_rows_per_language)

            def run_eval(folder: pathlib.Path, cfg=cfg) -> Any:
                if not p.eval_rows:
                    _write_rows(held_out, self.eval_rows())
                return jobs.get_job("eval_perplexity")(cfg, str(folder))

            inputs = (model,) if model in names else ()
            self.add(f"eval_{model}", "eval_perplexity", cfg, inputs, PERPLEXITY, run_eval)
            if p.global_mmlu:
                cfg = self.pinned("eval_global_mmlu")
                cfg.eval.checkpoint = checkpoint
                cfg.eval.data_dir = str(p.global_mmlu)
                self.add(f"global_mmlu_{model}", "eval_global_mmlu", cfg, inputs, GLOBAL_MMLU)

        # win rates: every two models judged on the same questions
        questions = self.folder("eval_questions")
        cfg = self.pinned("eval_win_rate")
        cfg.eval.questions = tuple(p.questions) or (str(questions),)
        cfg.eval.models = tuple(f"{m}={c}" for m, c in self.models.items())
        cfg.eval.baseline = str(p.baseline or "base")
        cfg.eval.every_pair = True
        cfg.eval.judge = str(p.judge)
        if p.judge == "reward":
            cfg.eval.reward_model = reward
        if cfg.eval.baseline not in self.models:
            raise defaults.ConfigError(
                f"config.pipeline.baseline: {cfg.eval.baseline!r} is none of the models {list(self.models)}"
            )

        def run_win_rate(folder: pathlib.Path, cfg=cfg) -> Any:
            if not p.questions:
                by_language: dict[str, list[dict[str, Any]]] = {}
                for r in self.eval_rows():
                    kept = by_language.setdefault(str(r["language_code"]), [])
                    if len(kept) < int(p.eval_questions_per_language):
                        kept.append({"question_id": f"q{len(kept)}", "prompt": r["inputs"]})
                for language, kept in by_language.items():
                    _write_rows(questions / f"questions_{language}.jsonl", kept)
            return jobs.get_job("eval_win_rate")(cfg, str(folder))

        model_stages = tuple(m for m in self.models if m in names)
        self.add("win_rates", "eval_win_rate", cfg, (*model_stages, *reward_inputs), WIN_RATE, run_win_rate)

        # the reward model on M-RewardBench, when its data is given
        if p.m_rewardbench:
            cfg = self.pinned("eval_m_rewardbench")
            cfg.eval.reward_model = reward
            cfg.eval.data_dir = str(p.m_rewardbench)
            self.add("m_rewardbench", "eval_m_rewardbench", cfg, reward_inputs, M_REWARDBENCH)

    # -- the miniature's data -------------------------------------------------------------------------------

    def default_rows(self, split: str) -> list[dict[str, Any]]:
        default_data.ensure_default_data(self.config.data)
        return _read_rows(default_data.dataset_dir(self.config.data) / default_data.SPLIT_FILES[split])

    def teacher_codes(self) -> set[str] | None:
        codes: set[str] = set()
        for _, source in self.teachers:
            if not source.startswith("@"):
                return None
            codes |= _codes(source[1:], "teachers") or set()
        return codes or None

    def pool_rows(self) -> list[dict[str, Any]]:
        """The last pool_per_language train rows of each teacher language (the rows a base saw least lately)."""
        codes, per = self.teacher_codes(), int(self.p.pool_per_language)
        counts: dict[str, int] = {}
        out = []
        for r in reversed(self.default_rows("train")):
            code = str(r.get("language_code"))
            if _in(r, codes) and counts.get(code, 0) < per:
                counts[code] = counts.get(code, 0) + 1
                out.append(r)
        return out[::-1]

    def eval_rows(self) -> list[dict[str, Any]]:
        codes = self.teacher_codes()
        return [r for r in self.default_rows("validation") if _in(r, codes)]


# ============================================================================================================
# The report
# ============================================================================================================


def _loss_figures(path: pathlib.Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    r = json.loads(path.read_text(encoding="utf-8"))
    micro = r["overall"]["micro"]
    return {
        "nll": micro["nll"], "perplexity": micro["perplexity"], "bits_per_byte": micro["bits_per_byte"],
        "languages": {g: v["nll"] for g, v in r["languages"].items()},
    }  # fmt: skip


def _evals(run: str | pathlib.Path, key: str) -> list[dict[str, Any]]:
    """The "eval" rows of a training run's metrics.jsonl that carry `key`, in order ([] before it has any)."""
    path = pathlib.Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for _, r in rows.read_rows(path) if r.get("kind") == "eval" and key in r]


def _dpo_reward(folder: pathlib.Path) -> dict[str, Any] | None:
    """The reward model's mean score of the DPO run's held-out samples: first evaluation (before training), last."""
    evals = _evals(folder, "score")
    if not evals:
        return None
    return {"before": evals[0]["score"], "after": evals[-1]["score"], "kl": evals[-1].get("kl")}


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _win_rates(plan: Plan) -> dict[str, dict[str, Any]]:
    """{model: {"vs_baseline", "vs_previous": the overall win rate with its interval}} from the win-rate stage's
    results and its judgments (every two models were judged, so any pair's win rate can be read off)."""
    folder = plan.folder("win_rates") / "win_rate"
    results = _read_json(folder / "results.json")
    if results is None or "win_rates" not in results:
        return {}
    played, unparsed = battles.battles_from_judgments(
        [r for _, r in rows.read_rows(folder / "judgments.jsonl")]
    )
    options = {
        "rounds": int(results["rounds"]),
        "confidence": float(results["confidence"]),
        "seed": int(results["seed"]),
    }
    out: dict[str, dict[str, Any]] = {}
    for model in plan.models:
        entry: dict[str, Any] = {}
        if model in results["win_rates"]:
            entry["vs_baseline"] = results["win_rates"][model]["overall"]
        opponent = plan.previous.get(model)
        if opponent is not None:
            entry["vs_previous"] = {"opponent": opponent,
                                    **battles.win_rate(played, model, opponent, unparsed=unparsed, **options).as_dict()}  # fmt: skip
        out[model] = entry
    return out


def _reward_accuracy(plan: Plan) -> dict[str, Any] | None:
    """The reward model's M-RewardBench average (when its data was given), else its run's last held-out pairwise
    accuracy (ties count 1/2 there; M-RewardBench counts them wrong)."""
    bench = _read_json(plan.folder("m_rewardbench") / M_REWARDBENCH)
    if bench is not None:
        return {"source": "M-RewardBench average", "average": bench["average"], "english": bench["english"]}
    evals = _evals(plan.reward, "accuracy")
    if not evals:
        return None
    return {
        "source": "the reward run's held-out pairs",
        "accuracy": evals[-1]["accuracy"],
        "step": evals[-1]["step"],
    }


def collect(plan: Plan, outcomes: list[stages.Outcome]) -> dict[str, Any]:
    done = {o.stage: o for o in outcomes}
    out: dict[str, Any] = {"stages": [], "models": {}, "baseline": str(plan.p.baseline or "base")}
    for s in plan.stages:
        folder = plan.folder(s.name)
        record = stages.read_record(folder)
        o = done.get(s.name)
        out["stages"].append({
            "stage": s.name, "job": s.job, "artefact": str(folder / s.artefact),
            "action": o.action if o else "not chosen", "reason": o.reason if o else "",
            "state": record["state"] if record else "not run", "seconds": (record or {}).get("seconds"),
        })  # fmt: skip
    for model in plan.models:
        figures: dict[str, Any] = {"checkpoint": plan.models[model]}
        loss = _loss_figures(plan.folder(f"eval_{model}") / PERPLEXITY)
        if loss:
            figures["loss"] = loss
        if model.startswith("dpo_"):
            figures["dpo_reward"] = _dpo_reward(plan.folder(model))
        gm = _read_json(plan.folder(f"global_mmlu_{model}") / GLOBAL_MMLU)
        if gm is not None:
            figures["global_mmlu"] = {k: gm["overall"]["macro"].get(k) for k in ("all", "CS", "CA")}
        out["models"][model] = figures
    for model, rates in _win_rates(plan).items():
        out["models"][model]["win_rate"] = rates
    out["reward_model"] = {"checkpoint": plan.reward, **(_reward_accuracy(plan) or {})}
    return out


def _interval(d: dict[str, Any]) -> str:
    if not isinstance(d, dict) or d.get("mean") is None:
        return "—"
    return f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def model_table(results: dict[str, Any]) -> str:
    """Every model's figures side by side (the report's main table and the end-of-run summary)."""
    models = results["models"]
    gm = any("global_mmlu" in m for m in models.values())
    table = []
    for name, m in models.items():
        loss, dpo, wins = m.get("loss", {}), m.get("dpo_reward") or {}, m.get("win_rate", {})
        previous = wins.get("vs_previous", {})
        table.append((name, _interval(loss.get("nll")), _interval(loss.get("perplexity")),
                     _interval(wins.get("vs_baseline", {}).get("win_rate")),
                     f"{_interval(previous.get('win_rate'))} vs {previous['opponent']}" if previous else "—",
                     *[_interval(m.get("global_mmlu", {}).get(k)) for k in ("CS", "CA")] * bool(gm),
                     dpo.get("before"), dpo.get("after")))  # fmt: skip
    headers = ["stage", "loss", "perplexity", f"win rate vs {results.get('baseline', 'baseline')}",
               "win rate vs previous", *["Global-MMLU CS", "Global-MMLU CA"] * bool(gm), "reward before",
               "reward after"]  # fmt: skip
    return report.table(headers, table)


def markdown(results: dict[str, Any]) -> str:
    models = results["models"]
    langs = sorted({g for m in models.values() for g in m.get("loss", {}).get("languages", {})})
    lines = ["# Aya Expanse recipe", "", "Every model on the same held-out rows (loss in nats per token; lower is "
             "better) and the same questions (win rates: the judge's verdicts over both orders of every two "
             "models' answers), each with a 95% bootstrap interval. DPO stages also show the reward model's mean "
             "score of their held-out samples before and after training.", "", model_table(results)]  # fmt: skip
    rm = results.get("reward_model", {})
    if "average" in rm:
        lines += ["", f"Reward model ({rm['checkpoint']}): M-RewardBench average {_interval(rm['average'])}."]
    elif "accuracy" in rm:
        lines += ["", f"Reward model ({rm['checkpoint']}): held-out pairwise accuracy {rm['accuracy']:.3f} "
                  f"(its run's held-out pairs, step {rm['step']}; ties count 1/2)."]  # fmt: skip
    lines += ["", "![held-out loss per stage and language](stages.png)"]
    if langs:
        lines += ["", "Per-language loss (point estimates):", "",
                  report.table(["stage", *langs], [(n, *(m.get("loss", {}).get("languages", {}).get(g, {}).get("mean")
                                                         for g in langs)) for n, m in models.items()])]  # fmt: skip
    lines += ["", "## Stages", "", report.table(
        ["stage", "job", "this run", "why", "seconds", "artefact"],
        [(s["stage"], s["job"], s["action"], s["reason"], s["seconds"], s["artefact"]) for s in results["stages"]])]  # fmt: skip
    return "\n".join(lines) + "\n"


def run(config: Any, workdir: str) -> report.EvalSummary:
    t0 = time.perf_counter()
    defaults.validate(config, ("pipeline",))
    root = pathlib.Path(workdir)
    out = report.output_dir(workdir, "report")
    plan = Plan(config, root)
    if jax.process_index() == 0:
        print("aya_expanse: stages " + " -> ".join(s.name for s in plan.stages))

    def announce(d: stages.Decision) -> None:
        if jax.process_index() == 0:
            print(f"  [{d.action:>6}] {d.stage}: {d.reason}", flush=True)

    outcomes = stages.run_stages(plan.stages, root, only=tuple(config.pipeline.stages),
                                 redo=tuple(config.pipeline.redo), share=sharding.on_first_process,
                                 announce=announce)  # fmt: skip
    results = collect(plan, outcomes)
    final = results["models"].get("merge_final", {}).get("loss", {}).get("nll")
    ran = sum(o.action != "skip" for o in outcomes)
    headline = (f"{len(outcomes)} stages ({ran} run, {len(outcomes) - ran} skipped); final merge held-out loss "
                f"{_interval(final)}")  # fmt: skip
    text = markdown(results)
    if jax.process_index() == 0:
        print(model_table(results))
        (root / "report.md").write_text(
            text.replace("](stages.png)", "](report/stages.png)"), encoding="utf-8"
        )
    summary = report.finish(
        "aya_expanse", out, results, text, headline, t0,
        lambda d: {"stages": plots.recipe_stages(results, d / "stages.png")}, True,
    )  # fmt: skip
    if jax.process_index() == 0:
        print(f"  {'report':<12} {root / 'report.md'}")
    return summary
