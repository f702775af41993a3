"""Multilingual arbitrage in miniature (arXiv 2408.14960's claim, on a CPU): does a student trained on
reward-routed teacher data beat students trained on any single teacher's data, and most in the languages where
that teacher is weak?

    python experiments/arbitrage_miniature.py                      # <root> = workdirs/arbitrage_miniature
    python experiments/arbitrage_miniature.py --root /tmp/mini --steps 60 --prompts-per-language 20

Every stage is an aya_jax job run through `python -m aya_jax.main` (so a rerun skips what is finished and resumes
what is not), on the embedded default data (written to <root>/data on first use):

1. base: the quickstart model shrunk (2 layers, a 2048-piece vocabulary), SFT on all languages;
2. three teachers: the base fine-tuned on one language group each (GROUPS: Latin/Cyrillic European languages,
   Chinese/Japanese/Korean, Persian and the Indic languages);
3. a reward model: the base with a scalar head, trained on the default preference pairs;
4. a prompt pool of train prompts in the groups' languages; the `arbitrage` job answers every prompt with every
   teacher and keeps the best-scored reply (reward routing), then writes each single teacher's replies as its own
   dataset (single routing, reusing the same replies);
5. four students: the base fine-tuned on each dataset (same steps, same seed);
6. evaluation of each student on held-out rows (the default validation split, the groups' languages): SFT's
   per-language loss on the gold answers, and the reward model's score of the student's greedy reply to the
   held-out prompts (one more `arbitrage` run with the students as teachers: its per-strategy scores).

The table is written to <root>/report.md and printed; whatever it shows is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
GROUPS = {
    "euro": ("eng", "ita", "spa", "por", "nld", "deu", "fra", "ukr"),
    "cjk": ("zho", "jpn", "kor"),
    "indic": ("pes", "ben", "mar", "hin", "tam", "urd"),
}
MODEL = ["--config.model.overrides.num_layers=2", "--config.data.vocab.size=2048", "--config.data.seq_len=96",
         "--config.train.progress_bar=False", "--config.metrics.tensorboard=False", "--config.train.sample_prompts=0",
         "--config.train.plot=False"]  # fmt: skip


def run(root: pathlib.Path, config: str, workdir: pathlib.Path, *flags: str) -> float:
    env = {**os.environ, "AYA_DATA_DIR": str(root / "data"), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # fmt: skip
    cmd = [sys.executable, "-m", "aya_jax.main", "--config", str(REPO / config), "--workdir", str(workdir), *MODEL,
           *flags]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{config} in {workdir} failed:\n{proc.stderr[-4000:]}")
    seconds = time.perf_counter() - start
    print(f"  {config:32s} {workdir.name:22s} {seconds:7.1f} s", flush=True)
    return seconds


def rows_of(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="workdirs/arbitrage_miniature")
    parser.add_argument("--base-steps", type=int, default=500)
    parser.add_argument("--steps", type=int, default=150, help="teacher and student fine-tuning steps")
    parser.add_argument("--prompts-per-language", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    root = pathlib.Path(args.root).resolve()
    languages = [g for group in GROUPS.values() for g in group]
    steps = [
        f"--config.train.steps={args.steps}",
        "--config.train.eval_every=1000000",
        "--config.train.eval_batches=0",
    ]
    # teachers sample (temperature 0.7, as synthetic data is made); students are scored on greedy replies
    generation = [f"--config.curation.max_new_tokens={args.new_tokens}", "--config.curation.gen_batch=32"]
    greedy = ["--config.curation.sample_temperature=0"]
    print(f"arbitrage in miniature under {root}")

    # 1. the base model (it also writes the embedded default data and trains the vocabulary)
    base = root / "base"
    run(root, "configs/quickstart.py", base, f"--config.train.steps={args.base_steps}",
        "--config.train.eval_every=1000000")  # fmt: skip
    vocab = sorted((root / "data/vocab").glob("*.model"))[0]
    pinned = [f"--config.data.vocab.path={vocab}"]  # fine-tuning on other data keeps the base's vocabulary
    train = rows_of(root / "data/aya_default/train.jsonl")
    held_out = [
        r for r in rows_of(root / "data/aya_default/validation.jsonl") if r["language_code"] in languages
    ]

    def sft(name: str, dataset: pathlib.Path) -> pathlib.Path:
        write(dataset.parent / "validation.jsonl", held_out)
        run(root, "configs/quickstart.py", root / name, *steps, *pinned, f"--config.checkpoint.init_from={base}",
            "--config.data.task=aya_dataset", f"--config.data.aya_dataset_dir={dataset.parent}",
            "--config.train.eval_batches=64", f"--config.train.eval_every={args.steps}")  # fmt: skip
        return root / name

    # 2. three teachers, one language group each
    teachers = {}
    for group, codes in GROUPS.items():
        dataset = write(
            root / f"groups/{group}/train.jsonl", [r for r in train if r["language_code"] in codes]
        )
        teachers[group] = sft(f"teacher_{group}", dataset)
    # 3. the reward model
    reward = root / "reward"
    run(root, "configs/reward.py", reward, "--config.train.steps=120", "--config.reward.prompt_len=48",
        f"--config.checkpoint.init_from={base}", "--config.train.eval_every=1000000")  # fmt: skip

    # 4. the prompt pool, reward-routed and single-teacher datasets
    pool_rows, counts = [], dict.fromkeys(languages, 0)
    for r in reversed(train):  # the end of the train split: rows the base saw least recently
        if r["language_code"] in counts and counts[r["language_code"]] < args.prompts_per_language:
            counts[r["language_code"]] += 1
            pool_rows.append(r)
    pool = write(root / "pool.jsonl", pool_rows)
    curation = [f"--config.curation.pool=('{pool}',)", f"--config.curation.reward_model={reward}",
                "--config.curation.teachers=(" + ", ".join(f"'{g}={p}'" for g, p in teachers.items()) + ",)",
                "--config.curation.reward_prompt_len=48", *generation]  # fmt: skip
    arbitrage = root / "arbitrage"
    datasets = {}
    for strategy in ("reward", *teachers):
        routing = ["--config.curation.routing=reward"] if strategy == "reward" else [
            "--config.curation.routing=single", f"--config.curation.single_teacher={strategy}"]  # fmt: skip
        run(root, "configs/arbitrage.py", arbitrage, *curation, *routing)
        chosen = rows_of(arbitrage / "arbitrage/dataset/train-00000-of-00001.jsonl")
        datasets[strategy] = write(root / f"datasets/{strategy}/train.jsonl", chosen)
        if strategy == "reward":
            routed = json.loads((arbitrage / "arbitrage/results.json").read_text())

    # 5. students
    students = {s: sft(f"student_{s}", d) for s, d in datasets.items()}

    # 6. held-out reward scores of every student's replies
    prompts = write(root / "held_out_prompts.jsonl", held_out)
    scored = root / "student_scores"
    run(root, "configs/arbitrage.py", scored, f"--config.curation.pool=('{prompts}',)",
        f"--config.curation.reward_model={reward}", "--config.curation.reward_prompt_len=48", *generation, *greedy,
        "--config.curation.teachers=(" + ", ".join(f"'{s}={p}'" for s, p in students.items()) + ",)",
        "--config.curation.routing=reward")  # fmt: skip
    scores = json.loads((scored / "arbitrage/results.json").read_text())

    # the table
    def loss(student: str) -> dict[str, float]:
        evals = [json.loads(x) for x in (students[student] / "metrics.jsonl").read_text().splitlines()]
        last = [e for e in evals if e.get("kind") == "eval"][-1]
        return {k[5:]: v for k, v in last.items() if k.startswith("loss/")}

    losses = {s: loss(s) for s in students}
    by_language = scores["strategy_scores_by_language"]
    names = list(students)
    lines = ["# Multilingual arbitrage in miniature", "",
             f"Teachers: {', '.join(f'{g} ({len(c)} languages)' for g, c in GROUPS.items())}; students fine-tuned "
             f"{args.steps} steps from the same base on {len(pool_rows)} replies each. Reward routing chose: "
             + ", ".join(f"{t} {sum(row[t] for row in routed['choices'].values())}" for t in teachers) + ".", "",
             "Held-out loss on the gold answers (nats/token, lower is better) and reward-model score of the student's "
             "reply (higher is better), mean over each group's languages:", "",
             "| group | " + " | ".join(f"loss {s}" for s in names) + " | " + " | ".join(f"reward {s}" for s in names) + " |",
             "|---|" + "---|" * (2 * len(names))]  # fmt: skip
    for group, codes in GROUPS.items():
        cells = []
        for s in names:
            v = [losses[s][c] for c in codes if c in losses[s]]
            cells.append(f"{sum(v) / len(v):.3f}" if v else "—")
        for s in names:
            v = [by_language[f"single:{s}"][c] for c in codes if c in by_language[f"single:{s}"]]
            cells.append(f"{sum(v) / len(v):.3f}" if v else "—")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    overall = scores["strategy_scores"]
    replies = {
        s: [r["samples"][0] for r in rows_of(scored / f"arbitrage/generations/{s}/samples.jsonl")]
        for s in names
    }
    lines += ["", "Overall reward score of each student's replies: "
              + ", ".join(f"{s} {overall[f'single:{s}']['mean']:.3f}" for s in names) + "; mean reply length "
              + ", ".join(f"{s} {sum(map(len, r)) / len(r):.0f}" for s, r in replies.items())
              + " characters; distinct replies "
              + ", ".join(f"{s} {len(set(r))}/{len(r)}" for s, r in replies.items()) + "."]  # fmt: skip
    report = "\n".join(lines) + "\n"
    (root / "report.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
