"""Generation throughput of the `arbitrage` job against the sampler alone, on the same model and prompts, in one
run.

    python benchmarks/arbitrage.py                      # 256 prompts, 64 new tokens, batches of 32 prompts
    python benchmarks/arbitrage.py --prompts 64 --new-tokens 32

The model: a random Cohere model (hidden 256, 2 layers) with the real Command-R tokenizer, saved as an aya_jax run
in a temporary folder; the prompts: real HPLT OASST test prompts in 11 languages (repeated to --prompts), cut to
300 characters. Both sides generate greedily (every side the same tokens), `--batch` prompts per batch, as one
user turn of the Cohere chat template.

* sampler alone: load the model, encode the prompts, `Sampler.generate` batch by batch (rows sorted by length
  inside each batch, as the job does) — the floor of what any generation job can reach;
* the job: `python -m aya_jax.main --config configs/arbitrage.py` with `routing=single` (one teacher), timed
  from its own record of the teacher's generation phase (load, compile, generate, the log appended per chunk).

Both are timed from model load to the last token, one compilation each; tokens are the generated tokens (stop
tokens included). Each side runs in its own process. Shared machines are noisy: compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SHARED = REPO.parent / "shared" / "data"
TOKENIZER = SHARED / "tokenizers/command_r/tokenizer.json.gz"
LANGS = ("bg", "bn", "cs", "en", "es", "fi", "fr", "hi", "no", "ru", "zh")
MODEL_FLAGS = {"preset": "cohere-tiny", "dtype": "float32"}
ONE_CPU = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
OVERRIDES = {"hidden_size": 256, "intermediate_size": 768, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2}


def _model_config():
    from aya_jax import defaults  # noqa: PLC0415  (each side's process imports only what it runs)

    config = defaults.base_config()
    for k, v in MODEL_FLAGS.items():
        config.model[k] = v
    for k, v in OVERRIDES.items():
        config.model.overrides[k] = v
    return config


def make_run(folder: pathlib.Path) -> None:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from flax import linen as nn  # noqa: PLC0415

    from aya_jax import pretrained  # noqa: PLC0415
    from aya_jax.data import vocab  # noqa: PLC0415

    config = _model_config()
    model, _ = pretrained.build_model(config.model, vocab.HfTokenizerCodec(TOKENIZER).vocab_size)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    pretrained.save_params(folder, params, {})


def write_pool(path: pathlib.Path, n: int) -> list[str]:
    prompts = []
    for lang in LANGS:
        for line in (SHARED / f"instruct/hplt_oasst_test_prompts/test_{lang}.jsonl").open(encoding="utf-8"):
            try:
                prompts.append((lang, json.loads(line)["prompt"][:300]))
            except json.JSONDecodeError:
                continue
            if sum(1 for g, _ in prompts if g == lang) == 40:
                break
    rows = [
        {"inputs": p, "targets": "", "language_code": g} for g, p in (prompts * (n // len(prompts) + 1))[:n]
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return [r["inputs"] for r in rows]


def sampler_alone(run: pathlib.Path, prompts: list[str], new_tokens: int, batch: int) -> dict:
    from aya_jax import pretrained, sampling  # noqa: PLC0415

    config = _model_config()
    start = time.perf_counter()
    loaded = pretrained.load_inference_model(
        run, config.model, config.data, None, (), tokenizer=str(TOKENIZER)
    )
    sampler = sampling.Sampler(loaded.model, loaded.params, pad_id=loaded.codec.pad_id)
    params = sampling.SamplingParams(max_new_tokens=new_tokens, eos_ids=loaded.eos_ids)
    ids = pretrained.encode_prompts(loaded.codec, prompts, template="auto")
    tokens = 0
    for begin in range(0, len(ids), batch):
        chunk = sorted(ids[begin : begin + batch], key=len)
        tokens += int(sampler.generate(chunk, params).lengths.sum())
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


def job(run: pathlib.Path, pool: pathlib.Path, workdir: pathlib.Path, new_tokens: int, batch: int) -> dict:
    flags = [f"--config.model.{k}={v}" for k, v in MODEL_FLAGS.items()]
    flags += [f"--config.model.overrides.{k}={v}" for k, v in OVERRIDES.items()]
    cmd = [
        sys.executable, "-m", "aya_jax.main", "--config", str(REPO / "configs/arbitrage.py"), "--workdir",
        str(workdir), *flags, f"--config.curation.pool=('{pool}',)",
        f"--config.curation.teachers=('t={run};tokenizer={TOKENIZER}',)", "--config.curation.routing=single",
        "--config.curation.single_teacher=t", f"--config.curation.max_new_tokens={new_tokens}",
        "--config.curation.sample_temperature=0", f"--config.curation.gen_batch={batch}",
        "--config.curation.plot=False", "--config.mesh.shape=(1,1,1)",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ONE_CPU, check=False)
    if proc.returncode:
        sys.exit(f"the arbitrage job failed:\n{proc.stderr[-3000:]}")
    generation = json.loads((workdir / "arbitrage/results.json").read_text())["generation"]["t"]
    return {"seconds": generation["seconds"], "tokens": generation["new_tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--side", choices=["sampler"], help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        prompts = [json.loads(line)["inputs"] for line in open(args.pool, encoding="utf-8")]
        print(json.dumps(sampler_alone(pathlib.Path(args.run), prompts, args.new_tokens, args.batch)))
        return
    from machine import describe  # noqa: PLC0415

    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        make_run(root / "run")
        write_pool(root / "pool.jsonl", args.prompts)
        print(f"{args.prompts} prompts, {args.new_tokens} new tokens (greedy), batches of {args.batch}; "
              f"Cohere hidden {OVERRIDES['hidden_size']}, {OVERRIDES['num_layers']} layers, Command-R vocabulary")  # fmt: skip
        cmd = [sys.executable, __file__, "--side", "sampler", f"--run={root / 'run'}", f"--pool={root / 'pool.jsonl'}",
               f"--new-tokens={args.new_tokens}", f"--batch={args.batch}"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ONE_CPU, check=False)
        if proc.returncode:
            sys.exit(f"sampler: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        alone = json.loads(proc.stdout.strip().splitlines()[-1])
        ours = job(root / "run", root / "pool.jsonl", root / "job", args.new_tokens, args.batch)
    for name, r in (("sampler alone", alone), ("arbitrage job", ours)):
        print(
            f"{name:16s} {r['tokens']:8d} tokens  {r['seconds']:8.1f} s  {r['tokens'] / r['seconds']:9.1f} tokens/s"
        )
    ratio = (ours["tokens"] / ours["seconds"]) / (alone["tokens"] / alone["seconds"])
    print(f"ratio job / sampler alone: {ratio:.2f}x tokens/s")


if __name__ == "__main__":
    main()
