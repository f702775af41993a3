"""The data-curation jobs (aya_jax/curation/): results in `<workdir>/<job>/`.

    python -m aya_jax.main --config configs/select_diverse.py --config.curation.pool="('/data/pool.jsonl',)" \\
        --config.curation.embed_checkpoint=/ckpt/aya-expanse-8b --config.curation.clusters=1024 \\
        --config.curation.budget=0.1

`select_diverse` (diversity-first selection, arXiv 2409.11378; aya_jax/curation/diversity.py): the pool's rows
are embedded (a model's mean-pooled final hidden states, or vectors from a .npy file), clustered by k-means on
the mesh, and the budget is spent across the clusters — uniformly inside each, or by softmax of a quality field.
Outputs in `<workdir>/select_diverse/`: `dataset/train-00000-of-00001.jsonl` (the chosen rows, every field kept,
plus `cluster` and `source`: the pool file and row), which SFT reads as the Aya Dataset
(`--config.data.task=aya_dataset --config.data.aya_dataset_dir=<that folder>`); `selected_ids.json` (file:row of
each); `clusters.json` (centroids' sizes, what was taken from each, inertia); results.json / results.md and a PNG.

Resumable: embeddings are written `part_rows` rows per file as they are made (`embeddings/part-*.npy`, each
written whole or not at all), and the clustering is kept (`kmeans.npz`); a rerun loads what is there and makes
only what is missing. `embeddings/source.json` records which pool texts and which model made them: a rerun with
another pool or model in the same workdir stops with one line rather than mixing the two.

The pool is read and checked (every file, every row's text) before any model is loaded; every host runs the same
SPMD computation and process 0 writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np

from aya_jax import defaults, plots, sharding
from aya_jax.curation import clustering, diversity
from aya_jax.data import languages
from aya_jax.data.sources import DataError
from aya_jax.evaluation import likelihood, report, rows

SECTIONS = ("model", "mesh", "data", "curation")
DATASET_FILE = "train-00000-of-00001.jsonl"


@dataclasses.dataclass(frozen=True)
class Pool:
    rows: list[dict[str, Any]]
    where: list[str]  # "file:row" of each
    texts: list[str]


def read_pool(files: Any, text_field: str) -> Pool:
    """Every row of the pool files with a non-empty text; DataError naming file:row otherwise."""
    out = Pool([], [], [])
    for path in files:
        if not pathlib.Path(path).is_file():
            raise DataError(f"config.curation.pool: {path} is not a file")
        for number, row in rows.read_rows(path):
            text = row.get(text_field)
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}:{number}: {text_field!r} is missing or empty")
            out.rows.append(row)
            out.where.append(f"{path}:{number}")
            out.texts.append(text)
    if not out.rows:
        raise DataError(f"config.curation.pool: no rows in {', '.join(map(str, files))}")
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
    picked = diversity.select(km.assignments, budget, k=k, scores=scores, temperature=float(c.temperature),
                              seed=int(config.seed))  # fmt: skip
    stats = diversity.cluster_stats(km.assignments, picked, k, scores)
    per_language: dict[str, dict[str, int]] = {}
    chosen = set(picked.tolist())
    for i, row in enumerate(pool.rows):
        counts = per_language.setdefault(_language(row), {"pool": 0, "selected": 0})
        counts["pool"] += 1
        counts["selected"] += i in chosen
    dataset = out / "dataset"
    if jax.process_index() == 0:
        dataset.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in picked:
            record = {**pool.rows[i], "cluster": int(km.assignments[i]), "source": pool.where[i]}
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        _write_atomic(dataset / DATASET_FILE, lambda f: f.write("".join(lines).encode("utf-8")))
        (out / "selected_ids.json").write_text(json.dumps([pool.where[i] for i in picked], indent=0))
    results: dict[str, Any] = {
        "pool_rows": len(pool.rows), "budget": budget, "selected": len(picked), "clusters": k,
        "within": str(c.within), "quality_field": str(c.quality_field), "embedded_now": embedded,
        "embedded_before": 0 if c.vectors else len(pool.rows) - embedded, "clustered_now": clustered,
        "inertia": km.inertia, "kmeans_iterations": km.iterations, "kmeans_converged": km.converged,
        "per_language": per_language,
        "cluster_size": stats.size.tolist(), "cluster_selected": stats.selected.tolist(),
        "empty_clusters": int(np.sum(stats.size == 0)),
        "dataset": str(dataset / DATASET_FILE),
    }  # fmt: skip
    if scores is not None:
        results["mean_quality"] = {"pool": float(scores.mean()), "selected": float(scores[picked].mean())}
    headline = (
        f"{len(picked)} of {len(pool.rows)} rows from {k} clusters (sizes {int(stats.size.min())}-"
        f"{int(stats.size.max())}) -> {dataset / DATASET_FILE}; embedded now {embedded}"
    )
    return report.finish(
        "select_diverse", out, results, _markdown(results), headline, t0,
        lambda d: {"clusters": plots.cluster_selection(results, d / "clusters.png")}, bool(c.plot),
    )  # fmt: skip


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
    return "\n".join(lines) + "\n"
