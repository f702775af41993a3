"""The trainer's interface: deterministic batches, exact resume, disjoint hosts, dense packing."""

import json

import numpy as np
import pytest

from aya_jax.data import default_data, feature_converters, pipeline, tasks

KEYS = {
    "decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights", "decoder_segment_ids",
    "decoder_positions", "decoder_language_ids",
}  # fmt: skip


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _same(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def _segments(batches):
    """Every packed example in `batches`, as a tuple of its tokens."""
    out = []
    for batch in batches:
        for tokens, segments in zip(
            batch["decoder_target_tokens"], batch["decoder_segment_ids"], strict=True
        ):
            out += [tuple(tokens[segments == s]) for s in range(1, segments.max() + 1)]
    return out


@pytest.fixture(scope="module")
def spec(data_dir, make_data_config):
    return pipeline.prepare(make_data_config(data_dir))


@pytest.fixture(scope="module")
def tiny(data_dir, make_data_config, spec, tmp_path_factory):
    """A 90-row task (7 examples a row at seq_len 128: ~3 batches of 4 an epoch): crosses epochs cheaply."""
    folder = tmp_path_factory.mktemp("tiny")
    rows = (
        default_data.split_paths(make_data_config(data_dir))["train"].read_text(encoding="utf-8").splitlines()
    )
    (folder / "train.jsonl").write_text("\n".join(rows[:90]) + "\n", encoding="utf-8")
    (folder / "validation.jsonl").write_text("\n".join(rows[90:93]) + "\n", encoding="utf-8")
    tasks.register_aya_jsonl_task(
        "tiny", [str(folder / "train.jsonl")], [str(folder / "validation.jsonl")], spec.vocab
    )
    config = make_data_config(data_dir)
    config.task = "tiny"
    return pipeline.prepare(config), config, [json.loads(r) for r in rows[:90]]


def test_prepare(spec):
    assert (spec.task_name, spec.vocab_size, spec.pad_id, spec.eos_id) == ("aya_default", 2000, 0, 1)


def test_batch_format(spec, data_config):
    batch = next(pipeline.TrainIterator(spec, data_config, batch_size=4, seed=0))
    assert set(batch) == KEYS
    assert all(v.shape == (4, 128) and v.dtype == np.int32 for v in batch.values())
    real = batch["decoder_segment_ids"] != 0
    assert (batch["decoder_language_ids"][real] > 0).all()  # every default-data row has a known language
    assert batch["decoder_target_tokens"].max() < spec.vocab_size


def test_same_seed_same_batches(spec, data_config):
    a = _take(pipeline.TrainIterator(spec, data_config, batch_size=4, seed=7), 3)
    b = _take(pipeline.TrainIterator(spec, data_config, batch_size=4, seed=7), 3)
    c = _take(pipeline.TrainIterator(spec, data_config, batch_size=4, seed=8), 3)
    assert _same(a, b)
    assert not _same(a, c)


def test_resume_continues_exactly(spec, data_config):
    full = pipeline.TrainIterator(spec, data_config, batch_size=4, seed=1)
    uninterrupted = _take(full, 6)
    assert full.position == 6
    resumed = pipeline.TrainIterator(spec, data_config, batch_size=4, seed=1, start_position=3)
    assert _same(_take(resumed, 3), uninterrupted[3:])
    assert resumed.position == 6


def test_resume_across_epochs(tiny):
    spec, config, _ = tiny
    uninterrupted = _take(pipeline.TrainIterator(spec, config, batch_size=4, seed=3), 14)
    for start in (2, 5, 9):
        resumed = pipeline.TrainIterator(spec, config, batch_size=4, seed=3, start_position=start)
        assert _same(_take(resumed, 14 - start), uninterrupted[start:]), start
        assert resumed.epoch >= 1 or start < 3
    # Epochs are reshuffled: the stream does not simply repeat.
    first_epoch = _segments(uninterrupted[:2])
    assert first_epoch != _segments(uninterrupted[3:5])


def test_two_hosts_read_disjoint_rows(tiny):
    spec, config, rows = tiny
    hosts = [
        set(
            _segments(
                _take(
                    pipeline.TrainIterator(
                        spec, config, batch_size=2, seed=0, process_index=i, process_count=2
                    ),
                    12,
                )
            )
        )
        for i in range(2)
    ]
    assert hosts[0] and hosts[1] and not hosts[0] & hosts[1]
    assert len(hosts[0] | hosts[1]) == len(rows)  # 12 batches of 2 are > one epoch each: every row seen


def test_eval_batches_are_fixed_and_repeat_a_short_split(tiny, spec, data_config):
    tiny_spec, tiny_config, _ = tiny
    batches = pipeline.eval_batches(tiny_spec, tiny_config, batch_size=2, num_batches=3)
    assert len(batches) == 3 and set(batches[0]) == KEYS
    assert _same(batches, pipeline.eval_batches(tiny_spec, tiny_config, batch_size=2, num_batches=3))
    assert len(set(_segments(batches))) == 3  # three validation rows, repeated to fill six packed rows
    a = pipeline.eval_batches(
        spec, data_config, batch_size=2, num_batches=2, process_index=0, process_count=2
    )
    b = pipeline.eval_batches(
        spec, data_config, batch_size=2, num_batches=2, process_index=1, process_count=2
    )
    assert not set(_segments(a)) & set(_segments(b))


@pytest.mark.parametrize("seq_len", [256, 512])
def test_packing_efficiency(spec, data_config, seq_len):
    data_config.seq_len = seq_len
    iterator = pipeline.TrainIterator(spec, data_config, batch_size=16, seed=0)
    efficiency = float(np.mean([pipeline.packing_efficiency(b) for b in _take(iterator, 10)]))
    truncated = iterator.converter.stats.truncated
    print(f"\npacking efficiency at seq_len {seq_len}: {efficiency:.4f} ({truncated} examples truncated)")
    assert efficiency >= 0.95


def test_config_errors_are_one_line(spec, data_config):
    data_config.train_split = "dev"
    with pytest.raises(ValueError, match=r"config.data.train_split='dev': task 'aya_default' has splits"):
        pipeline.prepare(data_config)
    data_config.train_split = "train"
    data_config.seq_len = 0
    with pytest.raises(ValueError, match=r"config.data.seq_len=0"):
        pipeline.TrainIterator(spec, data_config, batch_size=4, seed=0)


def test_encoder_decoder_batches_resume_exactly(tiny):
    spec, config, _ = tiny
    lengths = {"inputs": 64, "targets": 48}

    def iterator(start=0):
        converter = feature_converters.EncoderDecoderFeatureConverter(pack=True, inputs_eos_id=spec.eos_id)
        return pipeline.TrainIterator(
            spec,
            config,
            batch_size=4,
            seed=2,
            start_position=start,
            feature_converter=converter,
            feature_lengths=lengths,
        )

    uninterrupted = _take(iterator(), 5)
    assert uninterrupted[0]["encoder_input_tokens"].shape == (4, 64)
    assert uninterrupted[0]["decoder_target_tokens"].shape == (4, 48)
    assert _same(_take(iterator(3), 2), uninterrupted[3:])
