"""Language-level mixtures: gin specs, rates against seqio's formula, sampled proportions, exact resume."""

import collections
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import seqio

from aya_jax.data import languages, mixtures, pipeline

REPO = pathlib.Path(__file__).resolve().parents[2]


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _same(a, b):
    return len(a) == len(b) and all(
        all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def _sampled_languages(name, n, seed=0):
    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": 256, "targets": 256},
        split="train",
        seed=seed,
        num_epochs=None,
        passthrough_features=["language_code"],
    )
    counts = collections.Counter()
    for chunk in ds.map(lambda ex: ex["language_code"]).take(n).batch(4096).as_numpy_iterator():
        counts.update(code.decode() for code in chunk)
    return counts


@pytest.fixture(scope="module")
def default_mixture(data_dir, make_data_config):
    config = make_data_config(data_dir, task="aya_default_mixture", shuffle_buffer=256)
    return pipeline.prepare(config), config


def test_gin_specs_and_overrides(data_config):
    spec = mixtures.load_spec("aya23_sft", data_config)
    assert spec.languages == tuple(lang.iso639_3 for lang in languages.aya23_languages())
    assert (spec.rate, spec.temperature, spec.maximum) == ("temperature", pytest.approx(1 / 0.3), None)
    assert spec.sources == {"aya_dataset": 1.0, "aya_collection": 1.0}
    assert len(mixtures.load_spec("aya101_sft", data_config).languages) == 101
    data_config.gin_bindings = (
        "aya23_sft/mixture_spec.maximum = 5000",
        "aya23_sft/mixture_spec.temperature = 2.0",
    )
    spec = mixtures.load_spec("aya23_sft", data_config)
    assert (spec.temperature, spec.maximum) == (2.0, 5000)
    data_config.mixture_temperature = 1.0  # the command-line shortcut wins over gin
    assert mixtures.load_spec("aya23_sft", data_config).temperature == 1.0
    # Bindings are parsed afresh each time: nothing leaks into the next load.
    data_config.gin_bindings, data_config.mixture_temperature = (), 0.0
    assert mixtures.load_spec("aya23_sft", data_config).temperature == pytest.approx(1 / 0.3)
    assert mixtures.load_spec("not_a_mixture", data_config) is None
    for binding, error in [
        (
            'aya23_sft/mixture_spec.languages = ["fra", "englsh"]',
            r"aya23_sft/mixture_spec.languages: unknown language code 'englsh'; nearest known code: 'eng'",
        ),
        (
            'aya23_sft/mixture_spec.sources = {"aya_datset": 1.0}',
            r"aya23_sft/mixture_spec.sources: unknown source\(s\) \['aya_datset'\]",
        ),
        (
            'aya23_sft/mixture_spec.rate = "uniform"',
            r"mixture_spec.rate='uniform': expected one of proportional, temperature, weights",
        ),
    ]:
        data_config.gin_bindings = (binding,)
        with pytest.raises(ValueError, match=error):
            mixtures.load_spec("aya23_sft", data_config)


_KNOWN = "known: aya101_sft, aya23_sft, aya_default_mixture"
_PARAMETERS = "known: language_weights, languages, maximum, rate, sources, temperature"


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "binding, error",
    [
        pytest.param(  # gin took it as a scope nothing enters, and the file's T was used
            "aya_default_mixtur/mixture_spec.temperature = 1.0",
            "binds scope 'aya_default_mixtur', which no mixture defines (" + _KNOWN + ")",
            id="misspelt-scope",
        ),
        pytest.param(  # gin's own error here is three lines
            "aya_default_mixture/mixture_spec.temprature = 1.0",
            "binds 'temprature', which is not a parameter of mixture_spec (" + _PARAMETERS + ")",
            id="unknown-parameter",
        ),
        pytest.param(  # the file's scoped binding wins over it
            "mixture_spec.temperature = 1.0",
            "binds no scope; a mixture's own bindings would win over it: bind "
            "'<mixture>/mixture_spec.temperature' (" + _KNOWN + ")",
            id="no-scope",
        ),
        pytest.param(
            "aya_default_mixture/mixture_spc.temperature = 1.0",
            "binds 'mixture_spc', which is not mixture_spec: only mixtures are configured in gin",
            id="other-configurable",
        ),
    ],
)
def test_binding_that_names_nothing_is_a_one_line_error(data_config, binding, error):
    data_config.gin_bindings = ("aya_default_mixture/mixture_spec.maximum = 100", binding)
    with pytest.raises(ValueError) as info:
        mixtures.load_spec("aya_default_mixture", data_config)
    assert str(info.value) == f"config.data.gin_bindings: {binding!r} {error}"


@pytest.mark.bad_input
def test_binding_that_does_not_parse_is_a_one_line_error(data_config):
    data_config.gin_bindings = ("aya_default_mixture/mixture_spec.temperature = ",)
    with pytest.raises(ValueError) as info:
        mixtures.load_spec("aya_default_mixture", data_config)
    assert str(info.value) == (
        "config.data.gin_bindings: 'aya_default_mixture/mixture_spec.temperature =' does not parse: "
        "Unable to parse value."
    )


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "line, error",
    [
        pytest.param(
            "my_mixtur/mixture_spec.temperature = 1.0",
            "binds scope 'my_mixtur', which no mixture defines (known: aya101_sft, aya23_sft, "
            "aya_default_mixture, my_mix)",
            id="misspelt-scope",
        ),
        pytest.param(
            "my_mix/mixture_spec.temprature = 1.0",
            "binds 'temprature', which is not a parameter of mixture_spec (" + _PARAMETERS + ")",
            id="unknown-parameter",
        ),
    ],
)
@pytest.mark.parametrize("included", [False, True], ids=["in-the-file", "included"])
def test_gin_file_binding_that_names_nothing_names_the_file(data_config, tmp_path, line, error, included):
    mine = tmp_path / "mine.gin"
    text = 'my_mix/mixture_spec.languages = "all"\nmy_mix/mixture_spec.sources = {"aya_default": 1.0}\n'
    if included:
        (tmp_path / "extra.gin").write_text(f"# more\n\n{line}\n")
        mine.write_text(text + f"include '{tmp_path / 'extra.gin'}'\n")
        where = f"{tmp_path / 'extra.gin'} line 3"
    else:
        mine.write_text(text + line + "\n")
        where = f"{mine} line 3"
    data_config.gin_files = (str(mine),)
    with pytest.raises(ValueError) as info:
        mixtures.load_spec("my_mix", data_config)
    assert str(info.value) == f"config.data.gin_files: {where}: {line!r} {error}"


def test_bindings_that_reach_a_mixture_are_accepted(data_config, tmp_path):
    # Another mixture a gin file defines (unused by this task, not a typo), a macro, a full module name.
    mine = tmp_path / "mine.gin"
    mine.write_text(
        'my_mix/mixture_spec.languages = ["fra", "deu"]\nmy_mix/mixture_spec.sources = {"aya_default": 1.0}\n'
    )
    data_config.gin_files = (str(mine),)
    data_config.gin_bindings = (
        "aya23_sft/mixture_spec.temperature = 5.0",
        "T = 2.0",
        "my_mix/mixture_spec.temperature = %T",
        "my_mix/aya_jax.data.mixtures.mixture_spec.maximum = 7",
    )
    spec = mixtures.load_spec("my_mix", data_config)
    assert (spec.languages, spec.temperature, spec.maximum) == (("fra", "deu"), 2.0, 7)
    assert mixtures.load_spec("aya_default_mixture", data_config).temperature == pytest.approx(1 / 0.3)


class _CountedTask:
    """Just what seqio.mixing_rate_num_examples reads from a task: its size (the reference's input)."""

    cache_dir = None

    def __init__(self, name, n):
        self.name, self._n = name, n

    def num_input_examples(self, split):
        return self._n


@pytest.mark.parametrize(
    ("rate", "temperature", "maximum"),
    [("temperature", 1 / 0.3, None), ("temperature", 2.0, 400), ("proportional", 1.0, None)],
)
def test_rates_match_seqio_formula_per_language(rate, temperature, maximum):
    rows = {
        "aya_dataset": {"ara": 900, "fra": 50, "swa": 7},
        "aya_collection": {"ara": 300, "fra": 450, "yor": 12},
    }
    spec = mixtures.MixtureSpec(
        "m", "all", {"aya_dataset": 1.0, "aya_collection": 3.0}, rate, temperature, maximum, None
    )
    p_lang, p_pair = mixtures.language_rates(spec, rows)
    totals = {lang: sum(r.get(lang, 0) for r in rows.values()) for lang in ("ara", "fra", "swa", "yor")}
    reference = {
        lang: seqio.utils.mixing_rate_num_examples(
            _CountedTask(lang, n), maximum=maximum, temperature=temperature
        )
        for lang, n in totals.items()
    }
    norm = sum(reference.values())
    for lang in totals:
        assert p_lang[lang] == pytest.approx(reference[lang] / norm, abs=1e-12)
    # Within a language: weight x rows of each source.
    assert p_pair[("aya_collection", "fra")] == pytest.approx(
        p_lang["fra"] * 3 * 450 / (50 + 3 * 450), abs=1e-12
    )
    assert sum(p_pair.values()) == pytest.approx(1.0, abs=1e-12)


def test_explicit_weights_and_missing_languages(caplog):
    rows = {"aya_default": {"fra": 10, "deu": 20, "ita": 5}}
    spec = mixtures.MixtureSpec(
        "m", ("fra", "deu", "cym"), {"aya_default": 1.0}, "weights", 1.0, None, {"fra": 3.0, "deu": 1.0}
    )
    p_lang, _ = mixtures.language_rates(spec, rows)
    assert p_lang == {"fra": 0.75, "deu": 0.25}
    assert "no rows in aya_default for 1 language(s), left out: cym" in caplog.text
    spec = mixtures.MixtureSpec(
        "m", ("fra",), {"aya_default": 1.0}, "weights", 1.0, None, {"fra": 1.0, "cym": 2.0}
    )
    with pytest.raises(
        ValueError, match=r"m/mixture_spec.language_weights: no rows for weighted language\(s\) \['cym'\]"
    ):
        mixtures.language_rates(spec, rows)


def test_20000_samples_match_the_temperature_rates_within_one_point(default_mixture):
    spec, _ = default_mixture
    configured = mixtures.mixture_info(spec.task_name).language_rates
    assert len(configured) > 100
    sampled = _sampled_languages(spec.task_name, 20_000, seed=11)
    assert sum(sampled.values()) == 20_000
    worst = max(abs(sampled[lang] / 20_000 - p) for lang, p in configured.items())
    print(
        f"\n{len(configured)} languages, 20,000 samples: max |sampled - configured| = {100 * worst:.3f} points"
    )
    assert worst < 0.01
    assert set(sampled) <= set(configured)
    # The temperature flattened the data: the largest language has ~22x the rows of the smallest, but < 4x the rate.
    assert max(configured.values()) / min(configured.values()) < 4


def test_choice_streams_are_counter_based():
    a = mixtures.uniform_block(7, 3, 5)
    assert np.array_equal(a, mixtures.uniform_block(7, 3, 5))  # a pure function of (seed, stream, block)
    neighbours = np.concatenate(
        [mixtures.uniform_block(7, 3, b) for b in (4, 6)] + [mixtures.uniform_block(7, 4, 5)]
    )
    assert not np.isin(a, neighbours).any()  # blocks and streams never share draws
    rows = {"fra": [f"f{i}" for i in range(5)], "deu": [f"d{i}" for i in range(3)]}
    stream = lambda: mixtures.mixed_language_rows(
        rows, {"fra": 0.5, "deu": 0.5, "ita": 0.2}, seed=1, host=0, shuffle=True
    )
    first = [next(s) for s in [stream()] for _ in range(400)]
    assert first == [next(s) for s in [stream()] for _ in range(400)]
    # Each language walks a permutation per epoch; "ita" has no rows here, so its draws go to the next language.
    fra = [r for r in first if r[0] == "f"]
    assert sorted(fra[:5]) == rows["fra"] and sorted(fra[5:10]) == rows["fra"] and fra[:5] != fra[5:10]
    assert 0.3 < sum(r[0] == "f" for r in first) / 400 < 0.5  # fra 0.5 / 1.2 of the draws, ita's went to deu


def test_mixture_stream_is_deterministic_and_resumes_exactly(default_mixture):
    spec, config = default_mixture
    uninterrupted = _take(pipeline.TrainIterator(spec, config, batch_size=4, seed=3), 6)
    assert _same(uninterrupted, _take(pipeline.TrainIterator(spec, config, batch_size=4, seed=3), 6))
    assert not _same(uninterrupted, _take(pipeline.TrainIterator(spec, config, batch_size=4, seed=4), 6))
    resumed = pipeline.TrainIterator(spec, config, batch_size=4, seed=3, start_position=4)
    assert _same(_take(resumed, 2), uninterrupted[4:])
    # Two hosts read disjoint rows.
    segments = []
    for host in range(2):
        batches = _take(
            pipeline.TrainIterator(spec, config, batch_size=2, seed=3, process_index=host, process_count=2), 3
        )
        segments.append({
            tuple(t[s == i]) for b in batches for t, s in zip(b["decoder_target_tokens"], b["decoder_segment_ids"], strict=True)
            for i in range(1, s.max() + 1)
        })  # fmt: skip
    assert segments[0] and segments[1] and not segments[0] & segments[1]


def test_aya23_over_both_sources(aya_config, aya_files):
    aya_config.task = "aya23_sft"
    spec = pipeline.prepare(aya_config)
    mixture = seqio.get_mixture_or_task(spec.task_name)
    assert sorted(t.name for t in mixture.tasks) == ["aya23_sft.aya_collection", "aya23_sft.aya_dataset"]
    # An endless mixing stream must not get seqio's in-memory cache (given a size, small tasks get one).
    assert all(task.source.num_input_examples("train") is None for task in mixture.tasks)
    info = mixtures.mixture_info("aya23_sft")
    assert set(info.language_rates) == {lang.iso639_3 for lang in languages.aya23_languages()}
    # The mixture's source rates are the per-language shares summed.
    for task in mixture.tasks:
        source = task.name.split(".")[1]
        assert mixture.get_rate(task) == pytest.approx(
            sum(p for (s, _), p in info.pair_rates.items() if s == source)
        )
    sampled = _sampled_languages("aya23_sft", 10_000)
    assert set(sampled) <= set(info.language_rates)  # the 16 other NTREX languages are not in Aya 23
    worst = max(abs(sampled[lang] / 10_000 - p) for lang, p in info.language_rates.items())
    assert worst < 0.01
    # Explicit weights through a gin binding.
    aya_config.gin_bindings = (
        'aya23_sft/mixture_spec.rate = "weights"',
        'aya23_sft/mixture_spec.language_weights = {"ara": 3.0, "hin": 1.0}',
    )
    pipeline.prepare(aya_config)
    sampled = _sampled_languages("aya23_sft", 4_000)
    assert set(sampled) == {"ara", "hin"} and abs(sampled["ara"] / 4_000 - 0.75) < 0.03


@pytest.mark.slow
def test_sft_trains_on_a_mixture_by_name(data_dir, tmp_path):
    """`config.data.task = "<mixture>"` through main: two SFT steps on the embedded language mixture."""
    env = dict(
        os.environ,
        AYA_DATA_DIR=str(data_dir),
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(REPO),
    )
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    command = [
        sys.executable, "-m", "aya_jax.main", "--config", "configs/quickstart.py", "--workdir", str(tmp_path),
        "--config.data.task=aya_default_mixture", "--config.train.steps=2", "--config.data.seq_len=64",
        "--config.data.vocab.size=2000", "--config.model.overrides.num_layers=1", "--config.train.global_batch_size=8",
        "--config.train.eval_every=1000", "--config.train.eval_batches=1", "--config.train.progress_bar=False",
        "--config.metrics.tensorboard=False", "--config.train.plot=False", "--config.checkpoint.async_save=False",
        "--config.train.sample_prompts=0",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"aya_default_mixture: \d+ languages from aya_default", result.stderr)
    assert (tmp_path / "metrics.jsonl").read_text().count('"loss"') >= 1
