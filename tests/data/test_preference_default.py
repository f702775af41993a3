"""Preference pairs from the embedded default data: how rejected answers are chosen, the split, the schema, and
reading them through the catalog's preference_pairs task like any user's files."""

import collections
import json

import numpy as np
import pytest

from aya_jax.data import (
    default_data,
    languages,
    pipeline,
    preference_default,
    prompt_converters,
    sources,
    vocab,
)


def _row(inputs, targets, code, kind="templated-cldr"):
    return {
        "inputs": inputs,
        "targets": targets,
        "language_code": code,
        "language": languages.lookup(code).name,
        "annotation_type": kind,
    }


def test_rejected_is_the_same_question_in_another_language_else_another_languages_answer():
    train = [
        _row("List the months in French.", "janvier, février", "fra"),
        _row("List the months in German.", "Januar, Februar", "deu"),
        _row("List the months in Spanish.", "enero, febrero", "spa"),
        _row("How is 'Peru' written in Spanish?", "Perú", "spa"),
        _row("How is 'Peru' written in Italian?", "Perù", "ita"),
        _row("How is 'Peru' written in German?", "Peru", "deu"),
        _row("How is 'Peru' written in French?", "Pérou", "fra"),
        _row("Bonjour", "Salut !", "fra", "chatterbot-dialogue"),
        _row("Hallo", "Guten Tag!", "deu", "chatterbot-dialogue"),
        _row("Only one language here", "x", "fra", "lonely-type"),
    ]
    held_out = [
        _row("List the months in Italian.", "gennaio, febbraio", "ita"),
        _row("What is the Italian word for March?", "marzo", "ita"),  # no other language asked this
        _row("How is 'Peru' written in English?", "Peru", "eng"),  # German's answer is the same text
    ]
    pairs = preference_default.build_pairs(train, train + held_out)
    by_prompt = {p["prompt"]: p for p in pairs}
    months = by_prompt["List the months in French."]
    assert months["chosen"] == "janvier, février" and months["category"] == "same-template"
    assert months["rejected"] in {"Januar, Februar", "enero, febrero"}
    assert by_prompt["List the months in Italian."]["category"] == "same-template"
    fallback = by_prompt["What is the Italian word for March?"]
    assert fallback["category"] == "other-language" and fallback["rejected"] != "marzo"
    english_peru = by_prompt["How is 'Peru' written in English?"]
    assert english_peru["rejected"] in {"Perú", "Perù", "Pérou"}  # never the identical "Peru"
    chat = by_prompt["Bonjour"]
    assert chat["rejected"] == "Guten Tag!" and chat["subset"] == "chatterbot-dialogue"
    assert "Only one language here" not in by_prompt  # nothing in another language to reject
    train_answers = collections.defaultdict(set)
    for r in train:
        train_answers[r["targets"]].add(r["language_code"])
    for p in pairs:
        assert p["rejected"] != p["chosen"] and train_answers[p["rejected"]] - {p["language_code"]}
    # Stable: the same pairs whatever the order of the rows.
    assert preference_default.build_pairs(train[::-1], train + held_out) == pairs


@pytest.fixture(scope="module")
def written(data_dir, make_data_config):
    config = make_data_config(data_dir)
    manifest = preference_default.ensure_preference_pairs(config)
    folder = preference_default.dataset_dir(config)
    return config, manifest, folder


def test_pairs_follow_the_default_split_and_the_preference_schema(written):
    config, manifest, folder = written
    default_rows = {
        split: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        for split, path in default_data.split_paths(config).items()
    }
    train_targets = collections.defaultdict(set)
    for r in default_rows["train"]:
        train_targets[r["targets"]].add(r["language_code"])
    for split, name in preference_default.SPLIT_FILES.items():
        pairs = list(sources.RowReader([str(folder / name)], strict=True, schema=sources.PREFERENCE))
        assert len(pairs) == manifest["files"][name]["pairs"]
        assert len(pairs) > 0.99 * len(default_rows[split])  # about one pair per row
        own = {(r["inputs"], r["targets"], r["language_code"]) for r in default_rows[split]}
        other = {
            (r["inputs"], r["targets"], r["language_code"])
            for r in default_rows[{"train": "validation"}.get(split, "train")]
        }
        for p in pairs:
            key = (p["prompt"], p["chosen"], p["language_code"])
            assert key in own and key not in other
            assert p["rejected"] != p["chosen"]
            assert train_targets[p["rejected"]] - {p["language_code"]}  # a train answer of another language
    assert manifest["pairs_per_category"]["validation/same-template"] > 100
    assert len(manifest["pairs_per_language"]) > 100


def test_an_up_to_date_copy_is_reused(written):
    config, manifest, folder = written
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert preference_default.ensure_preference_pairs(config) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_the_preference_pairs_task_reads_them_with_the_policys_vocabulary(written, default_vocab_path):
    config, _, _ = written
    config.vocab.path = default_vocab_path
    policy_vocab = vocab.vocabulary(config)
    config.vocab.path = (
        ""  # the pairs' data config takes the policy's vocabulary, not one trained on the pairs
    )
    for task, expect_language in (("preference_pairs", None), ("preference_pairs_fra", "fra")):
        pairs_config = preference_default.pairs_data_config(
            config, task, True, policy_vocab, "config.reward.default_pairs"
        )
        spec = pipeline.prepare(pairs_config)
        assert preference_default.vocabulary_path(spec.vocab) == default_vocab_path
        (batch,) = pipeline.eval_batches(
            spec, pairs_config, batch_size=8, num_batches=1,
            feature_converter=prompt_converters.PreferencePairFeatureConverter(),
            feature_lengths={"prompt": 64, "chosen": 128, "rejected": 128},
        )  # fmt: skip
        ids = batch["language_id"]
        assert (ids > 0).all()
        if expect_language:
            assert (ids == languages.language_id(expect_language)).all()
        for i in range(8):
            prompt_c = batch["chosen_target_tokens"][i][
                (batch["chosen_loss_weights"][i] == 0) & (batch["chosen_segment_ids"][i] == 1)
            ]
            prompt_r = batch["rejected_target_tokens"][i][
                (batch["rejected_loss_weights"][i] == 0) & (batch["rejected_segment_ids"][i] == 1)
            ]
            assert prompt_c.tolist() == prompt_r.tolist()
            chosen = batch["chosen_target_tokens"][i][batch["chosen_loss_weights"][i] == 1]
            rejected = batch["rejected_target_tokens"][i][batch["rejected_loss_weights"][i] == 1]
            assert not np.array_equal(chosen, rejected)


def test_bad_settings_name_the_field(data_config, default_vocab_path):
    data_config.vocab.path = default_vocab_path
    v = vocab.vocabulary(data_config)
    with pytest.raises(ValueError, match="config.reward.task: 'aya_default' is not preference_pairs"):
        preference_default.pairs_data_config(
            data_config, "aya_default", True, v, "config.reward.default_pairs"
        )
    data_config.preference_dir = "/somewhere"
    with pytest.raises(
        ValueError, match="config.reward.default_pairs: True reads the pairs built from the default"
    ):
        preference_default.pairs_data_config(
            data_config, "preference_pairs", True, v, "config.reward.default_pairs"
        )
    out = preference_default.pairs_data_config(
        data_config, "preference_pairs", False, v, "config.reward.default_pairs"
    )
    assert (
        out.preference_dir == "/somewhere" and data_config.task == "aya_default"
    )  # a copy; the input is unchanged
