"""The data-curation jobs (aya_jax/curation/): results in `<workdir>/<job>/`, the chosen rows as the Aya Dataset
in `dataset/train-00000-of-00001.jsonl` (SFT reads it with `--config.data.task=aya_dataset
--config.data.aya_dataset_dir=<that folder>`), results.json / results.md and PNGs beside it.

    python -m aya_jax.main --config configs/select_diverse.py --config.curation.pool="('/data/pool.jsonl',)" \\
        --config.curation.embed_checkpoint=/ckpt/aya-expanse-8b --config.curation.clusters=1024 \\
        --config.curation.budget=0.1

`select_diverse` (diversity-first selection, arXiv 2409.11378; aya_jax/curation/diversity.py): the pool's rows
are embedded (a model's mean-pooled final hidden states, or vectors from a .npy file), clustered by k-means on
the mesh, and the budget is spent across the clusters — uniformly inside each, or by softmax of a quality field.
The chosen rows keep every field plus `cluster` and `source` (the pool file and row); `selected_ids.json` lists
them. Embeddings are written `part_rows` rows per file as they are made (`embeddings/part-*.npy`, each written
whole or not at all) and the clustering is kept (`kmeans.npz`); `embeddings/source.json` records which pool texts
and which model made them, so that another pool or model in the same workdir stops with one line rather than
mixing the two. With `rounds > 1` (the iterative variant) each round but the last fine-tunes a model on the rows
selected so far (the sft job, through the job registry, in `round_<r>/sft`), has it answer the round's prompts,
scores gold and generated answers with a reward model and weights the next round's clusters by the gaps.

`arbitrage` (arXiv 2408.14960; aya_jax/curation/arbitrage.py) and `active_inheritance` (arXiv 2407.01490;
aya_jax/curation/attributes.py) ask a teacher pool (aya_jax/curation/teachers.py) for replies to the pool's
prompts: the teacher each prompt is routed to, or k replies per teacher of which the best by an attribute
objective is kept. Replies are logged per teacher (`generations/<teacher>/samples.jsonl`, with the options and
pool they belong to in `source.json`), scores in `scores.jsonl`; teachers are loaded one at a time, and one whose
log is complete is not loaded at all. The rows written: the prompt, the chosen reply as `targets`, the prompt's
language, `annotation_type` (arbitrage-<routing> / active-inheritance), the teacher as `user_id` and `teacher`,
`source`, the pool row's own targets as `pool_targets`, and the reply's score or attribute values. Where every
teacher answered and was scored (reward / learned routing), each prompt's best and worst replies are also written
as preference pairs (`preference/`: prompt, chosen, rejected, language_code, the two teachers and the margin),
which DPO reads with `--config.dpo.default_pairs=False --config.data.preference_dir=<that folder>`.

With `config.curation.judge` set, reward and learned routing pick each prompt's teacher by a pairwise judge's
round robin of the replies (judgments kept in `judgments.jsonl`, asked only for what it lacks) instead of a
reward model's scores.

The pool is read and checked (every file, every row's text and language) before any model is loaded; every host
runs the same SPMD computation (in-process teachers, embeddings, reward scores) and process 0 writes. Endpoint
teachers and judges are asked by process 0 alone, which shares their replies with the other hosts."""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import importlib
import json
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from aya_jax import curation, defaults, jobs, plots, pretrained, sampling, sharding
from aya_jax.curation import arbitrage, attributes, clustering, diversity, teachers
from aya_jax.data import languages, pipeline
from aya_jax.data.sources import DataError
from aya_jax.evaluation import judges, likelihood, report, reward_scores, rows, stats

SECTIONS = ("model", "mesh", "data", "curation")


@dataclasses.dataclass(frozen=True)
class Pool:
    rows: list[dict[str, Any]]
    where: list[str]  # "file:row" of each
    texts: list[str]


def read_pool(files: Any, text_field: str) -> Pool:
    """Every row of the pool files with a non-empty text; DataError naming file:row otherwise."""
    found: list[dict[str, Any]] = []
    where: list[str] = []
    for path in files:
        if not pathlib.Path(path).is_file():
            raise DataError(f"config.curation.pool: {path} is not a file")
        for number, row in rows.read_rows(path):
            found.append(row)
            where.append(f"{path}:{number}")
    if not found:
        raise DataError(f"config.curation.pool: no rows in {', '.join(map(str, files))}")
    return Pool(found, where, texts_of(found, where, text_field, "config.curation.text_field"))


def texts_of(found: list[dict[str, Any]], where: list[str], field: str, config_field: str) -> list[str]:
    """Every row's text `field`; DataError naming the row's file:row and the config field otherwise."""
    out = []
    for row, at in zip(found, where, strict=True):
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{at}: {field!r} ({config_field}) is missing or empty")
        out.append(text)
    return out


def _fingerprint(texts: list[str], source: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return {**source, "rows": len(texts), "texts_sha256": digest.hexdigest()}


def _write_atomic(path: pathlib.Path, write) -> None:
    """`write(file)` into a temporary file, then renamed over `path`: the file is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _claim_folder(folder: pathlib.Path, identity: dict[str, Any], what: str) -> None:
    """`folder/source.json` says which inputs made the folder's files: created if absent, else it must match."""
    record = folder / "source.json"
    if record.exists():
        held = json.loads(record.read_text())
        if held != identity:
            changed = sorted(k for k in set(held) | set(identity) if held.get(k) != identity.get(k))
            raise ValueError(
                f"{folder}: holds {what} of other inputs ({', '.join(changed)} differ); use another --workdir "
                f"or remove {folder}"
            )
        return
    if jax.process_index() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(record, lambda f: f.write(json.dumps(identity, indent=1).encode()))


def embeddings(config: Any, pool: Pool, out: pathlib.Path, mesh, rules) -> tuple[np.ndarray, int]:
    """(vectors [rows, dim] float32, rows embedded by this run) — from the .npy file, or made part by part."""
    c = config.curation
    if c.vectors:
        try:
            vectors = np.load(c.vectors, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"config.curation.vectors: {c.vectors}: not a readable .npy file ({e})") from None
        if vectors.ndim != 2 or vectors.shape[0] != len(pool.rows):
            raise DataError(
                f"config.curation.vectors: {c.vectors} holds {vectors.shape}, not [{len(pool.rows)} rows, dim] "
                "(one vector per pool row, in pool order)"
            )
        return np.asarray(vectors, np.float32), 0
    folder = out / "embeddings"
    source = {"embed_checkpoint": str(c.embed_checkpoint), "tokenizer": str(c.tokenizer),
              "max_length": int(c.max_length), "text_field": str(c.text_field)}  # fmt: skip
    _claim_folder(folder, _fingerprint(pool.texts, source), "embeddings")
    size = int(c.part_rows)
    parts = [folder / f"part-{i:05d}.npy" for i in range(math.ceil(len(pool.texts) / size))]
    missing = [i for i, part in enumerate(parts) if not part.exists()]
    made = 0
    if missing:
        model = likelihood.TextModel.from_checkpoint(
            str(c.embed_checkpoint), config.model, config.data, mesh, rules, tokenizer=str(c.tokenizer),
            batch_size=int(c.batch_size), max_length=int(c.max_length), field="config.curation.embed_checkpoint",
        )  # fmt: skip
        todo = sum(len(pool.texts[i * size : (i + 1) * size]) for i in missing)
        with report.progress(todo, "row", "embeddings") as bar:
            for i in missing:
                vectors = model.embed(pool.texts[i * size : (i + 1) * size], progress=bar.update)
                if jax.process_index() == 0:
                    _write_atomic(parts[i], lambda f, v=vectors: np.save(f, v))
                made += len(vectors)
        del model
    return np.concatenate([np.load(part) for part in parts]), made


def _clusters(
    config: Any, vectors: np.ndarray, out: pathlib.Path, mesh, rules
) -> tuple[clustering.KMeans, bool]:
    """(the k-means result, whether this run computed it): kept in kmeans.npz for the same vectors and options."""
    c = config.curation
    k = int(c.clusters)
    options = {"clusters": k, "iterations": int(c.kmeans_iterations), "init": str(c.kmeans_init),
               "restarts": int(c.kmeans_restarts), "sample_per_centroid": int(c.sample_per_centroid),
               "seed": int(config.seed), "vectors_sha256": hashlib.sha256(vectors.tobytes()).hexdigest()}  # fmt: skip
    path = out / "kmeans.npz"
    if path.exists():
        with np.load(path) as held:
            if json.loads(str(held["options"])) == options:
                result = clustering.KMeans(
                    centroids=held["centroids"], assignments=held["assignments"], distances=held["distances"],
                    inertia=float(held["inertia"]), iterations=int(held["iterations"]),
                    converged=bool(held["converged"]),
                )  # fmt: skip
                return result, False
    result = clustering.kmeans(
        vectors, k, iterations=options["iterations"], init=options["init"], restarts=options["restarts"],
        sample_per_centroid=options["sample_per_centroid"] or None, seed=options["seed"], mesh=mesh, rules=rules,
    )  # fmt: skip
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, lambda f: np.savez(
            f, centroids=result.centroids, assignments=result.assignments, distances=result.distances,
            inertia=result.inertia, iterations=result.iterations, converged=result.converged,
            options=json.dumps(options, sort_keys=True),
        ))  # fmt: skip
    return result, True


def _quality(pool: Pool, field: str) -> np.ndarray:
    values = np.zeros(len(pool.rows), np.float64)
    for i, row in enumerate(pool.rows):
        value = row.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DataError(
                f"{pool.where[i]}: config.curation.quality_field {field!r} is {value!r}, not a number"
            )
        values[i] = value
    return values


def _language(row: dict[str, Any]) -> str:
    code = str(row.get("language_code") or row.get("language") or "")
    known = languages.maybe_resolve(code) if code else None
    return known.code if known else (code or "unknown")


def select_diverse(config: Any, workdir: str) -> report.EvalSummary:
    """Diversity-first selection of config.curation.budget rows of the pool (module docstring)."""
    defaults.validate(config, SECTIONS)
    c, t0 = config.curation, time.perf_counter()
    out = report.output_dir(workdir, "select_diverse")
    pool = read_pool(tuple(c.pool), str(c.text_field))
    scores = _quality(pool, str(c.quality_field)) if c.within == "quality" else None
    budget = int(round(c.budget * len(pool.rows))) if c.budget <= 1 else int(c.budget)
    if c.clusters > len(pool.rows):
        raise ValueError(f"config.curation.clusters: {c.clusters} clusters for {len(pool.rows)} pool rows")
    mesh, rules = sharding.setup(config.mesh)
    vectors, embedded = embeddings(config, pool, out, mesh, rules)
    if not np.all(np.isfinite(vectors)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(vectors), axis=1))[0])
        raise DataError(f"{pool.where[bad]}: its vector is not finite")
    km, clustered = _clusters(config, vectors, out, mesh, rules)
    k = len(km.centroids)
    rounds: list[dict[str, Any]] = []
    made = Made()
    if int(c.rounds) > 1:
        picked = _iterate(config, out, pool, km.assignments, k, scores, budget, rounds, made, mesh, rules)
    else:
        picked = diversity.select(km.assignments, budget, k=k, scores=scores, temperature=float(c.temperature),
                                  seed=int(config.seed))  # fmt: skip
    stats = diversity.cluster_stats(km.assignments, picked, k, scores)
    per_language: dict[str, dict[str, int]] = {}
    chosen = set(picked.tolist())
    for i, row in enumerate(pool.rows):
        counts = per_language.setdefault(_language(row), {"pool": 0, "selected": 0})
        counts["pool"] += 1
        counts["selected"] += i in chosen
    dataset = write_dataset(
        out, [{**pool.rows[i], "cluster": int(km.assignments[i]), "source": pool.where[i]} for i in picked]
    ).parent
    if jax.process_index() == 0:
        (out / "selected_ids.json").write_text(json.dumps([pool.where[i] for i in picked], indent=0))
    results: dict[str, Any] = {
        "pool_rows": len(pool.rows), "budget": budget, "selected": len(picked), "clusters": k,
        "within": str(c.within), "quality_field": str(c.quality_field), "embedded_now": embedded,
        "embedded_before": 0 if c.vectors else len(pool.rows) - embedded, "clustered_now": clustered,
        "inertia": km.inertia, "kmeans_iterations": km.iterations, "kmeans_converged": km.converged,
        "per_language": per_language,
        "cluster_size": stats.size.tolist(), "cluster_selected": stats.selected.tolist(),
        "empty_clusters": int(np.sum(stats.size == 0)),
        "dataset": str(dataset / curation.ROWS),
    }  # fmt: skip
    if scores is not None:
        results["mean_quality"] = {"pool": float(scores.mean()), "selected": float(scores[picked].mean())}
    if rounds:
        results["rounds"] = rounds
        results["generated_now"] = made.generated
        results["generation"] = made.per_teacher
    headline = (
        f"{len(picked)} of {len(pool.rows)} rows from {k} clusters (sizes {int(stats.size.min())}-"
        f"{int(stats.size.max())}) -> {dataset / curation.ROWS}; embedded now {embedded}"
    )
    return report.finish(
        "select_diverse", out, results, _markdown(results), headline, t0,
        lambda d: {"clusters": plots.cluster_selection(results, d / "clusters.png")}, bool(c.plot),
    )  # fmt: skip


def _gold_or_generated(
    gold: list[str], samples: Callable[[int, str], list[str]], i: int, teacher: str
) -> list[str]:
    return [gold[i]] if teacher == "gold" else samples(i, teacher)


def _finetune(config: Any, folder: pathlib.Path, dataset: pathlib.Path) -> pathlib.Path:
    """The sft job on `dataset` (Aya Dataset rows) from config.curation.finetune_from for finetune_steps, in
    `folder`; a finished run is not trained again (the sft job resumes from its checkpoints). The vocabulary is
    the starting model's: its path is pinned so that the new data does not train another one."""
    c = config.curation
    sft = jobs.config_for(config, "sft", pipeline.trained_vocab(config.data))
    sft.data.task = "aya_dataset"
    sft.data.aya_dataset_dir = str(dataset.parent)
    sft.data.eval_split = "train"  # the selection is one train file
    sft.train.steps = int(c.finetune_steps)
    sft.checkpoint.init_from = str(c.finetune_from or c.embed_checkpoint)
    jobs.get_job("sft")(sft, str(folder))
    return folder


def _iterate(
    config: Any, out: pathlib.Path, pool: Pool, assignments: np.ndarray, k: int, scores: np.ndarray | None,
    budget: int, rounds: list[dict[str, Any]], made: Made, mesh, rules,
) -> np.ndarray:  # fmt: skip
    """The iterative variant (aya_jax/curation/diversity.py): round r selects its share of the budget by the
    cluster weights (uniform in round 1); after every round but the last, the model fine-tuned on all rows
    selected so far answers the round's prompts, the reward model scores gold and generated answers, and the
    clusters' mean gaps weight the next round. Each round's files are in <out>/round_<r>/; a rerun redoes
    nothing finished (the sft run resumes, the replies and scores are logs)."""
    c = config.curation
    gold = texts_of(pool.rows, pool.where, str(c.gold_field), "config.curation.gold_field")
    taken = np.zeros(len(pool.rows), bool)
    weights = None
    budgets = diversity.round_budgets(budget, int(c.rounds))
    for r, share in enumerate(budgets, start=1):
        picked = diversity.select(assignments, share, k=k, weights=weights, scores=scores,
                                  temperature=float(c.temperature), exclude=taken, seed=int(config.seed) + r - 1)  # fmt: skip
        taken[picked] = True
        record: dict[str, Any] = {"round": r, "budget": share, "selected": len(picked),
                                  "weights": None if weights is None else weights.tolist()}  # fmt: skip
        rounds.append(record)
        if r == len(budgets):
            break
        folder = out / f"round_{r}"
        so_far = np.flatnonzero(taken)
        dataset = write_dataset(folder, [{**pool.rows[i], "cluster": int(assignments[i]), "source": pool.where[i]}
                                         for i in so_far])  # fmt: skip
        model = _finetune(config, folder / "sft", dataset)
        spec = teachers.TeacherSpec(
            name=f"round_{r}", source=str(model), template=str(c.template), system=str(c.system),
            temperature=float(c.sample_temperature), top_k=int(c.top_k), top_p=float(c.top_p),
            max_new_tokens=int(c.max_new_tokens),
        )  # fmt: skip
        logs = generate_replies(config, folder, pool, [spec], {0: picked.tolist()}, 1, made, mesh, rules)
        samples = _samples(pool, logs)
        pairs = [(int(i), t) for i in picked for t in ("gold", spec.name)]
        answer = functools.partial(_gold_or_generated, gold, samples)
        rewards = score_replies(config, folder, pool, pairs, answer, mesh, rules)
        r_gold = np.array([rewards[(int(i), "gold")][0] for i in picked])
        r_gen = np.array([rewards[(int(i), spec.name)][0] for i in picked])
        weights, gaps = diversity.cluster_weights(assignments[picked], r_gold, r_gen, k,
                                                  temperature=float(c.weight_temperature))  # fmt: skip
        record.update({"sft": str(model), "mean_reward_gold": float(r_gold.mean()),
                       "mean_reward_generated": float(r_gen.mean()), "mean_gap": float((r_gold - r_gen).mean()),
                       "cluster_gaps": gaps.tolist()})  # fmt: skip
    return np.flatnonzero(taken)


def _markdown(results: dict[str, Any]) -> str:
    rows_ = [
        (lang, v["pool"], v["selected"], f"{100 * v['selected'] / v['pool']:.1f}%")
        for lang, v in sorted(results["per_language"].items())
    ]
    sizes = np.asarray(results["cluster_size"])
    lines = [
        "# Diversity-first selection",
        "",
        f"{results['selected']} of {results['pool_rows']} rows (budget {results['budget']}), {results['clusters']} "
        f"clusters (k-means inertia {results['inertia']:.4g}, {results['kmeans_iterations']} iterations; sizes "
        f"median {np.median(sizes):g}, {results['empty_clusters']} empty), within clusters: {results['within']}.",
        "",
        report.table(["language", "pool", "selected", "share"], rows_),
    ]
    if "mean_quality" in results:
        q = results["mean_quality"]
        lines += ["", f"Mean {results['quality_field']}: pool {q['pool']:.4g}, selected {q['selected']:.4g}."]
    if "rounds" in results:
        table = [
            (r["round"], r["budget"], r["selected"], "uniform" if r["weights"] is None else f"{min(r['weights']):.3f}",
             "uniform" if r["weights"] is None else f"{max(r['weights']):.3f}", r.get("mean_reward_gold"),
             r.get("mean_reward_generated"), r.get("mean_gap"))
            for r in results["rounds"]
        ]  # fmt: skip
        lines += ["", "Rounds (weights of this round's clusters; rewards of the model fine-tuned after it):", "",
                  report.table(["round", "budget", "selected", "min weight", "max weight", "r(gold)",
                                "r(generated)", "mean gap"], table)]  # fmt: skip
    return "\n".join(lines) + "\n"


# ============================================================================================================
# Teachers: replies generated once, kept in <out>/generations/<teacher>/samples.jsonl
# ============================================================================================================


def _teacher_specs(c: Any) -> list[teachers.TeacherSpec]:
    try:
        return teachers.parse(
            tuple(c.teachers), "config.curation.teachers", template=str(c.template), system=str(c.system),
            temperature=float(c.sample_temperature), top_k=int(c.top_k), top_p=float(c.top_p),
            max_new_tokens=int(c.max_new_tokens),
        )  # fmt: skip
    except ValueError as e:
        raise defaults.ConfigError(str(e)) from None


def _teacher_job(config: Any, workdir: str, name: str):
    """(config.curation, the output folder, the pool, its languages, the teachers) of a job asking teachers,
    every input checked before any model loads."""
    defaults.validate(config, SECTIONS)
    c = config.curation
    out = report.output_dir(workdir, name)
    pool = read_pool(tuple(c.pool), str(c.text_field))
    return c, out, pool, prompt_languages(pool, str(c.language_field)), _teacher_specs(c)


def prompt_languages(pool: Pool, field: str) -> list[str]:
    """Each prompt's language code (ISO 639-1 where it has one); DataError naming file:row otherwise."""
    out = []
    for row, where in zip(pool.rows, pool.where, strict=True):
        value = row.get(field)
        known = languages.maybe_resolve(value) if isinstance(value, str) else None
        if known is None:
            raise DataError(
                f"{where}: {field} {value!r} is not a known language (config.curation.language_field)"
            )
        out.append(known.code)
    return out


@dataclasses.dataclass
class Made:
    """What generating cost: per teacher, prompts generated now / read from the log, tokens, seconds."""

    per_teacher: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def add(self, teacher: str, generated: int, read: int, tokens: int, seconds: float) -> None:
        row = self.per_teacher.setdefault(
            teacher, {"generated": 0, "read": 0, "new_tokens": 0, "seconds": 0.0}
        )
        row["generated"] += generated
        row["read"] += read
        row["new_tokens"] += tokens
        row["seconds"] = round(row["seconds"] + seconds, 3)

    @property
    def generated(self) -> int:
        return int(sum(v["generated"] for v in self.per_teacher.values()))


def _teacher_log(out: pathlib.Path, spec: teachers.TeacherSpec, pool: Pool, k: int) -> rows.KeyedLog:
    folder = out / "generations" / spec.name
    _claim_folder(
        folder, _fingerprint(pool.texts, {**spec.sampling(), "samples": k}), f"teacher {spec.name}'s replies"
    )
    return rows.KeyedLog(folder / "samples.jsonl", writer=jax.process_index() == 0)


def generate_replies(
    config: Any, out: pathlib.Path, pool: Pool, specs: list[teachers.TeacherSpec], assigned: dict[int, list[int]],
    k: int, made: Made, mesh, rules,
) -> dict[str, rows.KeyedLog]:  # fmt: skip
    """k replies of teacher t to each prompt of assigned[t] that its log lacks. Teachers are loaded one at a
    time (a local one freed before the next loads); one whose log is complete is not loaded at all."""
    c = config.curation
    logs = {}
    for t, spec in enumerate(specs):
        log_ = logs[spec.name] = _teacher_log(out, spec, pool, k)
        index = assigned.get(t, [])
        keys = [pool.where[i] for i in index]
        todo = teachers.missing(log_, keys)
        if not todo:
            if index:
                made.add(spec.name, 0, len(index), 0, 0.0)
            continue
        t0 = time.perf_counter()
        if spec.is_endpoint:
            client = teachers.EndpointTeacher(spec)
            generate = lambda p, r, w, client=client: client(p, r, k, w)  # noqa: E731
        else:
            client = pretrained.chat_model(
                spec.source, config.model, config.data, mesh, rules,
                lambda eos, s=spec: sampling.SamplingParams(
                    max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                    eos_ids=eos,
                ),
                tokenizer=spec.tokenizer, field=f"config.curation.teachers ({spec.name})", template=spec.template,
                batch_size=int(c.gen_batch) * k, seed=int(config.seed),
            )  # fmt: skip
            generate = lambda p, r, w, client=client, s=spec: teachers.chat_samples(client, p, r, k, s.system)  # noqa: E731
        with report.progress(todo, "prompt", f"teacher {spec.name}") as bar:
            try:
                generated = teachers.fill(log_, spec.name, keys, [pool.texts[i] for i in index], index, k, generate,
                                          chunk=int(c.gen_batch), whole_chunks=not spec.is_endpoint,
                                          progress=bar.update)  # fmt: skip
            except teachers.TeacherError as e:
                raise teachers.TeacherError(
                    f"{e}; the {len(log_)} prompts answered so far are kept in {log_.path}"
                ) from None
        made.add(
            spec.name, generated, len(index) - generated, int(client.new_tokens), time.perf_counter() - t0
        )
        del client, generate
        gc.collect()  # the next teacher's weights replace this one's
    return logs


def _reward(config: Any, mesh, rules) -> reward_scores.ClassifierReward:
    c = config.curation
    prompt_len = int(c.reward_prompt_len) or int(defaults.base_config().reward.prompt_len)
    return reward_scores.classifier_reward_of_run(
        str(c.reward_model), "config.curation.reward_model", mesh=mesh, rules=rules, prompt_len=prompt_len,
        seq_len=int(config.data.seq_len), chat=config.data.format != "raw", batch_size=int(c.batch_size),
    )  # fmt: skip


def score_replies(
    config: Any, out: pathlib.Path, pool: Pool, pairs: list[tuple[int, str]],
    replies: Callable[[int, str], list[str]], mesh, rules,
) -> dict[tuple[int, str], list[float]]:  # fmt: skip
    """The reward model's score of every reply `replies(prompt number, teacher)` for the (prompt, teacher) pairs;
    scores are kept in <out>/scores.jsonl (keyed by reward model, prompt and teacher) and only missing ones
    computed."""
    c = config.curation
    log_ = rows.KeyedLog(out / "scores.jsonl", writer=jax.process_index() == 0)

    def key(i: int, teacher: str) -> str:
        return json.dumps([str(c.reward_model), pool.where[i], teacher])

    todo = [(i, t) for i, t in pairs if key(i, t) not in log_]
    if todo:
        scorer = _reward(config, mesh, rules)
        step = max(1, int(c.gen_batch))
        with report.progress(len(todo), "prompt", "reward model") as bar:
            for start in range(0, len(todo), step):
                part = todo[start : start + step]
                texts = [replies(i, t) for i, t in part]
                prompts = [pool.texts[i] for (i, _), r in zip(part, texts, strict=True) for _ in r]
                scores = scorer(prompts, [x for r in texts for x in r]).astype(np.float64).tolist()
                records, at = [], 0
                for (i, t), r in zip(part, texts, strict=True):
                    records.append({"key": key(i, t), "scores": scores[at : at + len(r)]})
                    at += len(r)
                log_.append(records)
                bar.update(len(part))
        del scorer
        gc.collect()
    return {(i, t): log_.records[key(i, t)]["scores"] for i, t in pairs}


def _samples(pool: Pool, logs: dict[str, rows.KeyedLog]) -> Callable[[int, str], list[str]]:
    return lambda i, t: logs[t].records[pool.where[i]]["samples"]


def write_dataset(
    out: pathlib.Path, records: list[dict[str, Any]], folder: str = curation.DATASET
) -> pathlib.Path:
    """The rows as <out>/<folder>/train-00000-of-00001.jsonl (process 0 writes, whole or not at all)."""
    path = out / folder / curation.ROWS
    if jax.process_index() == 0:
        rows.write_rows(path, records)
    return path


def aya_row(
    pool: Pool, i: int, language: str, reply: str, annotation: str, teacher: str, **provenance
) -> dict:
    """An Aya Dataset row (inputs, targets, language, language_code, annotation_type, user_id) for prompt i and
    a teacher's reply, plus provenance (teacher, the pool row it came from, scores / attribute values)."""
    row = pool.rows[i]
    lang = languages.maybe_resolve(language)
    return {
        "inputs": pool.texts[i], "targets": reply, "language": lang.name if lang else language,
        "language_code": language, "annotation_type": annotation, "user_id": teacher, "teacher": teacher,
        "source": pool.where[i], **({"pool_targets": row["targets"]} if isinstance(row.get("targets"), str) else {}),
        **provenance,
    }  # fmt: skip


def _judge_spec(c: Any) -> teachers.TeacherSpec:
    try:
        (spec,) = teachers.parse(
            (str(c.judge),), "config.curation.judge", max_new_tokens=1024, temperature=0.0
        )
    except ValueError as e:
        raise defaults.ConfigError(str(e)) from None
    return spec


def _judge_name(spec: teachers.TeacherSpec) -> str:
    """The judge as its judgments are keyed: another model or address under the same name is another judge."""
    return f"{spec.name}:{spec.model}@{spec.source}" if spec.is_endpoint else f"{spec.name}:{spec.source}"


def _judge(config: Any, spec: teachers.TeacherSpec, mesh, rules) -> Any:
    """config.curation.judge as a pairwise judge (aya_jax/evaluation/judges.py): an endpoint, or a checkpoint
    in this process answering greedily."""
    name = _judge_name(spec)
    if spec.is_endpoint:
        try:
            return judges.EndpointJudge(spec.source, spec.model, api_key_env=spec.api_key_env,
                                        batch_size=spec.concurrency, max_tokens=spec.max_new_tokens, name=name)  # fmt: skip
        except ValueError as e:
            raise defaults.ConfigError(f"config.curation.judge: {spec.name}: {e}") from None
    chat = pretrained.chat_model(
        spec.source, config.model, config.data, mesh, rules,
        lambda eos: sampling.SamplingParams(max_new_tokens=spec.max_new_tokens, temperature=0.0, eos_ids=eos),
        tokenizer=spec.tokenizer, field=f"config.curation.judge ({spec.name})", template=spec.template,
        batch_size=int(config.curation.gen_batch), seed=int(config.seed),
    )  # fmt: skip
    return judges.ModelJudge(chat, name=name, batch_size=int(config.curation.gen_batch))


def judge_replies(
    config: Any, out: pathlib.Path, pool: Pool, index: np.ndarray, names: list[str], langs: list[str],
    replies: Callable[[int, str], list[str]], mesh, rules,
) -> np.ndarray:  # fmt: skip
    """[len(index), teachers] round-robin points of config.curation.judge over the teachers' first replies to
    the prompts numbered `index` (aya_jax/curation/arbitrage.py `round_robin`); judgments are kept in
    <out>/judgments.jsonl and only missing ones asked for (the judge is not even loaded when none is)."""
    spec = _judge_spec(config.curation)
    where = [pool.where[i] for i in index]
    items = arbitrage.round_robin(where, [pool.texts[i] for i in index],
                                  [[replies(int(i), t)[0] for t in names] for i in index], names,
                                  [langs[i] for i in index])  # fmt: skip
    cache = rows.KeyedLog(out / "judgments.jsonl", writer=jax.process_index() == 0)
    name = _judge_name(spec)
    if any(it.key(name) not in cache for it in items):
        judge = _judge(config, spec, mesh, rules)
        with report.progress(len(items), "game", f"judging ({spec.name})") as bar:
            try:
                judges.judge_pairs(items, judge, cache, progress=bar.update)
            except judges.JudgeError as e:
                raise ValueError(
                    f"config.curation.judge: {e}; the {len(cache)} judgments so far are kept in {cache.path}"
                ) from None
        del judge
        gc.collect()
    records = [cache.records[it.key(name)] for it in items]
    return arbitrage.round_robin_points(records, where, names)


# ============================================================================================================
# Multilingual arbitrage
# ============================================================================================================


def _route_table(c: Any, names: list[str]) -> dict[str, int] | None:
    """config.curation.route_table parsed (None when empty): fixed routing's table, reported for any strategy."""
    if not c.route_table:
        return None
    try:
        return arbitrage.parse_table(tuple(c.route_table), names, "config.curation.route_table")
    except ValueError as e:
        raise defaults.ConfigError(str(e)) from None


def _routes(
    c: Any,
    names: list[str],
    langs: list[str],
    where: list[str],
    table: dict[str, int] | None,
    random: np.ndarray,
) -> np.ndarray | None:
    """The teacher of every prompt for the strategies that know it before generating; None for reward / learned."""
    if c.routing == "fixed":
        return arbitrage.route_fixed(langs, table, where)
    if c.routing == "random":
        return random
    if c.routing == "single":
        if c.single_teacher not in names:
            raise defaults.ConfigError(
                f"config.curation.single_teacher: {c.single_teacher!r} is none of the teachers {names}"
            )
        return np.full(len(langs), names.index(c.single_teacher))
    return None


def _router_split(n: int, c: Any, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, held out, routed) prompt numbers of learned routing: router_fraction of the pool reward-routed (a
    seeded draw), router_holdout of those kept to measure the router; the rest routed by it."""
    order = np.random.default_rng(seed).permutation(n)
    scored = max(2, int(round(float(c.router_fraction) * n)))
    held = max(1, int(round(float(c.router_holdout) * scored)))
    return np.sort(order[held:scored]), np.sort(order[:held]), np.sort(order[scored:])


def run_arbitrage(config: Any, workdir: str) -> report.EvalSummary:
    """Multilingual arbitrage: every prompt of the pool answered by the teacher its routing picks
    (aya_jax/curation/arbitrage.py), written as Aya Dataset rows with the teacher and its score."""
    t0 = time.perf_counter()
    c, out, pool, langs, specs = _teacher_job(config, workdir, "arbitrage")
    names = [s.name for s in specs]
    n, made = len(pool.rows), Made()
    table = _route_table(c, names)
    random_route = arbitrage.route_random(n, len(specs), int(config.seed))
    route = _routes(c, names, langs, pool.where, table, random_route)
    mesh, rules = sharding.setup(config.mesh)
    everyone = list(range(n))
    results: dict[str, Any] = {"routing": str(c.routing), "teachers": names, "prompts": n}
    if c.routing in ("reward", "learned"):
        results["scorer"] = f"judge {_judge_spec(c).name}" if c.judge else f"reward model {c.reward_model}"
    router_info: dict[str, Any] = {}
    if route is not None:  # fixed / single / random: only the routed teacher answers
        assigned = {t: [i for i in everyone if route[i] == t] for t in range(len(specs))}
        logs = generate_replies(config, out, pool, specs, assigned, 1, made, mesh, rules)
        all_scored = np.arange(0)
    else:
        if c.routing == "reward":
            all_scored = np.arange(n)
        else:
            fit, held, rest = _router_split(n, c, int(config.seed))
            all_scored = np.sort(np.concatenate([fit, held]))
        logs = generate_replies(config, out, pool, specs, {t: all_scored.tolist() for t in range(len(specs))}, 1,
                                made, mesh, rules)  # fmt: skip
    scores_of: dict[tuple[int, str], list[float]] = {}
    if c.judge:  # the round robin's points
        matrix = judge_replies(config, out, pool, all_scored, names, langs, _samples(pool, logs), mesh, rules)
    else:
        pairs = [(int(i), t) for i in all_scored for t in names]
        if len(all_scored):
            scores_of = score_replies(config, out, pool, pairs, _samples(pool, logs), mesh, rules)
        matrix = np.array([[scores_of[(int(i), t)][0] for t in names] for i in all_scored])
    matrix = matrix.reshape(-1, len(names))
    points = {int(i): matrix[r] for r, i in enumerate(all_scored)} if c.judge else {}
    if route is None:
        route = np.full(n, -1)
        route[all_scored] = arbitrage.best(matrix)
        if c.routing == "learned":
            vectors, embedded = embeddings(config, pool, out, mesh, rules)
            router = arbitrage.fit_router(vectors[fit], route[fit], len(specs), l2=float(c.router_l2))
            held_pred = router.predict(vectors[held])
            route[rest] = router.predict(vectors[rest])
            router_info = {
                "fit_prompts": len(fit), "held_out_prompts": len(held), "routed_prompts": len(rest),
                "held_out_accuracy": float(np.mean(held_pred == route[held])),
                # the baseline: always the teacher reward routing chose most often on the fitted prompts
                "held_out_majority_accuracy": float(np.mean(route[held] == np.argmax(np.bincount(route[fit])))),
                "iterations": router.iterations, "grad_norm": router.grad_norm, "embedded_now": embedded,
            }  # fmt: skip
            logs = generate_replies(
                config, out, pool, specs, {t: [int(i) for i in rest if route[i] == t] for t in range(len(specs))},
                1, made, mesh, rules,
            )  # fmt: skip
    # the chosen replies' scores (scored now where a reward model is given and they were not)
    chosen_pairs = [(i, names[route[i]]) for i in everyone]
    if c.reward_model:
        scores_of.update(score_replies(config, out, pool, chosen_pairs, _samples(pool, logs), mesh, rules))
    records = []
    for i, t in chosen_pairs:
        extra = {"score": scores_of[(i, t)][0]} if (i, t) in scores_of else {}
        if i in points:
            extra["judge_points"] = float(points[i][route[i]])
        records.append(aya_row(pool, i, langs[i], logs[t].records[pool.where[i]]["samples"][0],
                               f"arbitrage-{c.routing}", t, **extra))  # fmt: skip
    dataset = write_dataset(out, records)
    if len(all_scored):  # the scored replies ranked: each prompt's best vs worst, offline preference pairs
        pairs, reply = [], _samples(pool, logs)
        for r, best, worst in arbitrage.ranked_pairs(matrix):
            i = int(all_scored[r])
            pairs.append({"id": pool.where[i], "prompt": pool.texts[i], "chosen": reply(i, names[best])[0],
                          "rejected": reply(i, names[worst])[0], "language_code": langs[i], "chosen_teacher": names[best],
                          "rejected_teacher": names[worst], "margin": float(matrix[r, best] - matrix[r, worst])})  # fmt: skip
        results["preference_pairs"] = {
            "pairs": len(pairs),
            "path": str(write_dataset(out, pairs, curation.PAIRS)),
        }
    results["choices"] = arbitrage.choice_table(langs, route, names)
    results["generated_now"] = made.generated
    results["generation"] = made.per_teacher
    if router_info:
        results["router"] = router_info
    if c.reward_model:
        results["chosen_score"] = stats.describe([scores_of[p][0] for p in chosen_pairs])
    counterfactual: dict[str, np.ndarray] = {}
    if len(all_scored):  # every strategy's score on the prompts every teacher answered
        sub_langs = [langs[i] for i in all_scored]
        routes = {f"single:{t}": np.full(len(all_scored), j) for j, t in enumerate(names)}
        routes["random"] = random_route[all_scored]
        routes["reward"] = arbitrage.best(matrix)
        if table is not None:
            routes["fixed"] = arbitrage.route_fixed(sub_langs, table, [pool.where[i] for i in all_scored])
        counterfactual = arbitrage.strategy_scores(matrix, routes)
        results["strategy_scores"] = {s: stats.describe(v) for s, v in counterfactual.items()}
        results["strategy_scores_by_language"] = {
            s: {g: float(np.mean(v[[j for j, x in enumerate(sub_langs) if x == g]])) for g in sorted(set(sub_langs))}
            for s, v in counterfactual.items()
        }  # fmt: skip
    results["dataset"] = str(dataset)
    results["seconds"] = round(time.perf_counter() - t0, 3)
    headline = (
        f"{n} prompts routed by {c.routing} to {', '.join(f'{t} {int(np.sum(route == j))}' for j, t in enumerate(names))}"
        f" -> {dataset}; generated now {made.generated}"
    )
    return report.finish(
        "arbitrage", out, results, _arbitrage_markdown(results), headline, t0,
        lambda d: {"routing": plots.arbitrage(results, counterfactual, d / "routing.png")}, bool(c.plot),
    )  # fmt: skip


def _judged_by_pairs(results: dict[str, Any]) -> bool:
    return str(results.get("scorer", "")).startswith("judge")


def _arbitrage_markdown(results: dict[str, Any]) -> str:
    names = results["teachers"]
    lines = [f"# Multilingual arbitrage ({results['routing']} routing)", "",
             f"{results['prompts']} prompts; the teacher each was routed to:", "",
             report.table(["language", *names], [(g, *row.values()) for g, row in results["choices"].items()])]  # fmt: skip
    if "router" in results:
        r = results["router"]
        lines += ["", f"Router: fitted on {r['fit_prompts']} reward-routed prompts; held-out accuracy "
                  f"{r['held_out_accuracy']:.3f} (always the commonest teacher: {r['held_out_majority_accuracy']:.3f}); "
                  f"routed {r['routed_prompts']} prompts."]  # fmt: skip
    if "strategy_scores" in results:
        scored_by = "Judge's round-robin points" if _judged_by_pairs(results) else "Reward-model score"
        lines += ["", f"{scored_by} of the reply each strategy picks, on the prompts every teacher answered:",
                  "", report.table(["strategy", "n", "mean", "q25", "median", "q75"],
                                   [(s, d["n"], d["mean"], d["q25"], d["median"], d["q75"])
                                    for s, d in results["strategy_scores"].items()])]  # fmt: skip
    gen = results["generation"]
    lines += ["", report.table(["teacher", "generated now", "read", "new tokens", "seconds"],
                               [(t, v["generated"], v["read"], v["new_tokens"], v["seconds"]) for t, v in gen.items()])]  # fmt: skip
    return "\n".join(lines) + "\n"


# ============================================================================================================
# Active inheritance
# ============================================================================================================


def _attribute_functions(c: Any, names: list[str]) -> dict[str, Any]:
    functions = attributes.build([n for n in names if n != "toxicity" or not c.toxicity_scorer],
                                 lexicon_dir=str(c.lexicon_dir) or None)  # fmt: skip
    if "toxicity" in names and c.toxicity_scorer:
        module, _, name = str(c.toxicity_scorer).partition(":")
        try:
            functions["toxicity"] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise defaults.ConfigError(f"config.curation.toxicity_scorer: {c.toxicity_scorer}: {e}") from None
    return functions


def run_active_inheritance(config: Any, workdir: str) -> report.EvalSummary:
    """Active inheritance: k replies per prompt from each teacher, the one that best meets the attribute
    objective kept (aya_jax/curation/attributes.py `objective`), written as Aya Dataset rows with every
    attribute's value."""
    t0 = time.perf_counter()
    c, out, pool, langs, specs = _teacher_job(config, workdir, "active_inheritance")
    weights = defaults.curation.attribute_weights(tuple(c.attributes))
    functions = _attribute_functions(c, list(weights))  # a missing lexicon fails before any model loads
    k, n, made = int(c.samples), len(pool.rows), Made()
    mesh, rules = sharding.setup(config.mesh)
    logs = generate_replies(config, out, pool, specs, {t: list(range(n)) for t in range(len(specs))}, k, made,
                            mesh, rules)  # fmt: skip
    # every candidate of every prompt, flattened (prompt-major, then teacher, then sample)
    owner, texts, teacher_of, sample_of = [], [], [], []
    for i in range(n):
        for spec in specs:
            for j, text in enumerate(logs[spec.name].records[pool.where[i]]["samples"]):
                owner.append(i), texts.append(text), teacher_of.append(spec.name), sample_of.append(j)
    owner_ = np.asarray(owner)
    cand_langs = [langs[i] for i in owner]
    values = {name: np.asarray(fn(texts, cand_langs), np.float64) for name, fn in functions.items()}
    starts = np.searchsorted(owner_, np.arange(n + 1))
    rng = np.random.default_rng(int(config.seed))
    chosen, random_pick, records = [], [], []
    for i in range(n):
        lo, hi = int(starts[i]), int(starts[i + 1])
        best = lo + attributes.best({a: v[lo:hi] for a, v in values.items()}, weights)
        chosen.append(best)
        random_pick.append(lo + int(rng.integers(0, hi - lo)))
        objective = float(attributes.objective({a: v[lo:hi] for a, v in values.items()}, weights)[best - lo])
        records.append(aya_row(
            pool, i, langs[i], texts[best], "active-inheritance", teacher_of[best], sample=sample_of[best],
            candidates=hi - lo, attributes={a: float(v[best]) for a, v in values.items()}, objective=objective,
        ))  # fmt: skip
    dataset = write_dataset(out, records)
    groups = {"all": np.arange(len(texts)), "random": np.asarray(random_pick), "selected": np.asarray(chosen)}
    results: dict[str, Any] = {
        "prompts": n, "teachers": [s.name for s in specs], "samples": k, "candidates": len(texts),
        "attributes": weights,
        "distributions": {a: {g: stats.describe(v[idx]) for g, idx in groups.items()} for a, v in values.items()},
        "by_language": {
            a: {g: {"random": float(np.mean(v[[random_pick[i] for i in range(n) if langs[i] == g]])),
                    "selected": float(np.mean(v[[chosen[i] for i in range(n) if langs[i] == g]]))}
                for g in sorted(set(langs))}
            for a, v in values.items()
        },
        "chosen_teacher": {s.name: int(sum(teacher_of[b] == s.name for b in chosen)) for s in specs},
        "generated_now": made.generated, "generation": made.per_teacher, "dataset": str(dataset),
    }  # fmt: skip
    shift = ", ".join(
        f"{a} {d['random']['mean']:.4g} -> {d['selected']['mean']:.4g}"
        for a, d in results["distributions"].items()
    )
    headline = f"{n} prompts x {len(texts) // n} candidates; mean (random -> selected): {shift} -> {dataset}"
    draw = {a: (v, v[groups["random"]], v[groups["selected"]]) for a, v in values.items()}
    return report.finish(
        "active_inheritance", out, results, _inheritance_markdown(results), headline, t0,
        lambda d: {"attributes": plots.attribute_shift(draw, weights, d / "attributes.png")}, bool(c.plot),
    )  # fmt: skip


def _inheritance_markdown(results: dict[str, Any]) -> str:
    lines = ["# Active inheritance", "",
             f"{results['prompts']} prompts, {results['candidates']} candidates ({results['samples']} per teacher: "
             f"{', '.join(results['teachers'])}); objective: "
             + ", ".join(f"{a} x {w:g}" for a, w in results["attributes"].items()), "",
             report.table(["attribute", "all mean", "random pick mean", "selected mean", "selected median"],
                          [(a, d["all"]["mean"], d["random"]["mean"], d["selected"]["mean"], d["selected"]["median"])
                           for a, d in results["distributions"].items()])]  # fmt: skip
    for a, per in results["by_language"].items():
        lines += ["", f"{a} by language:", "",
                  report.table(["language", "random", "selected"], [(g, v["random"], v["selected"]) for g, v in per.items()])]  # fmt: skip
    gen = results["generation"]
    lines += ["", report.table(["teacher", "generated now", "read", "new tokens", "seconds"],
                               [(t, v["generated"], v["read"], v["new_tokens"], v["seconds"]) for t, v in gen.items()])]  # fmt: skip
    return "\n".join(lines) + "\n"
