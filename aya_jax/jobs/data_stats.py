"""The `data_stats` job: what a config is about to train on.

    python -m aya_jax.main --config configs/data_stats.py                 # the embedded default mixture
    python -m aya_jax.main --config configs/data_stats.py:aya23_sft --config.data.aya_dataset_dir=/data/aya_dataset

For `config.data.task` (the default data, a catalog task or a gin mixture) it

1. counts every train row per language and per source (`aya_dataset/original-annotations`,
   `aya_collection/<dataset_name>`, ...): examples, tokens with the run's vocabulary (chat template included
   in the chat format, `config.data.format`), target tokens, and examples longer than `config.data.seq_len`;
2. draws `config.data_stats.sample_examples` examples from the actual training stream (the same seqio task
   or mixture, seed and shuffling the trainer uses, before packing) and compares the sampled language
   proportions with the configured ones (a mixture's rates; for a single task, its rows' proportions);
3. prints both tables and the bad rows skipped per reason, and writes `data_stats.json` and a bar chart of
   the language distribution, `language_distribution.png`, into the workdir.
"""

import collections
import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Sequence

import numpy as np
import seqio

from aya_jax import defaults, workdirs
from aya_jax.data import catalog, chat_template, languages, mixtures, pipeline, registry, vocab

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Counts:
    examples: int = 0
    tokens: int = 0
    target_tokens: int = 0
    over_length: int = 0

    def add(self, other: "Counts") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclasses.dataclass
class DataStats:
    task: str
    per_language: dict[str, Counts]
    per_source: dict[str, Counts]
    configured: dict[str, float]  # language -> configured proportion
    sampled: dict[str, float]  # language -> proportion among the sampled examples
    sampled_examples: int
    bad_rows: dict[str, int]
    json_path: str
    plot_path: str | None

    def max_abs_difference(self) -> float:
        """Largest |configured - sampled| over the languages (as a fraction)."""
        langs = set(self.configured) | set(self.sampled)
        return max(abs(self.configured.get(k, 0.0) - self.sampled.get(k, 0.0)) for k in langs)


def token_lengths(task_vocab: seqio.Vocabulary, texts: Sequence[str]) -> list[int]:
    """Token counts of many strings, through the vocabulary's batch encoder when it has one."""
    if isinstance(task_vocab, vocab.HfTokenizerVocabulary):
        return [len(e.ids) for e in task_vocab.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    if isinstance(task_vocab, seqio.SentencePieceVocabulary):
        return [len(ids) for ids in task_vocab.tokenizer.encode(list(texts))]
    return [len(task_vocab.encode(t)) for t in texts]


def _row_texts(row: dict[str, str], chat: bool) -> tuple[list[str], list[str]]:
    """(prompt-side texts, target-side texts) as the model reads them."""
    prompt_field = "inputs" if "inputs" in row else "prompt"
    prompt = chat_template.prompt_text(row[prompt_field]) if chat else row[prompt_field]
    completions = [row[f] for f in ("targets", "chosen", "rejected") if f in row]
    if chat:
        completions = [chat_template.completion_text(c) for c in completions]
    return [prompt], completions


def count_selection(
    selection: catalog.Selection, task_vocab: seqio.Vocabulary, *, seq_len: int, chat: bool, max_rows: int = 0
) -> tuple[dict[tuple[str, str], Counts], dict[str, int]]:
    """Counts per (language, source label) of a selection's train rows, and its bad rows per reason."""
    out: dict[tuple[str, str], Counts] = collections.defaultdict(Counts)
    reader = selection.reader("train")
    keep = set(selection.languages) if selection.languages else None
    batch: list[dict[str, str]] = []

    def flush():
        prompts, completions, owners = [], [], []
        for i, row in enumerate(batch):
            p, c = _row_texts(row, chat)
            prompts += p
            completions += c
            owners += [i] * len(c)
        p_len = token_lengths(task_vocab, prompts)
        c_len = token_lengths(task_vocab, completions)
        # The raw format appends EOS to an answer; the chat format's answer already ends with its end-of-turn.
        eos = 0 if chat else 1
        per_row = np.zeros(len(batch), np.int64)
        np.add.at(per_row, owners, np.asarray(c_len, np.int64) + eos)
        # A preference row is two sequences (prompt + chosen, prompt + rejected): the longer one counts.
        longest = np.asarray(p_len, np.int64)
        if c_len:
            longest_completion = np.zeros(len(batch), np.int64)
            np.maximum.at(longest_completion, owners, np.asarray(c_len, np.int64) + eos)
            longest = longest + longest_completion
        for i, row in enumerate(batch):
            sub = selection.source.schema.source_of(row)
            label = f"{selection.source.name}/{sub}" if sub else selection.source.name
            counts = out[(row["language_code"], label)]
            counts.examples += 1
            counts.target_tokens += int(per_row[i])
            counts.tokens += int(per_row[i]) + p_len[i]
            counts.over_length += int(longest[i] > seq_len)
        batch.clear()

    for n, row in enumerate(reader, start=1):
        if keep is not None and row["language_code"] not in keep:
            continue
        batch.append(row)
        if len(batch) == 2048:
            flush()
        if max_rows and n >= max_rows:
            break
    if batch:
        flush()
    return dict(out), dict(reader.stats.counts)


def sample_languages(
    spec: pipeline.DataSpec, data_config, *, num_examples: int, seed: int
) -> collections.Counter:
    """Languages of the first `num_examples` examples of the training stream (seqio task or mixture, the
    trainer's seed and shuffling, before packing)."""
    provider = seqio.get_mixture_or_task(spec.task_name)
    lengths = {name: data_config.seq_len for name in provider.output_features}
    kwargs = dict(
        sequence_length=lengths, split=data_config.train_split, shuffle=True, seed=seed, num_epochs=None
    )
    if isinstance(provider, seqio.Mixture):
        ds = provider.get_dataset(**kwargs, passthrough_features=["language_code"])
    else:
        ds = provider.get_dataset(**kwargs, shuffle_buffer_size=data_config.shuffle_buffer)
    codes = ds.map(lambda ex: ex["language_code"]).take(num_examples).batch(4096)
    counts = collections.Counter()
    for chunk in codes.as_numpy_iterator():
        for code, n in collections.Counter(chunk.tolist()).items():
            lang = languages.maybe_lookup(code.decode("utf-8"))
            counts[lang.iso639_3 if lang else code.decode("utf-8")] += n
    return counts


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(
        str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    )
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _plot(path: pathlib.Path, title: str, configured: dict, sampled: dict, examples: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    langs = sorted(set(configured) | set(sampled), key=lambda k: (-configured.get(k, 0.0), k))
    x = np.arange(len(langs))
    width = max(6.0, 0.22 * len(langs))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.bar(x - 0.2, [100 * configured.get(k, 0) for k in langs], 0.4, label="configured")
    top.bar(x + 0.2, [100 * sampled.get(k, 0) for k in langs], 0.4, label="sampled")
    top.set_ylabel("share of examples (%)")
    top.set_title(title)
    top.legend()
    bottom.bar(x, [max(examples.get(k, 0), 1) for k in langs], 0.6, color="gray")
    bottom.set_yscale("log")
    bottom.set_ylabel("train rows")
    bottom.set_xticks(x, langs, rotation=90, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config, workdir: str) -> DataStats:
    defaults.validate(config, ("data", "data_stats"))
    start = time.perf_counter()
    data, options = config.data, config.data_stats
    # Before the data is read and counted (minutes on the full mixtures): the results go to the workdir.
    out_dir = workdirs.check_writable(workdir, "--workdir")
    spec = pipeline.prepare(data)
    chosen = registry.selections(data)

    per_pair: dict[tuple[str, str], Counts] = collections.defaultdict(Counts)
    bad = collections.Counter()
    for selection in chosen:
        counts, bad_rows = count_selection(
            selection,
            spec.vocab,
            seq_len=data.seq_len,
            chat=data.format == "chat",
            max_rows=options.max_rows_per_source,
        )
        for key, c in counts.items():
            per_pair[key].add(c)
        bad.update(bad_rows)
    per_language, per_source = collections.defaultdict(Counts), collections.defaultdict(Counts)
    for (lang, source), c in per_pair.items():
        per_language[lang].add(c)
        per_source[source].add(c)

    info = mixtures.mixture_info(spec.task_name) if pipeline.is_mixture(spec) else None
    if info is not None:
        configured = dict(info.language_rates)
    else:
        total = sum(c.examples for c in per_language.values())
        configured = {lang: c.examples / total for lang, c in per_language.items()}
    sampled_counts = sample_languages(spec, data, num_examples=options.sample_examples, seed=config.seed)
    n_sampled = sum(sampled_counts.values())
    sampled = {lang: n / n_sampled for lang, n in sampled_counts.items()}

    langs = sorted(set(per_language) | set(configured), key=lambda k: (-configured.get(k, 0.0), k))
    lang_rows = []
    for lang in langs:
        c = per_language.get(lang, Counts())
        known = languages.maybe_lookup(lang)
        lang_rows.append([
            lang, known.name if known else "?", f"{c.examples:,}", f"{c.tokens:,}", f"{c.target_tokens:,}",
            f"{c.over_length:,}", f"{100 * configured.get(lang, 0):.2f}", f"{100 * sampled.get(lang, 0):.2f}",
        ])  # fmt: skip
    total = Counts()
    for c in per_language.values():
        total.add(c)
    lang_rows.append(
        [
            "all",
            "",
            f"{total.examples:,}",
            f"{total.tokens:,}",
            f"{total.target_tokens:,}",
            f"{total.over_length:,}",
            "100.00",
            "100.00",
        ]
    )
    source_rows = [
        [s, f"{c.examples:,}", f"{c.tokens:,}", f"{c.target_tokens:,}", f"{c.over_length:,}"]
        for s, c in sorted(per_source.items(), key=lambda kv: -kv[1].examples)
    ]
    capped = (
        f" (first {options.max_rows_per_source:,} rows of each source)" if options.max_rows_per_source else ""
    )
    print(f"\n{spec.task_name}: train rows per language{capped}; tokens with {type(spec.vocab).__name__} "
          f"({spec.vocab_size:,} ids); 'over' = longer than seq_len {data.seq_len}; configured vs sampled % over "
          f"{n_sampled:,} sampled examples")  # fmt: skip
    print(
        _table(
            lang_rows,
            ["lang", "name", "examples", "tokens", "target tokens", "over", "configured %", "sampled %"],
        )
    )
    print("\nper source")
    print(_table(source_rows, ["source", "examples", "tokens", "target tokens", "over"]))
    if bad:
        print("\nbad rows skipped: " + ", ".join(f"{reason}: {n:,}" for reason, n in sorted(bad.items())))
    result = DataStats(
        task=spec.task_name,
        per_language=dict(per_language),
        per_source=dict(per_source),
        configured=configured,
        sampled=sampled,
        sampled_examples=n_sampled,
        bad_rows=dict(bad),
        json_path=str(out_dir / "data_stats.json"),
        plot_path=str(out_dir / "language_distribution.png") if options.plot else None,
    )
    print(f"max |configured - sampled| = {100 * result.max_abs_difference():.2f} percentage points")
    payload = {
        "task": spec.task_name,
        "per_language": {k: dataclasses.asdict(v) for k, v in result.per_language.items()},
        "per_source": {k: dataclasses.asdict(v) for k, v in result.per_source.items()},
        "configured": configured,
        "sampled": sampled,
        "sampled_examples": n_sampled,
        "bad_rows": result.bad_rows,
    }
    pathlib.Path(result.json_path).write_text(
        json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if result.plot_path:
        examples = {k: v.examples for k, v in per_language.items()}
        _plot(
            pathlib.Path(result.plot_path),
            f"{spec.task_name}: language distribution",
            configured,
            sampled,
            examples,
        )
    print(
        f"wrote {result.json_path}"
        + (f" and {result.plot_path}" if result.plot_path else "")
        + f" in {time.perf_counter() - start:.1f}s"
    )
    return result
