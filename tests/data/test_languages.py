"""Language tables against the published lists (Aya 23: arXiv 2405.15032; Aya 101: arXiv 2402.07827; both in
docs/data.md) and CLDR, lookups both ways, and stable ids."""

import babel.core
import pytest

from aya_jax.data import languages

PUBLISHED_AYA23 = "ar zh cs nl en fr de el he hi id it ja ko fa pl pt ro ru es tr uk vi".split()
PUBLISHED_AYA101 = """
afr amh ara aze bel ben bul cat ceb ces cym dan deu ell eng epo est eus fin fil fra fry gla gle glg guj hat
hau heb hin hun hye ibo ind isl ita jav jpn kan kat kaz khm kir kor kur lao lav lat lit ltz mal mar mkd mlg
mlt mon mri msa mya nep nld nor nso nya ory pan pes pol por pus ron rus sin slk slv smo sna snd som sot spa
sqi srp sun swa swe tam tel tgk tha tur twi ukr urd uzb vie xho yid yor zho zul
""".split()


def test_tables_match_the_published_lists():
    assert len(PUBLISHED_AYA23) == 23 and len(PUBLISHED_AYA101) == 101
    assert [lang.iso639_1 for lang in languages.aya23_languages()] == PUBLISHED_AYA23
    assert sorted(lang.iso639_3 for lang in languages.aya101_languages()) == sorted(PUBLISHED_AYA101)
    # Every Aya 23 language is an Aya 101 language.
    assert {lang.iso639_3 for lang in languages.aya23_languages()} <= set(PUBLISHED_AYA101)


def test_lookup_by_either_code():
    fr = languages.lookup("fr")
    assert fr is languages.lookup("fra") is languages.lookup("FRA")
    assert (fr.iso639_1, fr.iso639_3, fr.name, fr.scripts) == ("fr", "fra", "French", ("Latn",))
    assert languages.lookup("zh").scripts == ("Hans", "Hant")  # simplified and traditional
    assert languages.lookup("fa").iso639_3 == "pes"  # Aya 23's fa is Aya 101's pes
    assert languages.lookup("ceb").iso639_1 is None
    # Codes real data sets use for the same languages: Aya Dataset, FLORES / M-RewardBench, BCP 47 tags.
    assert languages.lookup("arb_Arab").iso639_3 == "ara"
    assert languages.lookup("zho_Hant").iso639_3 == "zho"
    assert languages.lookup("pt-BR").iso639_3 == "por"
    assert languages.lookup("zsm").iso639_3 == "msa"


def test_unknown_code_names_the_nearest_known_code():
    with pytest.raises(ValueError, match=r"unknown language code 'fre'; nearest known code: 'fr' \(French\)"):
        languages.lookup("fre")
    with pytest.raises(ValueError, match=r"'englsh'.*'eng'"):
        languages.lookup("englsh")
    assert languages.maybe_lookup("qqq") is None


def test_scripts_agree_with_cldr_likely_subtags():
    likely = babel.core.get_global("likely_subtags")
    checked = 0
    for lang in languages.all_languages():
        code = "ak" if lang.iso639_3 == "twi" else (lang.iso639_1 or lang.iso639_3)
        if code in likely:
            assert likely[code].split("_")[1] in lang.scripts, (lang, likely[code])
            checked += 1
    assert checked == len(languages.all_languages())


def test_language_ids_are_stable_and_invertible():
    # Pinned: ids end up in checkpoints (language embeddings); these must never move.
    assert languages.language_id("afr") == 1
    assert languages.language_id("fr") == languages.language_id("fra") == 21
    assert languages.language_id("zul") == 101
    assert languages.language_id("hrv") == 102  # the first extra (non-Aya-101) language
    assert languages.language_id("not-a-language") == 0
    ids = [languages.language_id(lang.iso639_3) for lang in languages.all_languages()]
    assert ids == list(range(1, languages.num_language_ids()))
    for lang in languages.all_languages():
        assert languages.language_code(languages.language_id(lang.iso639_3)) == lang.iso639_3
    assert languages.language_code(0) == ""
    with pytest.raises(ValueError, match="unknown language id 9999"):
        languages.language_code(9999)


def test_names_and_aliases_resolve():
    assert languages.maybe_resolve("Swahili").iso639_3 == "swa"
    assert languages.maybe_resolve("northern sotho").iso639_3 == "nso"
    assert languages.maybe_resolve("arb").iso639_3 == "ara"
    assert languages.maybe_resolve("Klingon") is None and languages.maybe_resolve(None) is None
    assert languages.accepted_codes(languages.lookup("fa")) == ("fa", "fas", "pes")
    for lang in languages.all_languages():
        assert all(languages.lookup(code) is lang for code in languages.accepted_codes(lang))
