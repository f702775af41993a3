"""select_diverse end to end through main: the session's tiny SFT run embeds a pool of real prompts in 11
languages (HPLT OASST test prompts written as Aya Dataset rows), k-means on the 8-device mesh, 20% taken across
the clusters by a quality field. Killed after the first embedding files and rerun: no row is embedded twice and
the selection equals an uninterrupted run's; a third run redoes nothing; SFT trains on the output as the Aya
Dataset; bad input stops with one line."""

import json

import numpy as np
import pytest
import runs  # the helper module beside this file

from aya_jax.curation import diversity

pytestmark = pytest.mark.slow

SFT = ("--config.data.seq_len=64",)  # runs.tiny_sft's data flags
LANGS = ["bg", "bn", "cs", "en", "es", "fi", "fr", "hi", "no", "ru", "zh"]
PART = 64


def _write_pool(path, shared_data, per_language=30):
    rows = []
    for lang in LANGS:
        taken = 0
        for line in (shared_data / f"instruct/hplt_oasst_test_prompts/test_{lang}.jsonl").open(
            encoding="utf-8"
        ):
            try:  # the published test_hi.jsonl has one malformed line
                prompt = json.loads(line)["prompt"]
            except json.JSONDecodeError:
                continue
            rows.append({"inputs": prompt, "targets": prompt.split("\n")[0][:80], "language_code": lang,
                         "annotation_type": "original", "user_id": "hplt", "score": len(prompt) % 7 / 7})  # fmt: skip
            taken += 1
            if taken == per_language:
                break
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def _args(pool, sft_run, *extra):
    return (
        *SFT, f"--config.curation.pool=('{pool}',)", f"--config.curation.embed_checkpoint={sft_run}",
        "--config.curation.clusters=8", "--config.curation.budget=0.2", f"--config.curation.part_rows={PART}",
        "--config.curation.batch_size=16", "--config.curation.max_length=64", "--config.curation.within=quality",
        "--config.curation.quality_field=score", "--config.curation.temperature=0.2", *extra,
    )  # fmt: skip


def test_selection_resumes_without_embedding_twice_and_sft_reads_it(tmp_path, data_dir, shared_data, sft_run):
    pool = tmp_path / "pool.jsonl"
    rows = _write_pool(pool, shared_data)
    n = len(rows)
    whole = tmp_path / "whole"
    proc = runs.run("configs/select_diverse.py", whole, data_dir, *_args(pool, sft_run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = whole / "select_diverse"
    results = json.loads((out / "results.json").read_text())
    assert results["pool_rows"] == n and results["embedded_now"] == n and results["clustered_now"]
    assert results["selected"] == results["budget"] == round(0.2 * n)
    # the selection spends the budget across clusters by the quotas (a NumPy re-derivation is in test_diversity)
    sizes = np.array(results["cluster_size"])
    np.testing.assert_array_equal(results["cluster_selected"], diversity.quotas(results["budget"], sizes))
    assert (
        sum(v["pool"] for v in results["per_language"].values()) == n and len(results["per_language"]) == 11
    )
    chosen = [json.loads(line) for line in open(out / "dataset/train-00000-of-00001.jsonl", encoding="utf-8")]
    ids = json.loads((out / "selected_ids.json").read_text())
    assert [r["source"] for r in chosen] == ids and len(set(ids)) == len(ids) == results["selected"]
    for record in chosen:  # every field of the pool row is kept, plus its cluster and source
        line = int(record["source"].rsplit(":", 1)[1])
        assert {k: record[k] for k in rows[line - 1]} == rows[line - 1] and 0 <= record["cluster"] < 8
    assert (out / "clusters.png").stat().st_size > 1000
    assert "select_diverse:" in proc.stdout and str(out / "dataset") in proc.stdout

    # Killed once two embedding files exist, then rerun: the rows on disk are not embedded again.
    part = tmp_path / "killed" / "select_diverse" / "embeddings"
    runs.kill_when("configs/select_diverse.py", tmp_path / "killed", data_dir, _args(pool, sft_run),
                   lambda w: (part / "part-00001.npy").exists())  # fmt: skip
    on_disk = sum(len(np.load(p)) for p in part.glob("part-*.npy"))
    assert PART * 2 <= on_disk < n
    again = runs.run("configs/select_diverse.py", tmp_path / "killed", data_dir, *_args(pool, sft_run))
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((tmp_path / "killed/select_diverse/results.json").read_text())
    assert resumed["embedded_now"] == n - on_disk and resumed["embedded_before"] == on_disk
    assert json.loads((tmp_path / "killed/select_diverse/selected_ids.json").read_text()) == ids
    assert (tmp_path / "killed/select_diverse/dataset/train-00000-of-00001.jsonl").read_bytes() == (
        out / "dataset/train-00000-of-00001.jsonl"
    ).read_bytes()
    third = runs.run("configs/select_diverse.py", whole, data_dir, *_args(pool, sft_run))
    assert third.returncode == 0, third.stderr[-3000:]
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["embedded_now"] == 0 and not rerun["clustered_now"]

    # SFT reads the selection as the Aya Dataset.
    sft = runs.run(
        "configs/quickstart.py", tmp_path / "sft", data_dir, *SFT, "--config.train.steps=2",
        "--config.data.task=aya_dataset", f"--config.data.aya_dataset_dir={out / 'dataset'}",
        "--config.data.eval_split=train",  # the selection is one train file
        "--config.train.eval_every=1000", "--config.train.plot=False",
    )  # fmt: skip
    assert sft.returncode == 0, sft.stderr[-3000:]


@pytest.mark.bad_input
def test_bad_input_is_one_line_naming_the_culprit(tmp_path, data_dir, shared_data, sft_run):
    pool = tmp_path / "pool.jsonl"
    rows = _write_pool(pool, shared_data, per_language=3)
    broken = tmp_path / "broken.jsonl"
    damaged = [dict(r) for r in rows]
    damaged[4]["inputs"] = "  "
    broken.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in damaged), encoding="utf-8")
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.zeros((5, 4), np.float32))
    cases = [
        (_args(broken, sft_run), f"{broken}:5: 'inputs' (config.curation.text_field) is missing or empty"),
        (_args(tmp_path / "nowhere.jsonl", sft_run), "config.curation.pool: "),
        (
            _args(pool, sft_run, "--config.curation.clusters=100"),
            "config.curation.clusters: 100 clusters for 33",
        ),
        (_args(pool, "", f"--config.curation.vectors={vectors}"), "holds (5, 4), not [33 rows, dim]"),
        (
            _args(pool, sft_run, "--config.curation.quality_field=user_id"),
            "'user_id' is 'hplt', not a number",
        ),
    ]
    for args, message in cases:
        proc = runs.run("configs/select_diverse.py", tmp_path / "w", data_dir, *args)
        assert proc.returncode != 0
        lines = runs.error_lines(proc.stderr)
        assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    # Another pool in a workdir holding embeddings of the first: refused, the embeddings kept.
    first = runs.run("configs/select_diverse.py", tmp_path / "w", data_dir, *_args(pool, sft_run))
    assert first.returncode == 0, first.stderr[-3000:]
    held = sorted((tmp_path / "w/select_diverse/embeddings").glob("part-*.npy"))
    rows[0]["inputs"] = "Une autre question."
    pool.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    other = runs.run("configs/select_diverse.py", tmp_path / "w", data_dir, *_args(pool, sft_run))
    lines = runs.error_lines(other.stderr)
    assert (
        other.returncode != 0
        and len(lines) == 1
        and "holds embeddings of other inputs (texts_sha256 differ)" in lines[0]
    )
    assert sorted((tmp_path / "w/select_diverse/embeddings").glob("part-*.npy")) == held


def test_iterative_rounds_weight_the_budget_by_reward_gaps(tmp_path, data_dir, sft_run, tiny_reward_model):
    """Three rounds over 90 rows of the default data (gold answers): after rounds 1 and 2 the sft job fine-tunes
    the tiny run on everything selected so far, it answers the round's prompts, the tiny reward model scores
    gold and generated answers; the next round's weights equal softmax over clusters of the mean gap,
    re-derived here in NumPy from the kept scores, and every round spends its budget. A rerun trains, generates
    and scores nothing again."""
    pool = tmp_path / "pool.jsonl"
    lines = (data_dir / "aya_default/train.jsonl").read_text(encoding="utf-8").splitlines()[:90]
    pool.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = (
        *SFT, f"--config.curation.pool=('{pool}',)", f"--config.curation.embed_checkpoint={sft_run}",
        "--config.curation.clusters=5", "--config.curation.budget=30", "--config.curation.rounds=3",
        "--config.curation.finetune_steps=3", f"--config.curation.reward_model={tiny_reward_model}",
        "--config.curation.max_new_tokens=12", "--config.curation.gen_batch=8", "--config.curation.batch_size=8",
        "--config.curation.max_length=64", "--config.train.eval_every=1000", "--config.train.plot=False",
    )  # fmt: skip
    work = tmp_path / "iter"
    proc = runs.run("configs/select_diverse.py", work, data_dir, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "select_diverse"
    results = json.loads((out / "results.json").read_text())
    assert [r["selected"] for r in results["rounds"]] == diversity.round_budgets(30, 3) == [10, 10, 10]
    assert results["selected"] == 30 and results["generated_now"] == 20
    assignments = np.load(out / "kmeans.npz")["assignments"]
    for r in (1, 2):
        scores = {}
        for line in (out / f"round_{r}/scores.jsonl").read_text().splitlines():
            record = json.loads(line)
            _, where, who = json.loads(record["key"])
            scores.setdefault(int(where.rsplit(":", 1)[1]) - 1, {})[who] = record["scores"][0]
        rows_ = sorted(scores)
        gap = np.array([scores[i]["gold"] - scores[i][f"round_{r}"] for i in rows_])
        owner = assignments[rows_]
        means = np.array([gap[owner == c].mean() if np.any(owner == c) else np.nan for c in range(5)])
        means[np.isnan(means)] = np.nanmean(means)
        expected = np.exp(means - means.max()) / np.exp(means - means.max()).sum()
        np.testing.assert_allclose(results["rounds"][r]["weights"], expected, rtol=1e-9, atol=1e-12)
        assert (out / f"round_{r}/sft/checkpoints").is_dir()
    again = runs.run("configs/select_diverse.py", work, data_dir, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["generated_now"] == 0 and rerun["rounds"] == results["rounds"]
    assert "started at 3" in again.stderr and "rounds" in (out / "results.md").read_text().lower()
