"""The Global-MMLU evaluator on files in the published Hugging Face layout (parquet and jsonl), scored by small
deterministic log-likelihood callables: reading and validation, lm-eval's exact prompts, argmax and ties, and
the aggregates and bootstrap intervals against a NumPy re-derivation written here."""

import hashlib
import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from aya_jax import plots
from aya_jax.data.sources import DataError
from aya_jax.evaluation import global_mmlu as gm

LM_EVAL_TEMPLATE = "lm_eval/tasks/global_mmlu/full/{lang}/_{lang}_template_yaml"

# Question stems and options in several scripts; the trailing / leading blanks exercise `question.strip()`.
TEXT = {
    "en": (
        [
            "  Which organ pumps blood through the body?\n",
            "What is the capital of Kenya?",
            "Who wrote the Iliad?",
        ],
        ["the heart", "the liver", "the lungs", "the kidneys"],
    ),
    "fr": (
        [
            "Quel organe pompe le sang à travers le corps ?",
            "Où se trouve l’île de Gorée ?",
            "Qu’est-ce qu’un « bail » ?",
        ],
        ["le cœur", "le foie", "les poumons", "les reins"],
    ),
    "sw": (
        ["Ni kiungo gani kinachosukuma damu mwilini?", "Mji mkuu wa Kenya ni upi?", "Nani aliandika Iliad?"],
        ["moyo", "ini", "mapafu", "figo"],
    ),
    "hi": (
        ["कौन सा अंग शरीर में रक्त पंप करता है?", "केन्या की राजधानी क्या है?", "इलियड किसने लिखा?  "],
        ["हृदय", "यकृत", "फेफड़े", "गुर्दे"],
    ),
    "zh": (
        ["哪个器官将血液泵送到全身？", "肯尼亚的首都是哪里？", "谁写了《伊利亚特》？"],
        ["心脏", "肝脏", "肺", "肾脏"],
    ),
}
SUBJECTS = [("anatomy", "Medical"), ("world_religions", "Humanities"), ("marketing", "Business")]
LABELS = ["CS", "CA", "-", "CA", "CS", "-", "CA"]


def make_row(lang, split, i, subject, category, label, answer, question=None):
    stems, options = TEXT[lang]
    return {
        "sample_id": f"{subject}/{split}/{i}",
        "subject": subject,
        "subject_category": category,
        "question": question if question is not None else f"{stems[i % len(stems)]} ({i})",
        "option_a": options[0],
        "option_b": f"{options[1]} {i}",
        "option_c": options[2],
        "option_d": options[3],
        "answer": answer,
        "required_knowledge": "",
        "time_sensitive": "",
        "reference": "",
        "culture": "",
        "region": "",
        "country": "",
        "cultural_sensitivity_label": label,
        "is_annotated": label != "-",
    }


def split_rows(lang, split, n):
    """`n` rows cycling through the subjects (interleaved, so 'first k of the subject' is not 'first k')."""
    rows = []
    for i in range(n):
        subject, category = SUBJECTS[i % len(SUBJECTS)]
        label = LABELS[(i + len(lang)) % len(LABELS)]
        rows.append(make_row(lang, split, i, subject, category, label, "ABCD"[(3 * i + len(lang)) % 4]))
    return rows


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path, rows, blank_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    for at in sorted(blank_lines, reverse=True):
        lines.insert(at, "")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path):
    """en, hi: parquet (en's test in two shards); fr: sharded jsonl; sw, zh: single jsonl files."""
    root = tmp_path / "Global-MMLU"
    rows = {lang: split_rows(lang, "test", 14) for lang in TEXT}
    dev = {lang: split_rows(lang, "dev", 9) for lang in TEXT}
    write_parquet(root / "en/test-00000-of-00002.parquet", rows["en"][:8])
    write_parquet(root / "en/test-00001-of-00002.parquet", rows["en"][8:])
    write_parquet(root / "en/dev-00000-of-00001.parquet", dev["en"])
    write_parquet(root / "hi/test-00000-of-00001.parquet", rows["hi"])
    write_parquet(root / "hi/dev-00000-of-00001.parquet", dev["hi"])
    write_jsonl(root / "fr/test-00000-of-00002.jsonl", rows["fr"][:5])
    write_jsonl(root / "fr/test-00001-of-00002.jsonl", rows["fr"][5:])
    write_jsonl(root / "fr/dev.jsonl", dev["fr"])
    for lang in ("sw", "zh"):
        write_jsonl(root / f"{lang}/test.jsonl", rows[lang], blank_lines=[3])
        write_jsonl(root / f"{lang}/dev.jsonl", dev[lang])
    (root / "not_a_language").mkdir()
    return root


# ------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------


def test_reads_every_language_and_format_in_file_order(data_dir):
    test = gm.load(data_dir, (), "test")
    assert list(test) == ["en", "fr", "hi", "sw", "zh"]  # LANGUAGES order; not_a_language ignored
    for lang, items in test.items():
        expected = split_rows(lang, "test", 14)
        assert [i.sample_id for i in items] == [r["sample_id"] for r in expected]
        assert [i.question for i in items] == [r["question"] for r in expected]
        assert [i.options for i in items] == [tuple(r[f] for f in gm.OPTION_FIELDS) for r in expected]
        assert [i.answer for i in items] == [r["answer"] for r in expected]
        assert [i.cultural_sensitivity_label for i in items] == [
            r["cultural_sensitivity_label"] for r in expected
        ]
        assert {i.language for i in items} == {lang}
    assert [i.row for i in test["en"]] == [*range(1, 9), *range(1, 7)]  # per shard, 1-based
    assert test["en"][9].file.endswith("en/test-00001-of-00002.parquet")
    assert [i.row for i in test["sw"]][:5] == [1, 2, 3, 5, 6]  # line numbers: the blank line 4 is counted
    assert list(gm.load(data_dir, ["sw", "en"], "dev")) == ["sw", "en"]
    assert len(gm.LANGUAGES) == 42 and set(gm.LITE_LANGUAGES) <= set(gm.LANGUAGES)


def test_unannotated_label_spellings(tmp_path):
    rows = [make_row("en", "test", i, "anatomy", "Medical", label, "A") for i, label in enumerate(["-", ""])]
    rows.append(make_row("en", "test", 2, "anatomy", "Medical", None, "A"))
    write_parquet(tmp_path / "en/test-00000-of-00001.parquet", rows)
    assert [i.cultural_sensitivity_label for i in gm.read_split(tmp_path, "en", "test")] == ["-", "-", "-"]


def test_bad_inputs_name_the_file_row_and_field(data_dir, tmp_path):
    good = split_rows("sw", "test", 4)
    bad_answer = write_jsonl(
        tmp_path / "a/sw/test.jsonl", [good[0], {**good[1], "answer": "E"}], blank_lines=[1]
    )
    with pytest.raises(DataError) as e:
        gm.read_split(tmp_path / "a", "sw", "test")
    assert str(e.value) == f"{bad_answer}:3: field 'answer': 'E' is not one of A, B, C, D"

    missing = [dict(r) for r in good]
    del missing[2]["option_c"]
    path = write_jsonl(tmp_path / "b/sw/test.jsonl", missing)
    with pytest.raises(DataError, match=f"^{path}:3: field 'option_c' is missing$"):
        gm.read_split(tmp_path / "b", "sw", "test")

    # a parquet file whose option_c column is absent altogether
    no_column = [{k: v for k, v in r.items() if k != "option_c"} for r in good]
    path = write_parquet(tmp_path / "c/sw/test-00000-of-00001.parquet", no_column)
    with pytest.raises(DataError, match=f"^{path}:1: field 'option_c' is missing$"):
        gm.read_split(tmp_path / "c", "sw", "test")

    empty = [good[0], good[1], {**good[2], "question": "  "}]
    path = write_parquet(tmp_path / "d/sw/test-00000-of-00001.parquet", empty)
    with pytest.raises(DataError, match=f"^{path}:3: field 'question' is empty$"):
        gm.read_split(tmp_path / "d", "sw", "test")

    path = write_jsonl(tmp_path / "e/sw/test.jsonl", [{**good[0], "cultural_sensitivity_label": "XX"}])
    with pytest.raises(DataError, match=f"^{path}:1: field 'cultural_sensitivity_label': 'XX' is not one of"):
        gm.read_split(tmp_path / "e", "sw", "test")

    path = tmp_path / "f/sw/test.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(good[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:2: not valid JSON"):
        gm.read_split(tmp_path / "f", "sw", "test")

    with pytest.raises(DataError) as e:
        gm.load(data_dir, ["en", "xx"], "test")
    assert str(e.value).startswith("unknown Global-MMLU language 'xx'; known: am ar bn cs de")
    assert "\n" not in str(e.value)

    (data_dir / "fr/dev.jsonl").unlink()
    with pytest.raises(DataError) as e:
        gm.load(data_dir, ["en", "fr"], "dev")
    assert str(e.value) == f"{data_dir}/fr: no 'dev' split (files dev-*.parquet|jsonl)"

    with pytest.raises(DataError, match=f"^{data_dir}/yo: no such language folder"):
        gm.load(data_dir, ["yo"], "test")

    write_jsonl(data_dir / "en/test.jsonl", good)
    with pytest.raises(DataError, match="has both parquet and jsonl files"):
        gm.read_split(data_dir, "en", "test")


# ------------------------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------------------------


def test_prompt_and_context_strings():
    item = gm.Item(
        "anatomy/test/0", "anatomy", "Medical", " Quel organe ?\n", ("a", "b", "", "d"), "B", "CS", "fr"
    )
    shot = gm.Item(
        "anatomy/dev/0", "anatomy", "Medical", "Deux + deux ?", ("3", "4", "5", "6"), "B", "-", "fr"
    )
    assert gm.prompt(item) == "Quel organe ?\nA. a\nB. b\nC. \nD. d\nAnswer:"
    assert gm.context(item, []) == gm.prompt(item)
    assert gm.context(item, [shot, shot]) == (
        "Deux + deux ?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n" * 2
        + "Quel organe ?\nA. a\nB. b\nC. \nD. d\nAnswer:"
    )
    pairs = gm.requests([item], chat=lambda text: f"<user>{text}</user><bot>")
    assert pairs == [(f"<user>{gm.prompt(item)}</user><bot>", f" {x}") for x in "ABCD"]


def test_shots_are_the_first_of_the_subject(data_dir):
    test, dev = gm.load(data_dir, ["fr"], "test")["fr"], gm.load(data_dir, ["fr"], "dev")["fr"]
    item = test[1]  # world_religions
    assert [s.sample_id for s in gm.shots_for(item, dev, 2)] == [
        "world_religions/dev/1",
        "world_religions/dev/4",
    ]
    assert gm.shots_for(item, dev, 0) == []
    with pytest.raises(DataError, match="4 shots asked but the 'fr' dev split has 3 item"):
        gm.shots_for(item, dev, 4)
    with pytest.raises(ValueError, match="need the dev split of 'fr'"):
        gm.requests(test, None, 1)


def lm_eval_task(monkeypatch, tmp_path, lang, files, subject, num_fewshot):
    """lm-eval's own `global_mmlu_full_<lang>_<subject>` task, its shipped template pointed at local files."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm_eval = pytest.importorskip("lm_eval")
    task_module = pytest.importorskip("lm_eval.api.task")
    template = pathlib.Path(lm_eval.__file__).parent.parent / LM_EVAL_TEMPLATE.format(lang=lang)
    config = yaml.safe_load(template.read_text())
    assert config["fewshot_config"] == {"sampler": "first_n"} and "description" not in config
    kind = "parquet" if files["test"][0].suffix == ".parquet" else "json"
    config.update(
        task=f"global_mmlu_full_{lang}_{subject}",
        dataset_path=kind,
        dataset_name=None,
        dataset_kwargs={
            "data_files": {split: [str(p) for p in paths] for split, paths in files.items()},
            "cache_dir": str(tmp_path / "hf_cache"),
        },
        process_docs=lambda dataset: dataset.filter(lambda doc: doc["subject"] == subject),
        num_fewshot=num_fewshot,
    )
    return task_module.ConfigurableTask(config=config)


@pytest.mark.parametrize("lang", ["en", "fr"])  # parquet, jsonl
def test_contexts_and_requests_equal_lm_evals_own(monkeypatch, tmp_path, data_dir, lang):
    test, dev = gm.load(data_dir, [lang], "test"), gm.load(data_dir, [lang], "dev")
    files = {split: gm.split_files(data_dir, lang, split) for split in ("test", "dev")}
    for subject, _ in SUBJECTS:
        task = lm_eval_task(monkeypatch, tmp_path, lang, files, subject, num_fewshot=2)
        docs = list(task.test_docs())
        items = [i for i in test[lang] if i.subject == subject]
        assert [d["sample_id"] for d in docs] == [i.sample_id for i in items]
        for doc, item in zip(docs, items, strict=True):
            for k in (0, 1, 3):
                assert gm.context(item, gm.shots_for(item, dev[lang], k)) == task.fewshot_context(doc, k)
        task.build_all_requests(limit=None, rank=0, world_size=1)
        theirs = [tuple(i.arguments) for i in sorted(task.instances, key=lambda i: (i.doc_id, i.idx))]
        assert gm.requests(items, dev, 2) == theirs


def test_real_multilingual_text_round_trips_and_prompts_like_lm_eval(monkeypatch, tmp_path, shared_data):
    """NTREX-128 sentences (Amharic, Arabic, Hindi, Chinese, ...) as questions and options, through parquet."""
    lines = (shared_data / "parallel/ntrex128_subset/ntrex128_first300_40langs.jsonl").read_text("utf-8")
    sentences = [json.loads(line) for line in lines.splitlines()[:24]]
    codes = {"am": "amh", "ar": "arb", "hi": "hin", "zh": "zho-CN", "yo": "yor", "el": "ell"}
    for lang, key in codes.items():
        rows = []
        for split, offset in (("test", 0), ("dev", 12)):
            rows = []
            for i in range(6):
                s = [sentences[offset + i + j][key] for j in range(5)]
                row = make_row("en", split, i, *SUBJECTS[i % 2], LABELS[i], "ABCD"[i % 4], question=s[0])
                row.update(option_a=s[1], option_b=s[2], option_c=s[3], option_d=s[4])
                rows.append(row)
            write_parquet(tmp_path / f"data/{lang}/{split}-00000-of-00001.parquet", rows)
    test, dev = gm.load(tmp_path / "data", [], "test"), gm.load(tmp_path / "data", [], "dev")
    assert list(test) == sorted(codes)
    assert (
        test["am"][0].question == sentences[0]["amh"] and test["zh"][5].options[3] == sentences[9]["zho-CN"]
    )
    files = {split: gm.split_files(tmp_path / "data", "am", split) for split in ("test", "dev")}
    task = lm_eval_task(monkeypatch, tmp_path, "am", files, SUBJECTS[0][0], num_fewshot=2)
    items = [i for i in test["am"] if i.subject == SUBJECTS[0][0]]
    for doc, item in zip(task.test_docs(), items, strict=True):
        assert gm.context(item, gm.shots_for(item, dev["am"], 2)) == task.fewshot_context(doc, 2)


# ------------------------------------------------------------------------------------------------------------
# Scoring and aggregation
# ------------------------------------------------------------------------------------------------------------


def question_of(context: str) -> str:
    """The evaluated question of a context: the text before the options of its last block."""
    return context.rsplit("\n\n", 1)[-1].split("\nA. ")[0]


def picking(choices: dict[str, str]):
    """A loglikelihood that prefers the letter `choices[question]`, the others lower and all distinct."""

    def loglikelihood(pairs):
        out = []
        for ctx, cont in pairs:
            letter = cont.strip()
            best = choices[question_of(ctx)]
            out.append((0.0 if letter == best else -1.0 - "ABCD".index(letter) / 10, letter == best))
        return out

    return loglikelihood


def hashed(pairs):
    return [(-int(hashlib.sha256((c + x).encode()).hexdigest()[:12], 16) / 2**40, False) for c, x in pairs]


def percentile_interval(replicates, confidence):
    alpha = (1 - confidence) / 2
    return tuple(np.quantile(replicates, [alpha, 1 - alpha]))


def reference_micro(x, rounds, confidence, seed):
    x = np.asarray(x, float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, x.size, size=(rounds, x.size))
    replicates = x[draws].mean(axis=1)
    return (x.mean(), *percentile_interval(replicates, confidence), x.size)


def reference_macro(x, groups, rounds, confidence, seed):
    """Stratified: each group (sorted by name) resampled within itself from one generator, in turn."""
    x, groups = np.asarray(x, float), np.asarray(groups)
    rng = np.random.default_rng(seed)
    names = sorted(set(groups.tolist()))
    replicates = np.zeros(rounds)
    for name in names:
        member = x[groups == name]
        replicates += member[rng.integers(0, member.size, size=(rounds, member.size))].mean(axis=1)
    mean = np.mean([x[groups == name].mean() for name in names])
    return (mean, *percentile_interval(replicates / len(names), confidence), x.size)


def close(figure, expected):
    got = (figure["mean"], figure["low"], figure["high"], figure["n"])
    assert got[3] == expected[3]
    np.testing.assert_allclose(got[:3], expected[:3], rtol=0, atol=1e-12)


def test_accuracy_subsets_micro_macro_and_intervals(data_dir):
    test = gm.load(data_dir, [], "test")
    items = [i for lang in test for i in test[lang]]
    # wrong on every third item, in a language-dependent pattern so languages differ
    choices = {}
    for n, item in enumerate(items):
        wrong = "ABCD"[("ABCD".index(item.answer) + 1) % 4]
        choices[gm.prompt(item).split("\nA. ")[0]] = (
            wrong if (n * 7 + len(item.language)) % 3 == 0 else item.answer
        )
    rounds, confidence, seed = 300, 0.9, 11
    results = gm.evaluate(test, picking(choices), rounds=rounds, confidence=confidence, seed=seed)

    correct = np.array([choices[gm.prompt(i).split("\nA. ")[0]] == i.answer for i in items], float)
    language = np.array([i.language for i in items])
    label = np.array([i.cultural_sensitivity_label for i in items])
    category = np.array([i.subject_category for i in items])
    assert 0.3 < correct.mean() < 0.9 and {"CS", "CA", "-"} == set(label)
    assert [p["correct"] for p in results["predictions"]] == correct.astype(bool).tolist()
    assert [p["prediction"] for p in results["predictions"]] == [
        choices[gm.prompt(i).split("\nA. ")[0]] for i in items
    ]
    assert results["num_fewshot"] == 0 and results["rounds"] == rounds and results["confidence"] == confidence

    subsets = {
        "all": np.ones(len(items), bool),
        "CS": label == "CS",
        "CA": label == "CA",
        "unannotated": label == "-",
    }
    for lang in test:
        for name, mask in subsets.items():
            here = mask & (language == lang)
            assert results["per_language"][lang][name]["mean"] == correct[here].mean()
            close(
                results["per_language"][lang][name], reference_micro(correct[here], rounds, confidence, seed)
            )
        for cat in sorted(set(category)):
            here = (category == cat) & (language == lang)
            close(
                results["per_language"][lang]["subject_category"][cat],
                reference_micro(correct[here], rounds, confidence, seed),
            )
    for name, mask in subsets.items():
        close(results["overall"]["micro"][name], reference_micro(correct[mask], rounds, confidence, seed))
        macro = reference_macro(correct[mask], language[mask], rounds, confidence, seed)
        close(results["overall"]["macro"][name], macro)
        assert macro[0] == pytest.approx(
            np.mean([correct[mask & (language == g)].mean() for g in test]), abs=1e-15
        )
    for cat in sorted(set(category)):
        close(
            results["subject_category"][cat],
            reference_micro(correct[category == cat], rounds, confidence, seed),
        )
    json.dumps(results, allow_nan=False)


def test_argmax_of_arbitrary_scores_and_batching(data_dir):
    test = gm.load(data_dir, ["sw", "zh"], "test")
    dev = gm.load(data_dir, ["sw", "zh"], "dev")
    items = [i for lang in test for i in test[lang]]
    whole = gm.evaluate(test, hashed, dev=dev, num_fewshot=2, rounds=20)
    expected = np.array([x for x, _ in hashed(gm.requests(items, dev, 2))]).reshape(-1, 4)
    assert [p["loglikelihoods"] for p in whole["predictions"]] == expected.tolist()
    assert [p["prediction"] for p in whole["predictions"]] == ["ABCD"[k] for k in expected.argmax(axis=1)]
    done, calls = [], []
    counted = lambda pairs: calls.append(len(pairs)) or hashed(pairs)
    chunked = gm.evaluate(test, counted, dev=dev, num_fewshot=2, rounds=20, batch=10, progress=done.append)
    total = 4 * len(items)
    assert calls == [10] * (total // 10) + [total % 10] and done == calls
    assert chunked == whole


def test_ties_go_to_the_first_option():
    items = [gm.Item(f"s/{k}", "s", "Other", f"q{k}", ("w", "x", "y", "z"), "B", "-", "en") for k in range(3)]
    table = {
        "q0": [-1.0, -1.0, -1.0, -1.0],
        "q1": [-3.0, -0.5, -0.5, -2.0],
        "q2": [-np.inf, -2.0, -7.0, -2.0],
    }
    loglikelihood = lambda pairs: [(table[question_of(c)]["ABCD".index(x.strip())], False) for c, x in pairs]
    results = gm.evaluate({"en": items}, loglikelihood, rounds=10)
    assert [p["prediction"] for p in results["predictions"]] == ["A", "B", "B"]
    assert [p["correct"] for p in results["predictions"]] == [False, True, True]
    with pytest.raises(ValueError, match="returned NaN for item 's/0'"):
        gm.evaluate({"en": items[:1]}, lambda pairs: [(float("nan"), False)] * len(pairs), rounds=10)
    with pytest.raises(ValueError, match="returned 3 results for 4 requests"):
        gm.evaluate({"en": items[:1]}, lambda pairs: [(0.0, False)] * 3, rounds=10)


def test_markdown_and_plot(data_dir, tmp_path):
    test = gm.load(data_dir, ["en", "hi"], "test")
    results = gm.evaluate(test, hashed, rounds=50)
    text = gm.markdown(results)
    assert "| language | n | accuracy | CS | CA | unannotated |" in text
    en = results["per_language"]["en"]["all"]
    assert f"| en | 14 | {en['mean']:.3f} [{en['low']:.3f}, {en['high']:.3f}] |" in text
    assert "| micro |" in text and "| macro |" in text and "| Medical |" in text
    png = plots.global_mmlu_cs_ca(results, tmp_path / "cs_ca.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
