"""seqio registration: the default task, users' own jsonl tasks, idempotence, sharding."""

import json

import numpy as np
import pytest
import seqio

from aya_jax.data import chat_template, languages, tasks


def _raw_rows(task, split, index=0, num_shards=1):
    ds = task.source.get_dataset(split=split, shuffle=False, shard_info=seqio.ShardInfo(index, num_shards))
    return [(r["inputs"], r["targets"]) for r in ds.as_numpy_iterator()]


@pytest.fixture(scope="module")
def default_task(data_dir, make_data_config):
    name = tasks.register_default_task(make_data_config(data_dir))
    return seqio.get_mixture_or_task(name)


def test_default_task(default_task):
    assert default_task.name == "aya_default"
    assert set(default_task.splits) == {"train", "validation"}
    example = next(
        default_task.get_dataset(
            {"inputs": 64, "targets": 64}, split="validation", shuffle=False
        ).as_numpy_iterator()
    )
    vocab = default_task.output_features["targets"].vocabulary
    (end_of_turn,) = vocab.encode(chat_template.END_OF_TURN)
    # The chat format: targets end with the end-of-turn marker, and no EOS anywhere.
    assert example["targets"].dtype == np.int32 and example["targets"][-1] == end_of_turn
    assert 1 not in example["inputs"].tolist() + example["targets"].tolist()
    assert vocab.decode(example["inputs"].tolist()).startswith(
        chat_template.BOS + chat_template.START_OF_TURN
    )
    assert languages.maybe_lookup(example["language_code"].decode()) is not None  # carried through, untouched
    assert default_task.output_features["inputs"].vocabulary == vocab and vocab.vocab_size == 2000


def test_hosts_read_disjoint_shards(default_task):
    everything = _raw_rows(default_task, "validation")
    shards = [_raw_rows(default_task, "validation", i, 3) for i in range(3)]
    assert shards[1] == everything[1::3]
    assert sorted(sum(shards, [])) == sorted(everything)


def test_registration_is_idempotent_and_replaces_on_change(tmp_path, default_task):
    path = tmp_path / "mine.jsonl"
    rows = [{"inputs": f"q{i}", "targets": f"a{i}", "language_code": "deu"} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vocab = default_task.output_features["targets"].vocabulary
    first = tasks.register_aya_jsonl_task("my_task", [str(path)], [], vocab)
    assert tasks.register_aya_jsonl_task("my_task", [str(path)], [], vocab) is first
    assert first.splits == ("train",)
    replaced = tasks.register_aya_jsonl_task("my_task", [str(path)], [], vocab, strict=True)
    assert replaced is not first and seqio.get_mixture_or_task("my_task") is replaced
    assert [r[0] for r in _raw_rows(replaced, "train")] == [f"q{i}".encode() for i in range(5)]
