"""The embedded default data set: real multilingual text from installed packages, in Aya Dataset format.

Two sources, both real text written by people (nothing here is machine translated):

* `templated-cldr`: instructions in English whose answers are strings from the Unicode CLDR locale data that
  Babel ships (month and weekday names, the locale's names for languages, countries, currencies and scripts,
  units, dates written out in full), over ~110 locales. This follows the Aya Collection's templated data sets:
  a handful of phrasings per template, chosen by a stable hash, answers in the target language. Only data a
  locale defines itself is used (checked against Babel's un-inherited locale data), so a locale that merely
  inherits French (Haitian Creole in CLDR 47) or root's placeholders ("M01") contributes nothing.
* `chatterbot-dialogue`: the human-written dialogues of the `chatterbot_corpus` package (27 languages used;
  its Hinglish folder is left out: Hindi-English code-mixing in Latin script has no ISO 639-3 code). Each
  consecutive (utterance, reply) pair becomes one (inputs, targets) row.

Rows: `inputs, targets, language, language_code (ISO 639-3), annotation_type, user_id` (a stable hash of the
source the row came from). The split is by a hash of the row's text (~3% validation), so it does not move when
rows are added, and duplicates always land in the same split. Files are written once under
`<data_dir>/aya_default/` and reused; the manifest's version (and the Babel / chatterbot-corpus versions it
was built from) decide when to rebuild.
"""

import collections
import datetime
import functools
import hashlib
import importlib.metadata
import json
import logging
import pathlib
import pickle
import time
from collections.abc import Iterator

import babel
import yaml
from babel import dates, lists, localedata

from aya_jax.data import cache, languages

log = logging.getLogger(__name__)

NAME = "aya_default"
DATA_VERSION = 1  # bump whenever the generated rows change
VALIDATION_PERCENT = 3
SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl"}
MANIFEST = "manifest.json"

# CLDR locales whose language subtag is not the table's ISO 639-1 / 639-3 code, and script variants worth
# their own rows (traditional Chinese, Latin-script Serbian).
_LOCALE_OVERRIDES = {"twi": ("ak",)}
_SCRIPT_VARIANTS = (("zh_Hant", "zho"), ("sr_Latn", "srp"))

# chatterbot_corpus folder -> ISO 639-3.
_CHATTERBOT_LANGUAGES = {
    "bengali": "ben", "chinese": "zho", "dutch": "nld", "english": "eng", "french": "fra", "german": "deu",
    "hebrew": "heb", "hindi": "hin", "indonesian": "ind", "italian": "ita", "japanese": "jpn",
    "korean": "kor", "marathi": "mar", "oriya": "ory", "persian": "pes", "portuguese": "por",
    "russian": "rus", "spanish": "spa", "swedish": "swe", "tamil": "tam", "telugu": "tel", "thai": "tha",
    "traditionalchinese": "zho", "turkish": "tur", "ukrainian": "ukr", "urdu": "urd", "yoruba": "yor",
}  # fmt: skip
_CHATTERBOT_SKIPPED = {"hinglish"}

_COUNTRIES = (
    "AR BD BR CA CN CO DE EG ES ET FR GB GH GR ID IL IN IR IT JP KE KR MA MX NG NL PE PH PK PL PT RU SA "
    "SE TR TZ UA US VN ZA"
).split()
_CURRENCIES = "USD EUR JPY GBP CNY INR RUB BRL MXN NGN KES EGP TRY IDR KRW CHF".split()
_SCRIPTS = "Latn Cyrl Arab Deva Grek Hebr Hans Hant Jpan Kore Thai Ethi".split()
_LANGUAGE_NAMES = languages.AYA23_CODES + ("sw", "yo", "ha", "am", "bn", "ur", "ta", "ms")
_UNITS = (
    (3, "length-kilometer"), (12, "length-centimeter"), (5, "mass-kilogram"), (250, "mass-gram"),
    (2, "volume-liter"), (45, "duration-minute"), (3, "duration-hour"), (7, "duration-day"),
    (2, "duration-week"), (6, "duration-month"), (10, "duration-year"), (25, "temperature-celsius"),
    (60, "speed-kilometer-per-hour"), (100, "area-square-meter"),
)  # fmt: skip
_DATES = (datetime.date(2024, 3, 5), datetime.date(1999, 12, 31))
# Rows per locale drawn from each list above (see `_some`): ~70 rows per locale, ~8k in all.
_PER_LOCALE = {"language": 10, "country": 12, "currency": 5, "script": 4, "unit": 6}

# Several English phrasings per template ({lang}: the target language's English name).
_TEMPLATES = {
    "months": (
        "List the twelve months of the year in {lang}.",
        "What are the names of the months in {lang}, from January to December?",
        "Write out all the month names in {lang}, in order.",
    ),
    "days": (
        "Name the days of the week in {lang}, starting with Monday.",
        "What are the seven days of the week called in {lang}? Start from Monday.",
        "List the weekdays in {lang}, from Monday to Sunday.",
    ),
    "quarters": (
        "Name the four quarters of the year in {lang}.",
        "How are the quarters of a year called in {lang}?",
    ),
    "month": (
        "How do you say '{item}' in {lang}?",
        "What is the {lang} word for the month of {item}?",
        "Translate the month name '{item}' into {lang}.",
    ),
    "day": (
        "How do you say '{item}' in {lang}?",
        "What is {item} called in {lang}?",
        "Translate the weekday '{item}' into {lang}.",
    ),
    "own_name": (
        "What do speakers of {lang} call their own language?",
        "How is the name of the {lang} language written in {lang} itself?",
    ),
    "language": (
        "What is the {lang} name for the {item} language?",
        "In {lang}, what is the {item} language called?",
        "Write the name of the language '{item}' in {lang}.",
    ),
    "country": (
        "What is the name of the country {item} in {lang}?",
        "How is '{item}' written in {lang}?",
        "Translate the country name '{item}' into {lang}.",
    ),
    "currency": (
        "What is the {lang} name of the currency '{item}'?",
        "How do {lang} speakers call the {item}?",
        "Give the {lang} name for this currency: {item}.",
    ),
    "script": (
        "What is the {item} writing system called in {lang}?",
        "Give the {lang} name of the {item} script.",
    ),
    "unit": (
        "Write '{item}' in {lang}.",
        "How do you say '{item}' in {lang}?",
        "Express '{item}' in {lang}.",
    ),
    "date": (
        "Write the date {item} in full, as it is written in {lang}.",
        "How is the date {item} written in {lang}? Include the weekday.",
    ),
}


def _stable_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha1("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


def _source_id(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]


def _row(inputs: str, targets: str, code: str, annotation_type: str, source: str) -> dict[str, str]:
    return {
        "inputs": inputs,
        "targets": targets,
        "language": languages.lookup(code).name,
        "language_code": languages.lookup(code).iso639_3,
        "annotation_type": annotation_type,
        "user_id": _source_id(source),
    }


# ---- CLDR templates ----------------------------------------------------------------------------------------


@functools.cache
def _own_locale_data(loc: str) -> dict:
    """The data a CLDR locale defines itself, without what it inherits. Read from Babel's pickle directly:
    `localedata.load(loc, merge_inherited=False)` would put this un-merged dict into Babel's cache, which is
    keyed by name only, and every later `babel.Locale(loc)` would then lack its inherited data."""
    with open(localedata.resolve_locale_filename(loc), "rb") as f:
        return pickle.load(f)


def cldr_locales() -> list[tuple[str, str]]:
    """(Babel locale id, ISO 639-3) for every table language CLDR has data for, plus script variants."""
    available = set(localedata.locale_identifiers())
    out = []
    for lang in languages.all_languages():
        candidates = (lang.iso639_1, lang.iso639_3, *_LOCALE_OVERRIDES.get(lang.iso639_3, ()))
        for loc in candidates:
            if loc and loc in available and "months" in _own_locale_data(loc):
                out.append((loc, lang.iso639_3))
                break
    return out + [v for v in _SCRIPT_VARIANTS if v[0] in available]


def _some(loc: str, template: str, names: dict[str, str]) -> list[tuple[str, str]]:
    """A stable choice of `_PER_LOCALE[template]` of `names`, different for each locale: every country (say)
    still appears across the ~110 locales, at a tenth of the rows."""
    ranked = sorted(names.items(), key=lambda kv: _stable_hash(loc, template, kv[0]))
    return ranked[: _PER_LOCALE[template]]


def _own_names(raw: dict, key: str, codes) -> dict[str, str]:
    """The names this locale defines itself (not inherited) for `codes` under `key`."""
    table = raw.get(key, {})
    return {c: table[c] for c in codes if isinstance(table.get(c), str) and table[c].strip()}


def _own_wide(raw: dict, key: str, context: str | None = None) -> list[str] | None:
    """Wide names of months / days / quarters if the locale defines them itself: stand-alone (nominative)
    where it has them, else the format forms. Read from the un-inherited data only: Babel 2.18's merged data
    for an aliased context can hold another locale's names (loading `fy` rewrites the stand-alone weekday
    names every later locale inherits from root)."""
    # Babel's keys: months 1..12, days 0=Monday..6=Sunday, quarters 1..4.
    keys = {"months": range(1, 13), "days": range(7), "quarters": range(1, 5)}[key]
    table = raw.get(key)
    for ctx in (context,) if context else ("stand-alone", "format"):
        names = table.get(ctx) if isinstance(table, dict) else None
        names = names.get("wide") if isinstance(names, dict) else None
        if isinstance(names, dict) and all(isinstance(names.get(k), str) and names[k].strip() for k in keys):
            return [names[k] for k in keys]
    return None


def _unit_text(value: int, unit: str, patterns, locale) -> str | None:
    """ "3 километра": the locale's own long unit pattern for the value's plural category, with ASCII digits
    (the English instruction uses them too)."""
    long = patterns.get(unit, {}).get("long", {}) if isinstance(patterns.get(unit), dict) else {}
    pattern = long.get(locale.plural_form(value)) or long.get("other")
    return pattern.format(value) if isinstance(pattern, str) else None


def _cldr_locale_rows(loc: str, code: str) -> Iterator[dict[str, str]]:
    raw = _own_locale_data(loc)
    merged = babel.Locale.parse(loc)
    lang = languages.lookup(code).name
    source = f"babel-cldr/{loc}"

    def row(template: str, targets: str, item: str = "") -> dict[str, str]:
        options = _TEMPLATES[template]
        prompt = options[_stable_hash(loc, template, item) % len(options)].format(lang=lang, item=item)
        return _row(prompt, targets, code, "templated-cldr", source)

    def join(items: list[str]) -> str:
        if "list_patterns" not in raw:
            return ", ".join(items)
        return lists.format_list(items, locale=merged)  # the locale's own list pattern ("a, b na c")

    months, days = _own_wide(raw, "months"), _own_wide(raw, "days")
    if months:
        yield row("months", join(months))
        for name, english_name in zip(months, _own_wide(_own_locale_data("en"), "months"), strict=True):
            yield row("month", name, english_name)
    if days:
        yield row("days", join(days))
        for name, english_name in zip(days, _own_wide(_own_locale_data("en"), "days"), strict=True):
            yield row("day", name, english_name)
    quarters = _own_wide(raw, "quarters")
    if quarters:
        yield row("quarters", join(quarters))

    english = _own_locale_data("en")
    lang_subtag = loc.split("_")[0]
    own = _own_names(raw, "languages", [loc, lang_subtag])
    if own:
        yield row("own_name", own.get(loc, own.get(lang_subtag)))
    names = _own_names(raw, "languages", [c for c in _LANGUAGE_NAMES if c != lang_subtag])
    for c, name in _some(loc, "language", names):
        yield row("language", name, languages.lookup(c).name)
    for c, name in _some(loc, "country", _own_names(raw, "territories", _COUNTRIES)):
        yield row("country", name, english["territories"][c])
    for c, name in _some(loc, "currency", _own_names(raw, "currency_names", _CURRENCIES)):
        yield row("currency", name, english["currency_names"][c])
    for c, name in _some(loc, "script", _own_names(raw, "scripts", _SCRIPTS)):
        yield row("script", name, english["scripts"][c])
    unit_names = {}
    for value, unit in _UNITS:
        text = _unit_text(value, unit, raw.get("unit_patterns", {}), merged)
        if text:
            unit_names[_unit_text(value, unit, english["unit_patterns"], babel.Locale("en"))] = text
    for english_text, text in _some(loc, "unit", unit_names):
        yield row("unit", text, english_text)
    # A full date spells out the weekday and month in their format forms: only where the locale has its own.
    if _own_wide(raw, "months", "format") and _own_wide(raw, "days", "format") and "date_formats" in raw:
        for d in _DATES:
            yield row("date", dates.format_date(d, "full", locale=merged), d.isoformat())


def cldr_rows() -> Iterator[dict[str, str]]:
    for loc, code in cldr_locales():
        yield from _cldr_locale_rows(loc, code)


# ---- chatterbot dialogues ----------------------------------------------------------------------------------


def chatterbot_dir() -> pathlib.Path:
    import chatterbot_corpus  # the package is only data; import it only to find its folder

    return pathlib.Path(chatterbot_corpus.__file__).parent / "data"


def chatterbot_rows() -> Iterator[dict[str, str]]:
    # BaseLoader: every scalar stays a string ("yes" and "no" are words here, not YAML 1.1 booleans).
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
    for folder in sorted(p for p in chatterbot_dir().iterdir() if p.is_dir()):
        code = _CHATTERBOT_LANGUAGES.get(folder.name)
        if code is None:
            if folder.name not in _CHATTERBOT_SKIPPED:
                log.warning("chatterbot_corpus folder %s has no language mapping; skipped", folder)
            continue
        for path in sorted(folder.glob("*.yml")):
            with path.open(encoding="utf-8") as f:
                doc = yaml.load(f, Loader=loader) or {}
            source = f"chatterbot_corpus/{folder.name}/{path.name}"
            for conversation in doc.get("conversations", []):
                if not isinstance(conversation, list):
                    continue  # a few entries in the corpus are stray strings, not dialogues
                turns = [t.strip() for t in conversation if isinstance(t, str)]
                for utterance, reply in zip(turns, turns[1:], strict=False):
                    if utterance and reply:
                        yield _row(utterance, reply, code, "chatterbot-dialogue", source)


# ---- build, split, write -----------------------------------------------------------------------------------


def generate_rows() -> list[dict[str, str]]:
    """All rows, de-duplicated, in a stable pseudo-random order (so a streaming reader with a small shuffle
    buffer still sees every language early)."""
    seen, rows = set(), []
    for r in (*cldr_rows(), *chatterbot_rows()):
        key = (r["inputs"], r["targets"], r["language_code"])
        if key not in seen:
            seen.add(key)
            rows.append(r)
    rows.sort(key=lambda r: _stable_hash("order", r["inputs"], r["targets"], r["language_code"]))
    return rows


def split_of(row: dict[str, str]) -> str:
    h = _stable_hash("split", row["inputs"], row["targets"], row["language_code"])
    return "validation" if h % 100 < VALIDATION_PERCENT else "train"


def _generator_versions() -> dict[str, str]:
    return {
        "babel": babel.__version__,
        "chatterbot_corpus": importlib.metadata.version("chatterbot-corpus"),
    }


def dataset_dir(data_config) -> pathlib.Path:
    return cache.data_dir(data_config) / NAME


def _read_manifest(folder: pathlib.Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != DATA_VERSION or manifest.get("generator") != _generator_versions():
        return None
    for split in SPLIT_FILES.values():
        info = manifest["files"].get(split, {})
        path = folder / split
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            return None
    return manifest


def ensure_default_data(data_config) -> dict:
    """Generate the default data into `<data_dir>/aya_default/` unless an up-to-date copy is there; returns
    the manifest (split files, row counts, sha256 of each file, rows per language)."""
    folder = dataset_dir(data_config)
    manifest = _read_manifest(folder)
    if manifest is not None:
        return manifest
    start = time.perf_counter()
    rows = generate_rows()
    lines = {split: [] for split in SPLIT_FILES}
    per_language = collections.Counter()
    for r in rows:
        lines[split_of(r)].append(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
        per_language[r["language_code"]] += 1
    files = {}
    for split, name in SPLIT_FILES.items():
        data = ("\n".join(lines[split]) + "\n").encode("utf-8")
        cache.atomic_write_bytes(folder / name, data)
        files[name] = {
            "rows": len(lines[split]),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    manifest = {
        "name": NAME,
        "version": DATA_VERSION,
        "generator": _generator_versions(),
        "splits": SPLIT_FILES,
        "files": files,
        "rows_per_language": dict(sorted(per_language.items())),
        "seconds": round(time.perf_counter() - start, 2),
    }
    # The manifest goes last: its presence (with matching sizes) is what marks the data complete.
    cache.atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    log.info(
        "%s: generated %d rows (train %d, validation %d) in %d languages in %.1fs at %s",
        NAME, len(rows), files["train.jsonl"]["rows"], files["validation.jsonl"]["rows"], len(per_language),
        manifest["seconds"], folder,
    )  # fmt: skip
    log.info("%s rows per language: %s", NAME, ", ".join(f"{k} {v}" for k, v in per_language.most_common()))
    return manifest


def split_paths(data_config) -> dict[str, pathlib.Path]:
    """split -> jsonl path of the default data, generating it first if needed."""
    ensure_default_data(data_config)
    folder = dataset_dir(data_config)
    return {split: folder / name for split, name in SPLIT_FILES.items()}
