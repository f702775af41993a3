"""Realistic fixtures in the published Aya schemas, built from real text in ../shared/data (never copied into
the repository; written to a test's tmp folder):

* Aya Dataset (jsonl.gz, as `data/train-*.jsonl.gz` / `data/test-*.jsonl.gz`): NTREX-128 news sentences as
  translation instructions, English source -> one of 39 languages, language codes as the Aya Dataset writes
  them (`arb`, `zho`, `fas`, ...). Languages get different row counts (300, 150, 100, ...) so temperature
  sampling has something to flatten.
* Aya Collection (parquet, one folder per dataset_name as published): the same sentences under two templated
  "datasets" with integer template ids, the language in `language` (no `language_code`) and a `script`.
* Preference pairs (jsonl): Anthropic hh-rlhf harmless-base test pairs split at the last "Assistant:" turn
  into a shared prompt and the chosen / rejected replies (English).
* Prompts (jsonl): the HPLT OpenAssistant test prompts in 11 languages.
"""

import gzip
import hashlib
import json
import pathlib

from aya_jax.data import languages

TEMPLATES = (
    "Translate the following sentence into {lang}: {text}",
    "How would you say this in {lang}?\n{text}",
    "{text}\n\nTranslate the text above to {lang}.",
)


def _pick(*parts) -> int:
    return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def ntrex(shared: pathlib.Path) -> list[dict]:
    path = shared / "parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl"
    return [json.loads(line) for line in filter(None, path.read_text(encoding="utf-8").split("\n"))]


def ntrex_languages(lines: list[dict]) -> list[str]:
    """NTREX column names other than English, in file order (`arb`, `zho-CN`, ...)."""
    return [k for k in lines[0] if k not in ("line", "doc_id", "eng")]


def rows_per_language(index: int) -> int:
    """NTREX lines used for the index-th language: 300, 150, 100, 75, 60, 50, 42, 37, 300, ..."""
    return 300 // (1 + index % 8)


def aya_dataset_rows(shared: pathlib.Path) -> dict[str, list[dict]]:
    """split -> Aya Dataset rows (every 10th NTREX line is test)."""
    lines = ntrex(shared)
    out = {"train": [], "test": []}
    for index, column in enumerate(ntrex_languages(lines)):
        code = column.split("-")[0]  # zho-CN and zho-TW are both zho, as in the Aya Dataset
        lang = languages.lookup(code)
        for line in lines[: rows_per_language(index)]:
            template = TEMPLATES[_pick(column, line["line"]) % len(TEMPLATES)]
            row = {
                "inputs": template.format(lang=lang.name, text=line["eng"]),
                "targets": line[column],
                "language": lang.name,
                "language_code": code,
                "annotation_type": "original-annotations" if line["line"] % 3 else "re-annotations",
                "user_id": hashlib.sha1(column.encode()).hexdigest()[:12],
            }
            out["test" if line["line"] % 10 == 9 else "train"].append(row)
    return out


def write_jsonl_gz(path: pathlib.Path, rows: list[dict], extra_lines: list[bytes] = ()) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows) + b"".join(extra_lines)
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def write_aya_dataset(folder: pathlib.Path, shared: pathlib.Path) -> dict[str, list[dict]]:
    rows = aya_dataset_rows(shared)
    write_jsonl_gz(folder / "data/train-00000-of-00001.jsonl.gz", rows["train"])
    write_jsonl_gz(folder / "data/test-00000-of-00001.jsonl.gz", rows["test"])
    return rows


def write_parquet(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def aya_collection_rows(shared: pathlib.Path, per_language: int = 60) -> dict[str, dict[str, list[dict]]]:
    """dataset_name -> split -> Aya Collection rows."""
    lines = ntrex(shared)[:per_language]
    out = {
        "templated_ntrex128": {"train": [], "validation": []},
        "templated_ntrex128_en": {"train": [], "validation": []},
    }
    next_id = 0
    for column in ntrex_languages(lines):
        code = column.split("-")[0]
        lang = languages.lookup(code)
        script = {"zho-CN": "Hans", "zho-TW": "Hant"}.get(column, lang.scripts[0])
        for line in lines:
            split = "validation" if line["line"] % 10 == 9 else "train"
            template_id = _pick("c", column, line["line"]) % 3
            forward = {
                "id": next_id, "inputs": TEMPLATES[template_id].format(lang=lang.name, text=line["eng"]),
                "targets": line[column], "dataset_name": "templated_ntrex128", "sub_dataset_name": "-",
                "task_type": "translation", "template_id": template_id + 1, "language": code, "script": script,
                "split": split,
            }  # fmt: skip
            backward = dict(
                forward, id=next_id + 1, inputs=f"Translate to English: {line[column]}", targets=line["eng"],
                dataset_name="templated_ntrex128_en", template_id=1, language="eng", script="Latn",
            )  # fmt: skip
            next_id += 2
            out["templated_ntrex128"][split].append(forward)
            out["templated_ntrex128_en"][split].append(backward)
    return out


def write_aya_collection(folder: pathlib.Path, shared: pathlib.Path) -> dict[str, dict[str, list[dict]]]:
    rows = aya_collection_rows(shared)
    for dataset, splits in rows.items():
        for split, split_rows in splits.items():
            write_parquet(folder / dataset / f"{split}-00000-of-00001.parquet", split_rows)
    return rows


def preference_rows(shared: pathlib.Path, limit: int = 240) -> list[dict]:
    out = []
    with gzip.open(shared / "safety/hh_rlhf/harmless-base_test.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            pair = json.loads(line)
            cut = pair["chosen"].rfind("\n\nAssistant:")
            prompt = pair["chosen"][: cut + len("\n\nAssistant:")]
            if cut < 0 or not pair["rejected"].startswith(prompt):
                continue
            chosen, rejected = pair["chosen"][len(prompt) :].strip(), pair["rejected"][len(prompt) :].strip()
            if chosen and rejected and chosen != rejected:
                out.append(
                    {
                        "prompt": prompt.strip(),
                        "chosen": chosen,
                        "rejected": rejected,
                        "language": "en",
                        "subset": "harmless-base",
                    }
                )
            if len(out) == limit:
                break
    return out


def prompt_lines(shared: pathlib.Path) -> list[bytes]:
    """jsonl lines of prompts-only rows: the HPLT prompts with a `language` field added. One line of the
    source (test_hi.jsonl, line 50) is malformed JSON ('...हैं?""}'): it is passed through unchanged, a real
    bad row for the reader to count."""
    out = []
    for path in sorted((shared / "instruct/hplt_oasst_test_prompts").glob("test_*.jsonl")):
        code = path.stem.split("_")[1]
        # split("\n"), not splitlines(): some prompts hold U+2028 LINE SEPARATOR inside their JSON strings.
        for line in filter(None, path.read_text(encoding="utf-8").split("\n")):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                out.append(line.encode("utf-8"))
                continue
            out.append(
                json.dumps(
                    {"id": row["id"], "prompt": row["prompt"], "language": code}, ensure_ascii=False
                ).encode()
            )
    return out
