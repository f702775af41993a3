"""Global-MMLU 0-shot throughput (items/s) of the benchmark model: aya_jax's native evaluator against
lm-evaluation-harness with transformers (lm-eval's own `hf` model) on the same exported checkpoint, in one run.

    python benchmarks/global_mmlu.py                              # 64 items, native batch 8,32, harness 1,8
    python benchmarks/global_mmlu.py --items 32 --native-batch 16 --hf-batch 4
    python benchmarks/global_mmlu.py --small-vocab                # 8000-token BPE instead of Command-R's

Model (fixed): cohere-bench (hidden 512, ffn 1536, 8 layers, 8 heads), random weights, fp32, with the real
Command-R tokenizer (../shared/data/tokenizers/command_r/tokenizer.json.gz; the model's vocabulary becomes the
tokenizer's, 256000) when it exists, else (or with --small-vocab) a byte-level BPE of 8000 tokens trained here on
the question text, with Cohere's special tokens and a `<BOS_TOKEN> $A` post-processor. The output says which.

Data: `--items` Global-MMLU-format items spread over five languages (fr sw ja ar hi), written as parquet in the
published layout (`<dir>/<lang>/test-00000-of-00001.parquet`); question and options are whole NTREX-128
sentences of that language (../shared/data/parallel/ntrex128_subset), so prompts have realistic multilingual
lengths, or synthetic words when NTREX is absent. Answers are spread over A-D.

Native: `global_mmlu.evaluate(load(dir), TextModel(Scorer(..., batch_size=B)).loglikelihood, batch=4*B)`, timed
after one warm-up pass of the same shapes (its extra time, mostly compilation, is reported apart); tokenization,
scoring and aggregation are all inside the timing. Harness: `lm_eval.simple_evaluate` with one `HFLM` instance
(model load excluded; its batch size changed between runs), torch fp32 on as many threads as cores; items/s
counts the time inside `HFLM.loglikelihood` (tokenization + forward passes), the whole call's wall time (task
building from parquet included) is printed beside it. The harness scores each item's four requests with one
forward pass (its logits cache: " A".." D" are one token each and share the context) over the full vocabulary
at every position; the native scorer runs all four rows but projects only the continuation's positions onto the
vocabulary. Each side's best batch size is compared. Both must give the same accuracy (printed).
Shared machines are noisy: compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import platform
import sys
import tempfile
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from flax import linen as nn  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aya_jax import hf  # noqa: E402
from aya_jax.data import vocab  # noqa: E402
from aya_jax.evaluation import global_mmlu  # noqa: E402
from aya_jax.evaluation.likelihood import Scorer, TextModel  # noqa: E402
from aya_jax.models import cohere  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TOKENIZER = SHARED / "tokenizers/command_r/tokenizer.json.gz"
NTREX = SHARED / "parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl"
LANGS = {"fr": "fra", "sw": "swa", "ja": "jpn", "ar": "arb", "hi": "hin"}  # Global-MMLU code -> NTREX column
SPECIAL = ["<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<EOP_TOKEN>",
           "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
           "<|SYSTEM_TOKEN|>"]  # fmt: skip


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The widest vector extensions the CPU reports (what XLA and torch's kernels can use)."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith(("flags", "Features"))
        )
    except (OSError, StopIteration):
        return platform.machine()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd", "sve"]
    return f"{platform.machine()} " + " ".join(f for f in wanted if f in flags)


# ------------------------------------------------------------------------------------------------------------
# Data and tokenizer
# ------------------------------------------------------------------------------------------------------------


def sentences() -> tuple[dict[str, list[str]], str]:
    """({lang: sentences}, where they came from)."""
    if NTREX.exists():
        rows = [json.loads(line) for line in NTREX.open(encoding="utf-8")]
        return {lang: [r[col] for r in rows] for lang, col in LANGS.items()}, f"NTREX-128 ({len(rows)} rows)"
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    out = {}
    for lang in LANGS:
        words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(2000)]
        out[lang] = [" ".join(rng.choice(words, rng.integers(12, 30))) + "." for _ in range(300)]
    return out, "synthetic words (NTREX absent)"


def write_items(root: pathlib.Path, texts: dict[str, list[str]], n: int) -> dict[str, int]:
    """n items round-robin over the languages, one parquet test split per language; {lang: count}."""
    counts = {}
    for li, lang in enumerate(LANGS):
        rows = []
        for i in range(li, n, len(LANGS)):
            k = len(rows)
            s = [texts[lang][(5 * k + j) % len(texts[lang])] for j in range(5)]
            rows.append({
                "sample_id": f"{lang}/{k}", "subject": "world_news", "subject_category": "Humanities",
                "question": s[0], "option_a": s[1], "option_b": s[2], "option_c": s[3], "option_d": s[4],
                "answer": "ABCD"[i % 4], "required_knowledge": "", "time_sensitive": "No", "reference": "",
                "culture": "", "region": "", "country": "", "cultural_sensitivity_label": ["CS", "CA", "-"][k % 3],
                "is_annotated": k % 3 != 2,
            })  # fmt: skip
        if rows:
            (root / lang).mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows), root / lang / "test-00000-of-00001.parquet")
            counts[lang] = len(rows)
    return counts


def write_tasks(tasks: pathlib.Path, data: pathlib.Path, langs) -> list[str]:
    """One lm-eval task per language: lm-eval's global_mmlu_full prompt, 0-shot, on the local parquet."""
    names = []
    for lang in langs:
        names.append(f"bench_global_mmlu_{lang}")
        (tasks / f"{names[-1]}.yaml").write_text(textwrap.dedent(f"""\
            task: {names[-1]}
            dataset_path: parquet
            dataset_kwargs:
              data_files:
                test: {data / lang / "test-00000-of-00001.parquet"}
            test_split: test
            num_fewshot: 0
            output_type: multiple_choice
            doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{option_a}}}}\\nB. {{{{option_b}}}}\\nC. {{{{option_c}}}}\\nD. {{{{option_d}}}}\\nAnswer:"
            doc_to_choice: ["A", "B", "C", "D"]
            doc_to_target: answer
            metric_list:
              - metric: acc
                aggregation: mean
                higher_is_better: true
            """))  # fmt: skip
    return names


def small_tokenizer(texts: dict[str, list[str]], path: pathlib.Path, size: int = 8000) -> pathlib.Path:
    """A byte-level BPE on the question text with Cohere's special tokens; BOS added like Command-R's."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="<UNK>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([s for lang in texts.values() for s in lang] + ["Answer: A B C D"], trainer)
    bos = tok.token_to_id("<BOS_TOKEN>")
    tok.post_processor = processors.TemplateProcessing(
        single="<BOS_TOKEN> $A", pair="<BOS_TOKEN> $A $B", special_tokens=[("<BOS_TOKEN>", bos)]
    )
    path.write_bytes(gzip.compress(tok.to_str().encode("utf-8")))
    return path


# ------------------------------------------------------------------------------------------------------------
# The two paths
# ------------------------------------------------------------------------------------------------------------


def run_native(model, params, codec, data: pathlib.Path, batch: int) -> tuple[float, float, float]:
    """(seconds of a timed pass, extra seconds of the warm-up pass, micro accuracy)."""
    text_model = TextModel(Scorer(model, params, pad_id=codec.pad_id, batch_size=batch), codec)

    def once():
        t0 = time.perf_counter()
        items = global_mmlu.load(data, tuple(LANGS_PRESENT), "test")
        out = global_mmlu.evaluate(items, text_model.loglikelihood, batch=4 * batch, rounds=10)
        return time.perf_counter() - t0, out

    warm, _ = once()
    took, out = once()
    return took, warm - took, float(out["overall"]["micro"]["all"]["mean"])


def run_harness(lm, tasks_dir: pathlib.Path, names: list[str], batch: int) -> tuple[float, float, float]:
    """(seconds inside HFLM.loglikelihood, seconds of the whole simple_evaluate, micro accuracy)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm.batch_size_per_gpu = batch
    spent = [0.0]
    original = type(lm).loglikelihood

    def timed(requests, *a, **k):
        t0 = time.perf_counter()
        try:
            return original(lm, requests, *a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    lm.loglikelihood = timed
    try:
        t0 = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=lm, tasks=names, task_manager=TaskManager(include_path=str(tasks_dir)), num_fewshot=0,
            verbosity="ERROR",
        )  # fmt: skip
        wall = time.perf_counter() - t0
    finally:
        del lm.loglikelihood
    n = {name: out["n-samples"][name]["effective"] for name in names}
    acc = sum(out["results"][name]["acc,none"] * n[name] for name in names) / sum(n.values())
    return spent[0], wall, acc


LANGS_PRESENT: list[str] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=64, help="Global-MMLU items in all (over 5 languages)")
    ap.add_argument("--native-batch", default="8,32", help="Scorer batch sizes to sweep (comma-separated)")
    ap.add_argument("--hf-batch", default="1,8", help="lm-eval hf batch sizes to sweep (comma-separated)")
    ap.add_argument("--small-vocab", action="store_true", help="8000-token BPE even if Command-R's exists")
    args = ap.parse_args()
    native_batches = [int(b) for b in args.native_batch.split(",")]
    hf_batches = [int(b) for b in args.hf_batch.split(",")]

    try:
        import torch
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        sys.exit(f"lm_eval/transformers/torch not installed ({e.name}): pip install -e '.[hf,eval]'")
    torch.set_num_threads(os.cpu_count() or 1)
    import logging

    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    device = jax.devices()[0]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); ISA: {cpu_isa()}")
    print(
        f"jax {jax.__version__} on {device.platform} ({jax.device_count()} device(s)); torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        texts, source = sentences()
        if TOKENIZER.exists() and not args.small_vocab:
            tokenizer, which = TOKENIZER, "Command-R tokenizer.json"
        else:
            tokenizer = small_tokenizer(texts, root / "tokenizer.json.gz")
            which = "byte-level BPE trained here on the question text (Cohere special tokens, BOS added)"
        codec = vocab.HfTokenizerCodec(tokenizer)
        cfg = cohere.PRESETS["cohere-bench"].replace(
            vocab_size=codec.vocab_size
        )  # the tokenizer's vocabulary
        model = cohere.CohereLM(cfg, dtype=jnp.float32, param_dtype=jnp.float32)
        params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
        hf.save(root / "hf", params, cfg, dtype="float32", tokenizer=tokenizer)

        data = root / "global_mmlu"
        counts = write_items(data, texts, args.items)
        LANGS_PRESENT[:] = list(counts)
        tasks = root / "tasks"
        tasks.mkdir()
        names = write_tasks(tasks, data, counts)
        items = global_mmlu.load(data, tuple(counts), "test")
        lengths = [len(codec.encode(c, True)) for c, _ in global_mmlu.requests(sum(items.values(), []))[::4]]
        n = sum(counts.values())
        print(
            f"model cohere-bench {cohere.param_count(cfg) / 1e6:.1f} M params (vocab {cfg.vocab_size}: {which}), "
            f"random init, fp32"
        )
        print(
            f"data: {n} items, 0-shot ({', '.join(f'{k} {v}' for k, v in counts.items())}), text from {source}; "
            f"prompt tokens mean {np.mean(lengths):.0f}, min {min(lengths)}, max {max(lengths)}"
        )

        rows = []
        for b in native_batches:
            took, compile_s, acc = run_native(model, params, codec, data, b)
            rows.append(
                ("aya_jax native", b, n / took, acc, f"warm-up pass +{compile_s:.1f} s (compilation)")
            )
            print(
                f"  native   batch {b:3d}: {took:6.2f} s, {n / took:7.2f} items/s, acc {acc:.4f}", flush=True
            )

        t0 = time.perf_counter()
        lm = HFLM(pretrained=str(root / "hf"), dtype="float32", device="cpu", batch_size=hf_batches[0])
        print(f"  harness model load {time.perf_counter() - t0:.1f} s (excluded)")
        for b in hf_batches:
            took, wall, acc = run_harness(lm, tasks, names, b)
            rows.append(("lm-eval hf (transformers)", b, n / took, acc, f"simple_evaluate wall {wall:.1f} s"))
            print(
                f"  harness  batch {b:3d}: {took:6.2f} s, {n / took:7.2f} items/s, acc {acc:.4f}", flush=True
            )

    print(f"\n{'path':26s} {'batch':>5s} {'items/s':>9s} {'acc':>7s}  note")
    for path, b, ips, acc, note in rows:
        print(f"{path:26s} {b:5d} {ips:9.2f} {acc:7.4f}  {note}")
    best_native = max((r for r in rows if r[0].startswith("aya_jax")), key=lambda r: r[2])
    best_hf = max((r for r in rows if r[0].startswith("lm-eval")), key=lambda r: r[2])
    accs = {round(r[3], 9) for r in rows}
    print(
        f"\nbest: native batch {best_native[1]} {best_native[2]:.2f} items/s, harness batch {best_hf[1]} "
        f"{best_hf[2]:.2f} items/s; native / harness = {best_native[2] / best_hf[2]:.2f}×"
    )
    print(f"accuracy {'identical on both paths' if len(accs) == 1 else 'DIFFERS: ' + str(sorted(accs))}")


if __name__ == "__main__":
    main()
