"""active_inheritance end to end through main: k = 4 replies per prompt from a pool of two teachers — the
session's tiny SFT run in process and its 40-step sibling behind the `serve` job's OpenAI-compatible endpoint —
on real prompts in four languages; the reply with the highest MTLD is kept. Each kept reply is the MTLD argmax of
its candidates (re-derived from the logs), the selected mean is above a random pick's; killed and rerun, nothing
is generated twice and the dataset equals the uninterrupted run's (the endpoint asked one request at a time: its seeded samples
then meet the same batch); SFT trains on it as the Aya Dataset."""

import json

import pytest
import runs  # the helper module beside this file

from aya_jax.curation import attributes

pytestmark = pytest.mark.slow

SFT = ("--config.data.seq_len=64",)  # runs.tiny_sft's data flags
DATASET = "active_inheritance/dataset/train-00000-of-00001.jsonl"
K = 4


def _lines(path):
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    )


@pytest.fixture
def served(tmp_path, data_dir, early_sft_run):
    """The 40-step SFT run behind the serve job; yields its URL."""
    with runs.served(early_sft_run, tmp_path / "serve", data_dir, "early", 512, *SFT, slots=8) as url:
        yield url


def test_best_of_k_for_mtld_resumes_and_sft_reads_it(tmp_path, data_dir, shared_data, sft_run, served):
    pool = tmp_path / "pool.jsonl"
    rows = runs.prompt_pool(pool, shared_data, ("fr", "hi", "zh", "en"), 6)
    n = len(rows)
    args = (
        *SFT, f"--config.curation.pool=('{pool}',)",
        f"--config.curation.teachers=('local={sft_run}', 'api={served};model=early;concurrency=1')",
        f"--config.curation.samples={K}", "--config.curation.attributes=('mtld',)",
        "--config.curation.max_new_tokens=24", "--config.curation.gen_batch=4", "--config.curation.sample_temperature=1.0",
    )  # fmt: skip
    whole = tmp_path / "whole"
    proc = runs.run("configs/active_inheritance.py", whole, data_dir, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = whole / "active_inheritance"
    results = json.loads((out / "results.json").read_text())
    assert results["generated_now"] == 2 * n and results["candidates"] == 2 * K * n
    assert results["generation"]["api"]["new_tokens"] > 0 and results["generation"]["local"]["new_tokens"] > 0
    logs = {t: _lines(out / f"generations/{t}/samples.jsonl") for t in ("local", "api")}
    chosen = _lines(whole / DATASET)
    assert len(chosen) == n
    for i, row in enumerate(chosen):
        candidates = logs["local"][i]["samples"] + logs["api"][i]["samples"]
        assert len(candidates) == 2 * K
        mtld = attributes.mtld(candidates, [row["language_code"]] * len(candidates))
        best = int(mtld.argmax())
        assert row["targets"] == candidates[best] and row["attributes"]["mtld"] == pytest.approx(
            mtld[best], abs=1e-12
        )
        assert row["teacher"] == ("local" if best < K else "api") and row["sample"] == best % K
        assert row["annotation_type"] == "active-inheritance" and row["inputs"] == rows[i]["inputs"]
    d = results["distributions"]["mtld"]
    assert d["selected"]["mean"] > d["random"]["mean"] and d["selected"]["mean"] > d["all"]["mean"]
    assert (out / "attributes.png").stat().st_size > 1000

    # Killed after the local teacher's first chunks, then rerun: nothing generated twice, the same dataset.
    killed_dir = tmp_path / "killed"
    log_ = killed_dir / "active_inheritance/generations/local/samples.jsonl"
    runs.kill_when(
        "configs/active_inheritance.py", killed_dir, data_dir, args, lambda w: len(_lines(log_)) >= 8
    )
    had = len(_lines(log_))
    assert 8 <= had < n
    again = runs.run("configs/active_inheritance.py", killed_dir, data_dir, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((killed_dir / "active_inheritance/results.json").read_text())
    assert (
        resumed["generation"]["local"]["generated"] == n - had
        and resumed["generation"]["api"]["generated"] == n
    )
    assert (killed_dir / DATASET).read_bytes() == (whole / DATASET).read_bytes()

    # SFT reads the chosen replies as the Aya Dataset.
    sft = runs.run(
        "configs/quickstart.py", tmp_path / "sft", data_dir, *SFT, "--config.train.steps=2",
        "--config.data.task=aya_dataset", f"--config.data.aya_dataset_dir={out / 'dataset'}",
        "--config.data.eval_split=train", "--config.train.eval_every=1000", "--config.train.plot=False",
    )  # fmt: skip
    assert sft.returncode == 0, sft.stderr[-3000:]
