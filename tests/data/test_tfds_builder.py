"""The TFDS builder over local Aya Dataset files: same rows as the file reader, and tasks read through it."""

import pytest
import seqio
import tensorflow_datasets as tfds

from aya_jax.data import pipeline, source_files, sources, tasks, tfds_builder


@pytest.fixture(scope="module")
def parquet_aya_dataset(aya_files, tmp_path_factory):
    """The Aya Dataset fixture as published on the Hub: data/{train,test}-00000-of-00001.parquet."""
    import aya_fixtures

    folder = tmp_path_factory.mktemp("aya_dataset_parquet")
    for split, rows in aya_files["aya_dataset"].items():
        aya_fixtures.write_parquet(folder / f"data/{split}-00000-of-00001.parquet", rows)
    return folder


def test_builder_holds_the_readers_rows(parquet_aya_dataset, tmp_path):
    builder = tfds_builder.AyaDatasetLocal(data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(parquet_aya_dataset), compute_stats=tfds.download.ComputeStatsMode.SKIP
        )
    )
    assert set(builder.info.splits) == {"train", "test"}
    files = source_files.discover_split_files(str(parquet_aya_dataset))
    for split, tfds_split in (("train", "train"), ("validation", "test")):
        expected = sorted(
            tuple(r[f] for f in sources.FIELDS) for r in sources.RowReader(files[split], strict=True)
        )
        got = sorted(
            tuple(ex[f].decode() for f in sources.FIELDS)
            for ex in builder.as_dataset(split=tfds_split).as_numpy_iterator()
        )
        assert got == expected


def test_tasks_and_mixtures_read_through_tfds(aya_config, parquet_aya_dataset):
    aya_config.aya_dataset_dir = str(parquet_aya_dataset)
    aya_config.task = "aya_dataset_hin"
    files_rows = list(
        seqio.get_mixture_or_task(pipeline.prepare(aya_config).task_name)
        .source.get_dataset(split="train", shuffle=False)
        .as_numpy_iterator()
    )
    aya_config.aya_dataset_format = "tfds"
    spec = pipeline.prepare(aya_config)
    task = seqio.get_mixture_or_task(spec.task_name)
    shards = [
        list(
            task.source.get_dataset(
                split="train", shuffle=False, shard_info=seqio.ShardInfo(i, 2)
            ).as_numpy_iterator()
        )
        for i in range(2)
    ]
    key = lambda r: (r["inputs"], r["targets"])
    assert sorted(map(key, shards[0] + shards[1])) == sorted(map(key, files_rows))
    assert not set(map(key, shards[0])) & set(map(key, shards[1]))
    # A mixture over the TFDS build: its per-source task reads the prepared TFRecords, not the parquet files.
    aya_config.task = "aya23_sft"
    aya_config.aya_collection_dir = (
        ""  # and no <data_dir>/aya_collection: the mixture uses the Aya Dataset only
    )
    spec = pipeline.prepare(aya_config)
    assert [t.name for t in seqio.get_mixture_or_task("aya23_sft").tasks] == ["aya23_sft.aya_dataset"]
    info = tasks.task_info("aya23_sft.aya_dataset")
    assert isinstance(info.reader("train"), tfds_builder.TfdsRowReader)
    batch = next(pipeline.TrainIterator(spec, aya_config, batch_size=2, seed=0))
    assert batch["decoder_target_tokens"].shape == (2, 256)
