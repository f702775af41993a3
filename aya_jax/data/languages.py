"""The languages Aya models cover, and a stable integer id for each (the per-token language feature).

Tables (provenance: docs/data.md): the 23 Aya 23 / Aya Expanse languages (ISO 639-1; arXiv 2405.15032,
2412.04261) and the 101 Aya 101 languages (ISO 639-3; arXiv 2402.07827), plus a few extra languages that the
embedded default data (Babel's CLDR) also covers. Every entry carries its ISO 639-1 code (where one exists),
ISO 639-3 code, English name and script(s) (ISO 15924).

`lookup` accepts either code, case-insensitively, and the common individual-language / deprecated codes that
real data sets use for the same language (Aya Dataset's `arb`, `zsm`, `npi`, ...; M-RewardBench's `arb_Arab`):
anything after `-` or `_` is a region/script subtag and is ignored.

Language ids: 0 means "unknown / padding". The Aya 101 languages take 1..101 in sorted ISO 639-3 order, then
`_EXTRA_LANGUAGES` follow in their listed order. That list is append-only: ids end up in checkpoints (language
embeddings) and must never move, so new languages go at the end of `_EXTRA_LANGUAGES`.
"""

import dataclasses
import difflib
import functools

UNKNOWN_LANGUAGE_ID = 0


@dataclasses.dataclass(frozen=True)
class Language:
    iso639_3: str
    iso639_1: str | None  # None where ISO 639-1 has no code (Cebuano, Filipino, Northern Sotho, ...)
    name: str  # English name
    scripts: tuple[str, ...]  # ISO 15924; the first is the usual one

    @property
    def code(self) -> str:
        """The code the Aya data sets use in `language_code`: ISO 639-3."""
        return self.iso639_3


def _lang(iso3: str, iso1: str | None, name: str, *scripts: str) -> Language:
    return Language(iso639_3=iso3, iso639_1=iso1, name=name, scripts=scripts)


# The 101 Aya 101 languages (the Aya model paper, arXiv 2402.07827), by their ISO 639-3 codes.
_AYA101_LANGUAGES = (
    _lang("afr", "af", "Afrikaans", "Latn"),
    _lang("amh", "am", "Amharic", "Ethi"),
    _lang("ara", "ar", "Arabic", "Arab"),
    _lang("aze", "az", "Azerbaijani", "Latn"),
    _lang("bel", "be", "Belarusian", "Cyrl"),
    _lang("ben", "bn", "Bengali", "Beng"),
    _lang("bul", "bg", "Bulgarian", "Cyrl"),
    _lang("cat", "ca", "Catalan", "Latn"),
    _lang("ceb", None, "Cebuano", "Latn"),
    _lang("ces", "cs", "Czech", "Latn"),
    _lang("cym", "cy", "Welsh", "Latn"),
    _lang("dan", "da", "Danish", "Latn"),
    _lang("deu", "de", "German", "Latn"),
    _lang("ell", "el", "Greek", "Grek"),
    _lang("eng", "en", "English", "Latn"),
    _lang("epo", "eo", "Esperanto", "Latn"),
    _lang("est", "et", "Estonian", "Latn"),
    _lang("eus", "eu", "Basque", "Latn"),
    _lang("fin", "fi", "Finnish", "Latn"),
    _lang("fil", None, "Filipino", "Latn"),
    _lang("fra", "fr", "French", "Latn"),
    _lang("fry", "fy", "Western Frisian", "Latn"),
    _lang("gla", "gd", "Scottish Gaelic", "Latn"),
    _lang("gle", "ga", "Irish", "Latn"),
    _lang("glg", "gl", "Galician", "Latn"),
    _lang("guj", "gu", "Gujarati", "Gujr"),
    _lang("hat", "ht", "Haitian Creole", "Latn"),
    _lang("hau", "ha", "Hausa", "Latn"),
    _lang("heb", "he", "Hebrew", "Hebr"),
    _lang("hin", "hi", "Hindi", "Deva"),
    _lang("hun", "hu", "Hungarian", "Latn"),
    _lang("hye", "hy", "Armenian", "Armn"),
    _lang("ibo", "ig", "Igbo", "Latn"),
    _lang("ind", "id", "Indonesian", "Latn"),
    _lang("isl", "is", "Icelandic", "Latn"),
    _lang("ita", "it", "Italian", "Latn"),
    _lang("jav", "jv", "Javanese", "Latn"),
    _lang("jpn", "ja", "Japanese", "Jpan"),
    _lang("kan", "kn", "Kannada", "Knda"),
    _lang("kat", "ka", "Georgian", "Geor"),
    _lang("kaz", "kk", "Kazakh", "Cyrl"),
    _lang("khm", "km", "Khmer", "Khmr"),
    _lang("kir", "ky", "Kyrgyz", "Cyrl"),
    _lang("kor", "ko", "Korean", "Kore"),
    _lang("kur", "ku", "Kurdish", "Latn"),
    _lang("lao", "lo", "Lao", "Laoo"),
    _lang("lat", "la", "Latin", "Latn"),
    _lang("lav", "lv", "Latvian", "Latn"),
    _lang("lit", "lt", "Lithuanian", "Latn"),
    _lang("ltz", "lb", "Luxembourgish", "Latn"),
    _lang("mal", "ml", "Malayalam", "Mlym"),
    _lang("mar", "mr", "Marathi", "Deva"),
    _lang("mkd", "mk", "Macedonian", "Cyrl"),
    _lang("mlg", "mg", "Malagasy", "Latn"),
    _lang("mlt", "mt", "Maltese", "Latn"),
    _lang("mon", "mn", "Mongolian", "Cyrl"),
    _lang("mri", "mi", "Maori", "Latn"),
    _lang("msa", "ms", "Malay", "Latn"),
    _lang("mya", "my", "Burmese", "Mymr"),
    _lang("nep", "ne", "Nepali", "Deva"),
    _lang("nld", "nl", "Dutch", "Latn"),
    _lang("nor", "no", "Norwegian", "Latn"),
    _lang("nso", None, "Northern Sotho", "Latn"),
    _lang("nya", "ny", "Chichewa", "Latn"),
    _lang("ory", "or", "Odia", "Orya"),
    _lang("pan", "pa", "Punjabi", "Guru"),
    _lang("pes", "fa", "Persian", "Arab"),
    _lang("pol", "pl", "Polish", "Latn"),
    _lang("por", "pt", "Portuguese", "Latn"),
    _lang("pus", "ps", "Pashto", "Arab"),
    _lang("ron", "ro", "Romanian", "Latn"),
    _lang("rus", "ru", "Russian", "Cyrl"),
    _lang("sin", "si", "Sinhala", "Sinh"),
    _lang("slk", "sk", "Slovak", "Latn"),
    _lang("slv", "sl", "Slovenian", "Latn"),
    _lang("smo", "sm", "Samoan", "Latn"),
    _lang("sna", "sn", "Shona", "Latn"),
    _lang("snd", "sd", "Sindhi", "Arab"),
    _lang("som", "so", "Somali", "Latn"),
    _lang("sot", "st", "Southern Sotho", "Latn"),
    _lang("spa", "es", "Spanish", "Latn"),
    _lang("sqi", "sq", "Albanian", "Latn"),
    _lang("srp", "sr", "Serbian", "Cyrl", "Latn"),
    _lang("sun", "su", "Sundanese", "Latn"),
    _lang("swa", "sw", "Swahili", "Latn"),
    _lang("swe", "sv", "Swedish", "Latn"),
    _lang("tam", "ta", "Tamil", "Taml"),
    _lang("tel", "te", "Telugu", "Telu"),
    _lang("tgk", "tg", "Tajik", "Cyrl"),
    _lang("tha", "th", "Thai", "Thai"),
    _lang("tur", "tr", "Turkish", "Latn"),
    _lang("twi", "tw", "Twi", "Latn"),
    _lang("ukr", "uk", "Ukrainian", "Cyrl"),
    _lang("urd", "ur", "Urdu", "Arab"),
    _lang("uzb", "uz", "Uzbek", "Latn"),
    _lang("vie", "vi", "Vietnamese", "Latn"),
    _lang("xho", "xh", "Xhosa", "Latn"),
    _lang("yid", "yi", "Yiddish", "Hebr"),
    _lang("yor", "yo", "Yoruba", "Latn"),
    _lang("zho", "zh", "Chinese", "Hans", "Hant"),  # simplified and traditional
    _lang("zul", "zu", "Zulu", "Latn"),
)

# Aya 23 / Aya Expanse (arXiv 2405.15032, 2412.04261), as ISO 639-1 codes. "fa" is Persian (pes in the Aya 101
# list).
AYA23_CODES = tuple("ar zh cs nl en fr de el he hi id it ja ko fa pl pt ro ru es tr uk vi".split())

# Languages outside Aya 101 that the default data's CLDR templates cover. APPEND-ONLY (ids follow the order).
_EXTRA_LANGUAGES = (
    _lang("hrv", "hr", "Croatian", "Latn"),
    _lang("bos", "bs", "Bosnian", "Latn"),
    _lang("asm", "as", "Assamese", "Beng"),
    _lang("tir", "ti", "Tigrinya", "Ethi"),
    _lang("orm", "om", "Oromo", "Latn"),
    _lang("bre", "br", "Breton", "Latn"),
    _lang("fao", "fo", "Faroese", "Latn"),
    _lang("tat", "tt", "Tatar", "Cyrl"),
    _lang("uig", "ug", "Uyghur", "Arab"),
    _lang("wol", "wo", "Wolof", "Latn"),
    _lang("tuk", "tk", "Turkmen", "Latn"),
    _lang("chr", None, "Cherokee", "Cher"),
    _lang("ckb", None, "Central Kurdish", "Arab"),
    _lang("kok", None, "Konkani", "Deva"),
    _lang("oci", "oc", "Occitan", "Latn"),
)

# Other codes real data uses for a language in the tables: ISO 639-3 individual languages inside a
# macrolanguage (Aya Dataset, FLORES/M-RewardBench), deprecated ISO 639-1 codes, and CLDR's locale codes for
# the same language.
_ALIASES = {
    "arb": "ara", "fas": "pes", "zsm": "msa", "npi": "nep", "swh": "swa", "cmn": "zho", "ekk": "est",
    "lvs": "lav", "khk": "mon", "plt": "mlg", "uzn": "uzb", "azj": "aze", "nob": "nor", "nb": "nor",
    "ydd": "yid", "kmr": "kur", "als": "sqi", "pbt": "pus", "tgl": "fil", "tl": "fil", "iw": "heb",
    "in": "ind", "ji": "yid", "jw": "jav", "aka": "twi", "ak": "twi", "ori": "ory",
}  # fmt: skip

AYA101_CODES = tuple(lang.iso639_3 for lang in _AYA101_LANGUAGES)


@functools.cache
def _index() -> dict[str, Language]:
    """Every accepted code (lower case) -> its Language."""
    index: dict[str, Language] = {}
    for lang in (*_AYA101_LANGUAGES, *_EXTRA_LANGUAGES):
        for code in (lang.iso639_3, lang.iso639_1):
            if code is None:
                continue
            if code in index:
                raise AssertionError(f"language code {code!r} appears twice in aya_jax/data/languages.py")
            index[code] = lang
    for alias, target in _ALIASES.items():
        index.setdefault(alias, index[target])
    return index


@functools.cache
def _ids() -> dict[str, int]:
    """ISO 639-3 -> language id (see the module docstring for why this order)."""
    order = sorted(AYA101_CODES) + [lang.iso639_3 for lang in _EXTRA_LANGUAGES]
    return {code: i + 1 for i, code in enumerate(order)}


def all_languages() -> tuple[Language, ...]:
    """Every language in the tables, in language-id order."""
    by_code = {lang.iso639_3: lang for lang in (*_AYA101_LANGUAGES, *_EXTRA_LANGUAGES)}
    return tuple(by_code[code] for code in _ids())


def aya23_languages() -> tuple[Language, ...]:
    return tuple(lookup(code) for code in AYA23_CODES)


def aya101_languages() -> tuple[Language, ...]:
    return _AYA101_LANGUAGES


def _normalise(code: str) -> str:
    # "arb_Arab", "zh-Hant", "pt-BR": the language subtag is what identifies the table entry.
    return code.strip().replace("_", "-").split("-")[0].lower()


def maybe_lookup(code: str) -> Language | None:
    """Like `lookup`, but None for an unknown code."""
    return _index().get(_normalise(code)) if isinstance(code, str) else None


def lookup(code: str) -> Language:
    """The language of an ISO 639-1 or 639-3 code (`lookup("fr")`, `lookup("fra")`); ValueError if unknown."""
    lang = maybe_lookup(code)
    if lang is None:
        close = difflib.get_close_matches(_normalise(str(code)), sorted(_index()), n=1, cutoff=0.0)
        hint = f"; nearest known code: {close[0]!r} ({_index()[close[0]].name})" if close else ""
        raise ValueError(f"unknown language code {code!r}{hint}")
    return lang


@functools.cache
def _names() -> dict[str, Language]:
    """English name (lower case) -> Language."""
    return {lang.name.lower(): lang for lang in (*_AYA101_LANGUAGES, *_EXTRA_LANGUAGES)}


def maybe_resolve(code_or_name: str) -> Language | None:
    """A code (as `maybe_lookup`) or an English name from the tables ("French", "swahili"); None if neither.
    Some data sets (Aya Collection exports) put a name rather than a code in their `language` field."""
    if not isinstance(code_or_name, str):
        return None
    return maybe_lookup(code_or_name) or _names().get(code_or_name.strip().lower())


def accepted_codes(lang: Language) -> tuple[str, ...]:
    """Every code (lower case) that `lookup` maps to `lang`: ISO 639-1/639-3 and the aliases."""
    return tuple(sorted(code for code, target in _index().items() if target is lang))


def language_id(code: str) -> int:
    """Stable id for the per-token language feature; 0 for an unknown code (and for padding)."""
    lang = maybe_lookup(code)
    return UNKNOWN_LANGUAGE_ID if lang is None else _ids()[lang.iso639_3]


def language_code(language_id_: int) -> str:
    """Inverse of `language_id`: the ISO 639-3 code, or "" for 0 (unknown / padding)."""
    if language_id_ == UNKNOWN_LANGUAGE_ID:
        return ""
    for code, i in _ids().items():
        if i == language_id_:
            return code
    raise ValueError(f"unknown language id {language_id_}: ids run from 0 to {num_language_ids() - 1}")


def num_language_ids() -> int:
    """Size of a language-embedding table: ids are in [0, num_language_ids())."""
    return len(_ids()) + 1


def code_to_id_table() -> dict[str, int]:
    """Every accepted code (lower case, no subtags) -> language id: the feature converter's lookup table."""
    return {code: _ids()[lang.iso639_3] for code, lang in _index().items()}
