"""The `train_vocab` job: a SentencePiece vocabulary from a task or mixture, language-balanced.

    python -m aya_jax.main --config configs/train_vocab.py[:<task or mixture>] [--config.train_vocab.size=32000]

Sampling. With n_L the train rows of language L in what `config.data.task` reads (its languages only, for a
mixture), language L gets a quota q_L = R * p_L of the `config.train_vocab.max_rows` = R rows, with
p_L ∝ n_L^(1/T) (`config.train_vocab.temperature`; T = 1/0.3 as mT5 did for its vocabulary). A language with
fewer rows than its quota gives all it has, and the rest is shared out again among the others (water
filling), so R rows are used whenever the data has them. Rows within a language are a uniform sample
(seeded reservoir sampling over one pass of the files, `config.seed`). Every text field of a row is a
sentence for SentencePiece; the chat template's markers are always reserved as single pieces.

The model is trained with the project's SentencePiece options (`vocab.SENTENCEPIECE_OPTIONS`: unigram, byte
fallback, identity normalisation, pad 0 / eos 1 / unk 2) and written to `<workdir>/spm_<size>.model`; the job
prints each language's share and its tokens per character on held-out rows (the validation split if there
is one, else rows not sampled), the usual check that no language is starved of pieces.
"""

import collections
import dataclasses
import json
import logging
import shutil
import time

import numpy as np
import sentencepiece as spm

from aya_jax import defaults, workdirs
from aya_jax.data import chat_template, languages, registry, vocab

log = logging.getLogger(__name__)

_HELD_OUT_PER_LANGUAGE = 50


def balanced_quotas(rows: dict[str, int], total: int, temperature: float) -> dict[str, int]:
    """q_L (module docstring): integer quotas, q_L <= n_L, summing to min(total, sum n_L)."""
    if not temperature > 0:
        raise ValueError(f"config.train_vocab.temperature={temperature!r}: expected > 0")
    remaining = {lang: n for lang, n in rows.items() if n > 0}
    quotas: dict[str, int] = {}
    budget = min(total, sum(remaining.values()))
    while remaining and budget > 0:
        mass = {lang: n ** (1.0 / temperature) for lang, n in remaining.items()}
        scale = budget / sum(mass.values())
        full = {lang for lang, n in remaining.items() if mass[lang] * scale >= n}
        if not full:  # nobody runs out: share the budget, largest remainders first
            share = {lang: mass[lang] * scale for lang in remaining}
            base = {lang: int(np.floor(v)) for lang, v in share.items()}
            left = budget - sum(base.values())
            for lang in sorted(share, key=lambda k: (base[k] - share[k], k))[:left]:
                base[lang] += 1
            quotas.update(base)
            break
        for lang in sorted(full):
            quotas[lang] = remaining.pop(lang)
            budget -= quotas[lang]
    return {lang: quotas.get(lang, 0) for lang in rows}


@dataclasses.dataclass
class VocabSummary:
    model_path: str
    size: int
    rows_available: dict[str, int]
    rows_taken: dict[str, int]
    tokens_per_char: dict[str, float]  # on held-out rows


def _texts(row: dict[str, str]) -> list[str]:
    return [row[f] for f in vocab.TEXT_FIELDS if row.get(f)]


def run(config, workdir: str) -> VocabSummary:
    defaults.validate(config, ("data", "train_vocab"))
    start = time.perf_counter()
    options, data = config.train_vocab, config.data
    # Before the data is sampled and the model trained: the model and summary go to the workdir.
    out_dir = workdirs.check_writable(workdir, "--workdir")
    chosen = registry.selections(data)
    available = collections.Counter()
    for selection in chosen:
        available.update(selection.rows_per_language())
    quotas = balanced_quotas(dict(available), int(options.max_rows), float(options.temperature))

    # One pass per source: reservoir-sample each language's quota, keep a few other rows to measure on.
    rng = np.random.default_rng(int(config.seed))
    reservoirs: dict[str, list] = collections.defaultdict(list)
    seen = collections.Counter()
    held_out: dict[str, list] = collections.defaultdict(list)
    for selection in chosen:
        keep = set(selection.languages) if selection.languages else None
        for row in selection.reader("train"):
            lang = row["language_code"]
            if keep is not None and lang not in keep:
                continue
            seen[lang] += 1
            reservoir, quota = reservoirs[lang], quotas.get(lang, 0)
            if len(reservoir) < quota:
                reservoir.append(row)
            else:
                j = int(rng.integers(seen[lang]))
                if j < quota:
                    held_out_row, reservoir[j] = reservoir[j], row
                else:
                    held_out_row = row
                if len(held_out[lang]) < _HELD_OUT_PER_LANGUAGE:
                    held_out[lang].append(held_out_row)
        if "validation" in selection.source.split_files:
            for row in selection.reader("validation"):
                lang = row["language_code"]
                if (keep is None or lang in keep) and len(held_out[lang]) < _HELD_OUT_PER_LANGUAGE:
                    held_out[lang].append(row)

    sentences = [text for lang in sorted(reservoirs) for row in reservoirs[lang] for text in _texts(row)]
    if not sentences:
        raise ValueError(f"config.data.task: {data.task!r}: no text to train a vocabulary on")
    symbols = chat_template.SPECIAL_TOKENS  # reserved whatever the format: one vocabulary serves both
    cached = vocab.train_sentencepiece(
        sentences,
        size=int(options.size),
        cache_dir=out_dir / "cache",
        user_defined_symbols=symbols,
        size_field="config.train_vocab.size",
    )
    model_path = out_dir / f"spm_{int(options.size)}.model"
    shutil.copyfile(cached, model_path)

    processor = spm.SentencePieceProcessor(model_file=str(model_path))
    tokens_per_char = {}
    for lang, rows in sorted(held_out.items()):
        texts = [t for row in rows for t in _texts(row)]
        chars = sum(len(t) for t in texts)
        if chars:
            tokens_per_char[lang] = sum(len(ids) for ids in processor.encode(texts)) / chars
    summary = VocabSummary(
        model_path=str(model_path),
        size=processor.get_piece_size(),
        rows_available=dict(available),
        rows_taken={lang: len(rows) for lang, rows in reservoirs.items()},
        tokens_per_char=tokens_per_char,
    )
    taken_total = sum(summary.rows_taken.values())
    print(f"\n{data.task}: SentencePiece model of {summary.size} pieces on {taken_total:,} rows ({len(sentences):,} "
          f"texts), T = {float(options.temperature):.3g}")  # fmt: skip
    header = f"{'lang':<6} {'name':<22} {'rows':>10} {'taken':>8} {'share %':>8} {'tokens/char':>11}"
    print(header + "\n" + "-" * len(header))
    for lang in sorted(available, key=lambda k: -summary.rows_taken.get(k, 0)):
        known = languages.maybe_lookup(lang)
        taken = summary.rows_taken.get(lang, 0)
        tpc = f"{tokens_per_char[lang]:.3f}" if lang in tokens_per_char else "-"
        print(f"{lang:<6} {(known.name if known else '?')[:22]:<22} {available[lang]:>10,} {taken:>8,} "
              f"{100 * taken / max(1, taken_total):>8.2f} {tpc:>11}")  # fmt: skip
    (out_dir / "vocab_summary.json").write_text(
        json.dumps(dataclasses.asdict(summary), indent=1) + "\n", encoding="utf-8"
    )
    print(
        f"wrote {model_path} in {time.perf_counter() - start:.1f}s; train with --config.data.vocab.path={model_path}"
    )
    return summary
