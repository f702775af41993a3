"""Preference pairs built from the embedded default data: a multilingual set anyone can rebuild offline, for
reward models and offline DPO (aya_jax/jobs/reward.py, dpo.py).

One pair per default-data row (`default_data`), in the preference schema (`sources.PREFERENCE`):

    prompt    the row's `inputs` (an English instruction naming the answer's language, or a chatterbot
              utterance in that language)
    chosen    the row's `targets`: the real answer, written by people (CLDR data, chatterbot corpus)
    rejected  a real answer *in another language*:
                templated-cldr rows: the same question asked for another language (the instruction with the
                  language's English name taken out is the same), e.g. "List the months in French" ->
                  chosen the French months, rejected the German ones ("category": "same-template");
                  when no other language has that exact question, another language's answer to any
                  templated question ("category": "other-language")
                chatterbot rows: a reply from the corpus in another language ("category": "other-language")
    language_code, language     the row's; `subset` its annotation_type; `id` a stable hash

So the preference is the one the verifiable rewards check: answer in the language that was asked for. The
rejected text never equals the chosen one (CLDR names shared by two languages are skipped), and it is drawn by
a stable hash, so the files are the same on every machine.

Splits follow the default data: a pair is in validation iff its row is (`default_data.split_of`), and the
rejected answers of both splits come from train rows only — no held-out target is ever seen in training, not
even as a negative.

The files are written once to `<data_dir>/aya_default_preference/{train,validation}.jsonl` (a manifest ties
them to the default data's file hashes and `DATA_VERSION`) and read through the catalog's `preference_pairs`
task (`pairs_data_config` points `config.data.preference_dir` at them) with
`prompt_converters.PreferencePairFeatureConverter` — the same path as any user's preference files.
"""

import collections
import copy
import hashlib
import json
import logging
import pathlib
from collections.abc import Iterable, Sequence

from aya_jax.data import cache, default_data, sources

log = logging.getLogger(__name__)

NAME = "aya_default_preference"
DATA_VERSION = 1  # bump whenever the generated pairs change
SPLIT_FILES = default_data.SPLIT_FILES
MANIFEST = "manifest.json"
TEMPLATED = "templated-cldr"
SAME_TEMPLATE, OTHER_LANGUAGE = "same-template", "other-language"


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha1("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


def template_key(row: dict[str, str]) -> str:
    """The question with the answer language's English name taken out: rows sharing it ask the same thing
    of different languages ("How do you say 'March' in {lang}?")."""
    return row["inputs"].replace(row["language"], "{lang}") if row["language"] else row["inputs"]


def _pick(row: dict[str, str], candidates: Sequence[dict[str, str]]) -> dict[str, str] | None:
    """A stable pseudo-random candidate in another language whose answer differs from the row's; None if
    there is none. Walks the candidates from a hashed start, so the choice does not depend on list order
    beyond the (sorted) candidates themselves."""
    if not candidates:
        return None
    start = _hash(row["inputs"], row["targets"], row["language_code"]) % len(candidates)
    chosen = row["targets"].strip()
    for i in range(len(candidates)):
        c = candidates[(start + i) % len(candidates)]
        if c["language_code"] != row["language_code"] and c["targets"].strip() != chosen:
            return c
    return None


def _sorted(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(rows, key=lambda r: _hash("pool", r["inputs"], r["targets"], r["language_code"]))


def build_pairs(train_rows: Sequence[dict[str, str]], rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Preference pairs (module docstring) for `rows`, with rejected answers drawn from `train_rows`."""
    by_template: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    by_type: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for r in train_rows:
        by_type[r["annotation_type"]].append(r)
        if r["annotation_type"] == TEMPLATED:
            by_template[template_key(r)].append(r)
    by_template = {k: _sorted(v) for k, v in by_template.items()}
    by_type = {k: _sorted(v) for k, v in by_type.items()}

    pairs = []
    for row in rows:
        rejected, category = None, OTHER_LANGUAGE
        if row["annotation_type"] == TEMPLATED:
            rejected = _pick(row, by_template.get(template_key(row), ()))
            category = SAME_TEMPLATE if rejected is not None else OTHER_LANGUAGE
        if rejected is None:
            rejected = _pick(row, by_type.get(row["annotation_type"], ()))
        if rejected is None:
            continue  # a type with a single language: no answer in another language to reject
        pairs.append(
            {
                "prompt": row["inputs"],
                "chosen": row["targets"],
                "rejected": rejected["targets"],
                "language_code": row["language_code"],
                "language": row["language"],
                "subset": row["annotation_type"],
                "category": category,
                "id": f"{_hash(row['inputs'], row['targets'], row['language_code']):016x}",
            }
        )
    return pairs


def dataset_dir(data_config) -> pathlib.Path:
    return cache.data_dir(data_config) / NAME


def _read_manifest(folder: pathlib.Path, source: dict) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != DATA_VERSION or manifest.get("source") != source:
        return None
    for name, info in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            return None
    return manifest


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    return list(sources.RowReader([str(path)], strict=True, schema=sources.AYA_DATASET))


def ensure_preference_pairs(data_config) -> dict:
    """Write the pairs under `<data_dir>/aya_default_preference/` (generating the default data first if
    needed) unless an up-to-date copy is there; returns the manifest (files, pairs per split, language and
    category)."""
    source_manifest = default_data.ensure_default_data(data_config)
    source = {
        "name": default_data.NAME,
        "sha256": {name: info["sha256"] for name, info in source_manifest["files"].items()},
    }
    folder = dataset_dir(data_config)
    manifest = _read_manifest(folder, source)
    if manifest is not None:
        return manifest
    paths = default_data.split_paths(data_config)
    train_rows = _rows(paths["train"])
    files, per_language, per_category = {}, collections.Counter(), collections.Counter()
    for split, name in SPLIT_FILES.items():
        rows = train_rows if split == "train" else _rows(paths[split])
        pairs = build_pairs(train_rows, rows)
        per_language.update(p["language_code"] for p in pairs)
        per_category.update(f"{split}/{p['category']}" for p in pairs)
        data = "".join(json.dumps(p, ensure_ascii=False, separators=(",", ":")) + "\n" for p in pairs)
        payload = data.encode("utf-8")
        cache.atomic_write_bytes(folder / name, payload)
        files[name] = {
            "pairs": len(pairs),
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    manifest = {
        "name": NAME,
        "version": DATA_VERSION,
        "source": source,
        "files": files,
        "pairs_per_category": dict(sorted(per_category.items())),
        "pairs_per_language": dict(sorted(per_language.items())),
    }
    # Written last: its presence (with matching sizes) marks the pairs complete.
    cache.atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    log.info(
        "%s: wrote %s pairs in %d languages to %s",
        NAME, {n: f["pairs"] for n, f in files.items()}, len(per_language), folder,
    )  # fmt: skip
    return manifest


def vocabulary_path(vocab) -> str:
    """The file a seqio vocabulary was loaded from (SentencePiece model or tokenizer.json)."""
    path = getattr(vocab, "sentencepiece_model_file", None) or getattr(vocab, "path", None)
    if not path:
        raise ValueError(f"{vocab}: cannot tell which file this vocabulary was loaded from")
    return str(path)


def pairs_data_config(data_config, task: str, default_pairs: bool, vocab, field: str):
    """A copy of `data_config` that reads preference task `task` (a catalog name: `preference_pairs` or
    `preference_pairs_<lang>`) with the policy's vocabulary `vocab`. With `default_pairs` the task reads the
    pairs of this module (written first if needed) and config.data.preference_dir must be empty; `field` names
    the config field that chose them, for the error."""
    if not (task == "preference_pairs" or task.startswith("preference_pairs_")):
        raise ValueError(
            f"{field.rsplit('.', 1)[0]}.task: {task!r} is not preference_pairs or preference_pairs_<lang>"
        )
    out = copy.deepcopy(data_config)
    out.task = task
    out.vocab.path = vocabulary_path(vocab)
    if default_pairs:
        if data_config.preference_dir:
            raise ValueError(
                f"{field}: True reads the pairs built from the default data, but config.data.preference_dir is "
                f"set ({data_config.preference_dir}); set {field}=False to read that folder"
            )
        ensure_preference_pairs(data_config)
        out.preference_dir = str(dataset_dir(data_config))
    return out
