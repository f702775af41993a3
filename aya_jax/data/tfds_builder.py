"""A TensorFlow Datasets builder for the Aya Dataset over local files, and seqio sources that read it.

The Aya Dataset cannot be downloaded here, so the builder is a manual-download builder: its `manual_dir` is
the folder of files as published (`data/train-00000-of-00001.parquet`, `data/test-...parquet`, or jsonl /
jsonl.gz exports, see `source_files.discover_split_files`). It validates rows with the same reader as the file
tasks (bad rows are skipped and counted; `config.data.strict` is enforced by the catalog's counting pass
before the build) and writes TFRecords with TFDS's usual splits "train" and "test".

    builder = AyaDatasetLocal(data_dir="/data/tfds")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="/data/aya_dataset"))
    ds = builder.as_dataset(split="train")   # {inputs, targets, language, language_code, annotation_type, user_id}

With `config.data.aya_dataset_format = "tfds"`, `prepare` builds it once under
`<data_dir>/tfds/<fingerprint of the files>/` and the Aya Dataset tasks read it (TFDS "test" is the tasks'
"validation" split). Hosts read disjoint example ranges (`tfds.even_splits`).

In the data package's one import direction (see `aya_jax.data`) this is a leaf, beside `sources`: it imports
only `cache`, `source_files` and `sources`, so `tasks` (whose `TaskInfo.reader` returns a `TfdsRowReader`) and
`catalog` (which prepares the build) import it at their top.
"""

import logging
import os

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds  # not lazy: seqio imports it anyway, so importing this module is cheap

from aya_jax.data import cache, source_files, sources

log = logging.getLogger(__name__)

TFDS_NAME = "aya_dataset_local"
SPLITS = {"train": "train", "validation": "test"}  # task split -> TFDS split


class AyaDatasetLocal(tfds.core.GeneratorBasedBuilder):
    """The Aya Dataset (CohereForAI/aya_dataset) from local files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Rows as published; language_code normalised to ISO 639-3 where known."}
    # Nothing is downloaded, so there are no URL checksums. Set here rather than found next to the builder's
    # code: TFDS 4.9's lookup of that file imports `importlib_resources`, which it does not depend on.
    url_infos = {}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the Aya Dataset files as published on the Hugging Face Hub (data/train-*.parquet and "
        "data/test-*.parquet, or .jsonl / .jsonl.gz exports named train* / test*) in the manual_dir."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({field: tfds.features.Text() for field in sources.FIELDS}),
            homepage="https://huggingface.co/datasets/CohereForAI/aya_dataset",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        files = source_files.discover_split_files(str(dl_manager.manual_dir))
        if "train" not in files:
            raise FileNotFoundError(f"{dl_manager.manual_dir}: no train files for the Aya Dataset")
        out = {"train": self._generate_examples(files["train"])}
        if "validation" in files:
            out["test"] = self._generate_examples(files["validation"])
        return out

    def _generate_examples(self, paths):
        reader = sources.RowReader(paths, strict=False, schema=sources.AYA_DATASET)
        for row, where in reader.rows_with_locations():
            yield where, row  # "path:line" is unique and stable


def prepare(data_config, split_files: dict[str, tuple[str, ...]]) -> str:
    """Build the TFDS dataset from these files unless an identical build exists; returns its data_dir."""
    every_file = [f for split in sorted(split_files) for f in split_files[split]]
    fingerprint = source_files.fingerprint(every_file, sources.AYA_DATASET, None)
    data_dir = cache.data_dir(data_config) / "tfds" / fingerprint
    builder = AyaDatasetLocal(data_dir=str(data_dir))
    if not builder.is_prepared():
        manual_dir = os.path.commonpath(every_file) if len(every_file) > 1 else os.path.dirname(every_file[0])
        log.info("building TFDS %s from %s into %s", TFDS_NAME, manual_dir, data_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=manual_dir, compute_stats=tfds.download.ComputeStatsMode.SKIP
            )
        )
    return str(data_dir)


def _builder(tfds_data_dir: str) -> AyaDatasetLocal:
    return AyaDatasetLocal(data_dir=tfds_data_dir)


def _examples(tfds_data_dir: str, split: str, shard_index: int, num_shards: int, shuffle_files: bool, seed):
    builder = _builder(tfds_data_dir)
    tfds_split = SPLITS[split]
    if tfds_split not in builder.info.splits:
        raise ValueError(f"split {split!r}: the TFDS build at {tfds_data_dir} has no {tfds_split!r} split")
    part = tfds.even_splits(tfds_split, n=num_shards)[shard_index] if num_shards > 1 else tfds_split
    read_config = tfds.ReadConfig(shuffle_seed=seed) if shuffle_files else None
    return builder.as_dataset(split=part, shuffle_files=shuffle_files, read_config=read_config)


def aya_dataset_source(tfds_data_dir: str, split_files, language: str | None) -> seqio.DataSource:
    """A seqio source over the TFDS build (of one language, if given), sharded by example ranges."""

    def dataset_fn(split, shuffle_files, seed=None, shard_index=0, num_shards=1) -> tf.data.Dataset:
        ds = _examples(tfds_data_dir, split, shard_index, num_shards, shuffle_files, seed)
        if language:
            ds = ds.filter(lambda ex: tf.equal(ex["language_code"], language))
        return ds

    return sources.ShardedFunctionDataSource(dataset_fn, splits=tuple(s for s in SPLITS if s in split_files))


class TfdsRowReader:
    """The rows of a TFDS build as dicts of strings: the interface of `sources.RowReader` that mixtures and
    statistics use (iteration, `rows_with_locations`, `cache_key`, `size_bytes`, `stats`)."""

    def __init__(self, tfds_data_dir: str, split: str, *, shard_index=0, num_shards=1, language=None):
        self.tfds_data_dir, self.split = tfds_data_dir, split
        self.shard_index, self.num_shards, self.language = shard_index, num_shards, language
        self.stats = sources.BadRowStats()  # bad rows were dropped (and reported) when the build was made

    def rows_with_locations(self):
        self.stats = sources.BadRowStats()
        ds = _examples(self.tfds_data_dir, self.split, self.shard_index, self.num_shards, False, None)
        for i, ex in enumerate(ds.as_numpy_iterator()):
            row = {k: v.decode("utf-8") for k, v in ex.items()}
            if self.language and row["language_code"] != self.language:
                continue
            self.stats.rows += 1
            yield row, f"tfds:{TFDS_NAME}/{SPLITS[self.split]}:{i}"

    def __iter__(self):
        for row, _ in self.rows_with_locations():
            yield row

    def without_filters(self) -> "TfdsRowReader":
        return TfdsRowReader(
            self.tfds_data_dir, self.split, shard_index=self.shard_index, num_shards=self.num_shards
        )

    def cache_key(self) -> tuple:
        return ("tfds", self.tfds_data_dir, self.split, self.shard_index, self.num_shards, self.language)

    def size_bytes(self) -> int:
        return int(_builder(self.tfds_data_dir).info.dataset_size)
