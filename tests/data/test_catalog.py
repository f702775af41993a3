"""Tasks over the published Aya formats, on real multilingual text (NTREX as Aya Dataset / Aya Collection rows,
hh-rlhf preference pairs, HPLT prompts; see aya_fixtures.py): reading, filtering, bad rows, errors."""

import json

import numpy as np
import pytest
import seqio

from aya_jax.data import catalog, chat_template, languages, pipeline, prompt_converters, sources, tasks, vocab


def _source_rows(task_name, split="train"):
    task = seqio.get_mixture_or_task(task_name)
    return list(task.source.get_dataset(split=split, shuffle=False).as_numpy_iterator())


def test_aya_dataset_language_task_reads_exactly_its_rows(aya_config, aya_files):
    aya_config.task = "aya_dataset_ar"  # any code lookup accepts: ISO 639-1 here, the data says "arb"
    spec = pipeline.prepare(aya_config)
    expected = [r for r in aya_files["aya_dataset"]["train"] if r["language_code"] == "arb"]
    got = _source_rows(spec.task_name)
    assert [(r["inputs"].decode(), r["targets"].decode()) for r in got] == [
        (r["inputs"], r["targets"]) for r in expected
    ]
    assert {r["language_code"] for r in got} == {b"ara"}  # normalised to the table's ISO 639-3 code
    # Tokenized: targets end with the chat template's end-of-turn, the vocabulary is the configured model file,
    # validation = "test" files.
    task = seqio.get_mixture_or_task(spec.task_name)
    example = next(
        task.get_dataset(
            {"inputs": 256, "targets": 256}, split="validation", shuffle=False
        ).as_numpy_iterator()
    )
    (end_of_turn,) = spec.vocab.encode(chat_template.END_OF_TURN)
    assert example["targets"][-1] == end_of_turn and spec.vocab.decode(example["targets"][:-1].tolist()) in {
        r["targets"].strip() for r in aya_files["aya_dataset"]["test"]
    }
    assert (
        tasks.task_info(spec.task_name)
        .split_files["validation"][0]
        .endswith("data/test-00000-of-00001.jsonl.gz")
    )


def test_every_language_task_together_is_the_whole_source(aya_config, aya_files):
    source = catalog.get_source(aya_config, "aya_dataset")
    per_language = source.rows_per_language()
    assert sum(per_language.values()) == len(aya_files["aya_dataset"]["train"])
    train = aya_files["aya_dataset"]["train"]
    assert per_language["ara"] == sum(r["language_code"] == "arb" for r in train)  # arb -> ara
    assert per_language["zho"] == sum(r["language_code"] == "zho" for r in train)  # zho-CN + zho-TW
    for code in ("pes", "swa", "wol"):  # fas -> pes (alias); wol is outside Aya 101 but in the tables
        reader = sources.RowReader(source.split_files["train"], strict=True, language=code)
        assert len(list(reader)) == per_language[code] > 0


def test_aya_collection_parquet_by_dataset_template_and_language(aya_config, aya_files):
    rows = aya_files["aya_collection"]["templated_ntrex128"]["train"]
    aya_config.task = "aya_collection_dataset_templated_ntrex128_template_2"
    got = _source_rows(pipeline.prepare(aya_config).task_name)
    expected = [r for r in rows if r["template_id"] == 2]
    assert [r["targets"].decode() for r in got] == [r["targets"] for r in expected]
    assert {r["template_id"] for r in got} == {b"2"}  # integers in the parquet, strings in the task
    assert {r["dataset_name"] for r in got} == {b"templated_ntrex128"}
    # Per language, across both datasets; the language comes from the `language` column (no language_code).
    aya_config.task = "aya_collection_deu"
    got = _source_rows(pipeline.prepare(aya_config).task_name)
    assert {r["language_code"] for r in got} == {b"deu"}
    assert len(got) == sum(
        r["language"] == "deu" for splits in aya_files["aya_collection"].values() for r in splits["train"]
    )


def test_bad_rows_are_counted_per_reason_and_strict_mode_fails_before_training(
    aya_config, aya_files, tmp_path
):
    import aya_fixtures

    good = aya_files["aya_dataset"]["train"][:20]
    bad_lines = [
        b'{"inputs": "a", "targets": "b", "language_code": "fra"\n',  # malformed JSON
        b'{"inputs": "a", "language_code": "fra"}\n',  # missing targets
        b'{"inputs": "a", "targets": " ", "language_code": "fra"}\n',  # empty targets
        b'{"inputs": "caf\xe9", "targets": "b", "language_code": "fra"}\n',  # Latin-1, not UTF-8
        json.dumps({"inputs": "x" * 70_000, "targets": "b", "language_code": "fra"}).encode() + b"\n",
    ]
    folder = tmp_path / "aya_dataset"
    path = aya_fixtures.write_jsonl_gz(folder / "train.jsonl.gz", good, bad_lines)
    aya_config.aya_dataset_dir = str(folder)
    source = catalog.get_source(aya_config, "aya_dataset")
    assert source.counts.total() == 20
    assert source.counts.bad == {
        "malformed JSON": 1, "missing field 'targets'": 1, "empty targets": 1, "non-UTF-8 bytes": 1, "over-long row": 1,
    }  # fmt: skip
    assert source.counts.first_bad["empty targets"] == f"{path}:23"
    aya_config.strict = True
    aya_config.task = "aya_dataset"
    with pytest.raises(sources.DataError, match=rf"^{path}:21: malformed JSON"):
        pipeline.prepare(aya_config)


def test_real_malformed_prompt_row_is_reported_with_its_line(aya_config, aya_files, caplog):
    source = catalog.get_source(aya_config, "prompts")
    assert source.counts.bad == {"malformed JSON": 1}  # test_hi.jsonl's last line, passed through as is
    line = aya_files["prompts"].index(next(x for x in aya_files["prompts"] if x.endswith(b'""}'))) + 1
    assert source.counts.first_bad["malformed JSON"].endswith(f"prompts/train.jsonl:{line}")
    assert sum(source.rows_per_language().values()) == len(aya_files["prompts"]) - 1
    assert set(source.rows_per_language()) == {
        languages.lookup(c).iso639_3 for c in "bg bn cs en es fi fr hi no ru zh".split()
    }


def test_names_and_folders_fail_with_one_clear_line(aya_config, tmp_path):
    aya_config.task = "aya_dataset_frx"
    with pytest.raises(
        ValueError, match=r"config.data.task: 'aya_dataset_frx': unknown language code 'frx'; nearest"
    ):
        pipeline.prepare(aya_config)
    aya_config.task = "aya_dataset_sme"  # a valid code the tables do not have
    with pytest.raises(ValueError, match="unknown language code 'sme'"):
        pipeline.prepare(aya_config)
    aya_config.task = "aya_dataset_cy"  # Welsh: in the tables, not in the data
    with pytest.raises(ValueError, match=r"aya_dataset has no train rows in 'cym' \(it has: "):
        pipeline.prepare(aya_config)
    aya_config.task = "aya_collection_dataset_nope"
    with pytest.raises(ValueError, match=r"no dataset_name 'nope'.*templated_ntrex128"):
        pipeline.prepare(aya_config)
    # A task the user registered under a catalog-looking name is theirs: used as it is, not parsed.
    aya_config.task = "aya_dataset_mine"
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"inputs": "q", "targets": "a", "language_code": "fra"}) + "\n")
    own_vocab = vocab.SentencePieceVocabulary(aya_config.vocab.path)
    tasks.register_aya_jsonl_task("aya_dataset_mine", [str(mine)], [str(mine)], own_vocab)
    assert pipeline.prepare(aya_config).task_name == "aya_dataset_mine"
    seqio.TaskRegistry.remove("aya_dataset_mine")
    aya_config.aya_dataset_dir = str(tmp_path / "missing")
    aya_config.task = "aya_dataset"
    with pytest.raises(FileNotFoundError, match=r"^config.data.aya_dataset_dir: .*missing: no such file"):
        pipeline.prepare(aya_config)
    aya_config.aya_dataset_dir = ""
    aya_config.data_dir = str(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"config.data.aya_dataset_dir is empty and neither \$AYA_DATASET_DIR"
    ):
        pipeline.prepare(aya_config)


def test_preference_pairs_share_the_prompt_and_resume_exactly(aya_config, aya_files):
    aya_config.task = "preference_pairs"
    spec = pipeline.prepare(aya_config)
    lengths = {"prompt": 96, "chosen": 160, "rejected": 160}

    def iterator(start=0):
        return pipeline.TrainIterator(
            spec, aya_config, batch_size=4, seed=5, start_position=start,
            feature_converter=prompt_converters.PreferencePairFeatureConverter(), feature_lengths=lengths,
        )  # fmt: skip

    full = iterator()
    batches = [next(full) for _ in range(5)]
    assert batches[0]["chosen_target_tokens"].shape == (4, 160) and batches[0]["language_id"].shape == (4,)
    assert (batches[0]["language_id"] == languages.language_id("eng")).all()
    for b in batches:
        for i in range(4):
            chosen_prompt = b["chosen_target_tokens"][i][
                (b["chosen_loss_weights"][i] == 0) & (b["chosen_segment_ids"][i] == 1)
            ]
            rejected_prompt = b["rejected_target_tokens"][i][
                (b["rejected_loss_weights"][i] == 0) & (b["rejected_segment_ids"][i] == 1)
            ]
            assert chosen_prompt.tolist() == rejected_prompt.tolist() and 0 < len(chosen_prompt) <= 96
    pairs = {(r["prompt"].strip(), r["chosen"].strip()) for r in aya_files["preference"]}
    generation_prompt = chat_template.END_OF_TURN + chat_template.START_OF_TURN + chat_template.CHATBOT
    prompt_text = spec.vocab.decode(chosen_prompt.tolist())
    assert prompt_text.endswith(generation_prompt)  # the user turn, ready for the answer
    user = prompt_text.removesuffix(generation_prompt)
    assert any(p.endswith(user[-40:]) for p, _ in pairs)  # a long prompt keeps its end
    resumed = iterator(3)
    for expected in batches[3:]:
        got = next(resumed)
        assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_prompts_are_left_padded_for_generation(aya_config):
    aya_config.task = "prompts_fr"
    aya_config.format = "chat"
    aya_config.eval_split = "train"  # the prompts folder has only a train file
    spec = pipeline.prepare(aya_config)
    batches = pipeline.eval_batches(
        spec, aya_config, batch_size=4, num_batches=2,
        feature_converter=prompt_converters.PromptFeatureConverter(), feature_lengths={"prompt": 64},
    )  # fmt: skip
    tokens, segments = batches[0]["prompt_tokens"], batches[0]["prompt_segment_ids"]
    assert tokens.shape == (4, 64) and (segments[:, -1] == 1).all()  # every prompt ends at the last column
    for row, seg, n in zip(tokens, segments, batches[0]["prompt_lengths"], strict=True):
        assert seg.tolist() == [0] * (64 - n) + [1] * n
        assert spec.vocab.decode(row[seg == 1].tolist()).endswith("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>")
    assert (batches[0]["language_id"] == languages.language_id("fra")).all()
