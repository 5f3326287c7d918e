"""The examples of a downstream task, from its local files or from TFDS, as one schema:

  {"sentence1": string, "sentence2": string ("" for single-sentence tasks; Multi30k: the German target),
   "label": int32 class id (float32 score for STS-B; -1 for Multi30k)}

with splits "train" and "validation" (the GLUE dev set; MNLI's validation_matched).

source="local": the files under data_dir listed in lmx.finetune.local_files (SST-2, CoLA, RTE, AG News, Multi30k).
source="tfds": TFDS `glue/<name>:2.0.0` for the nine GLUE tasks and `ag_news_subset:1.0.0` (its test split
validates) for AG News, read from data_dir ("" = TFDS's default, ~/tensorflow_datasets), prepared beforehand:
nothing downloads here. Multi30k is not in TFDS: local only.
"""

from __future__ import annotations

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from lmx.config_lib import ConfigError
from lmx.finetune import local_files
from lmx.finetune.catalog import DownstreamTask

SOURCES = ("local", "tfds")
SPLITS = ("train", "validation")
_GATHERED_ROWS = 256  # rows of a local file read per gather


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; choose one of {list(SPLITS)}")


def label_dtype(task: DownstreamTask) -> tf.DType:
    return tf.float32 if task.kind == "regression" else tf.int32


def _row_order(n: int, seed: int | None) -> tf.data.Dataset:
    """[n] int64 row indices in a random order, another one on every pass (seqio's repeat), the same sequence of
    orders for the same seed. The order is a stateless permutation of a seed drawn once per pass, so a tf.data
    checkpoint holds a seed and a position (~2 KB) where a shuffle buffer of every row would hold ~200 bytes a row."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)

    def permutation(draw):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([draw, 0]))
        return tf.data.Dataset.from_tensor_slices(order)

    return seeds.flat_map(permutation)


def _local_source(task: DownstreamTask, data_dir: str) -> seqio.DataSource:
    """The task's local files; a shuffle permutes the whole split (_row_order). seqio shards this source by
    examples after it, so the input shards of a shuffled split are disjoint only when they share a seed."""
    local_files.check_files(task.name, data_dir)  # one line naming a missing file, before anything is built

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        _check_split(split)
        columns = local_files.read(task.name, split, data_dir)
        columns["label"] = columns["label"].astype(label_dtype(task).as_numpy_dtype)
        table = {key: tf.constant(values) for key, values in columns.items()}  # [n] each
        rows = (
            _row_order(len(columns["label"]), seed) if shuffle_files else tf.data.Dataset.range(len(columns["label"]))
        )
        # Gathering blocks of rows is ~10x faster than one gather per row.
        blocks = rows.batch(_GATHERED_ROWS).map(lambda i: {key: tf.gather(column, i) for key, column in table.items()})
        return blocks.unbatch()

    return seqio.FunctionDataSource(dataset_fn, splits=SPLITS)


class DownstreamTfdsSource(seqio.TfdsDataSource):
    """A TFDS dataset already prepared in data_dir (never downloaded here), mapped to the common schema."""

    def __init__(self, task: DownstreamTask, data_dir: str):
        super().__init__(
            tfds_name=task.tfds_name, tfds_data_dir=data_dir or None, splits=dict(task.tfds_splits), read_only=True
        )
        self._task = task
        self._data_dir = data_dir

    def num_input_examples(self, split: str) -> int | None:
        """The split's size from the dataset's info; None when the info holds no sizes (tfds.testing.mock_data),
        which only keeps seqio from caching the split in memory."""
        try:
            return super().num_input_examples(split)
        except KeyError:
            return None

    def get_dataset(self, split: str = "train", *args, **kwargs) -> tf.data.Dataset:
        _check_split(split)
        try:
            dataset = super().get_dataset(split, *args, **kwargs)
        except (AssertionError, tfds.core.DatasetNotFoundError, FileNotFoundError) as e:
            where = self._data_dir or "TFDS's default data_dir (~/tensorflow_datasets)"
            name = self._task.tfds_name
            raise FileNotFoundError(
                f"TFDS dataset {name} is not prepared in {where}; prepare it there (`tfds build "
                f"{name.split(':')[0]} --data_dir=...`) and set config.finetune.data_dir to it, or use "
                "config.finetune.source='local'"
            ) from e
        fields = self._task.tfds_fields
        dtype = label_dtype(self._task)

        def to_schema(example):
            return {
                "sentence1": example[fields[0]],
                "sentence2": example[fields[1]] if len(fields) > 1 else tf.constant(""),
                "label": tf.cast(example["label"], dtype),
            }

        return dataset.map(to_schema, num_parallel_calls=tf.data.AUTOTUNE)


def data_source(task: DownstreamTask, *, source: str, data_dir: str) -> seqio.DataSource:
    """The seqio DataSource of `task`'s examples (common schema) from `source`."""
    if source not in SOURCES:
        raise ConfigError(f"config.finetune.source={source!r} is unknown; choose one of {list(SOURCES)}")
    if source == "tfds":
        if task.tfds_name is None:
            raise ConfigError(
                f"config.finetune.task={task.name!r} has no TFDS dataset; use config.finetune.source='local' with "
                "config.finetune.data_dir holding its files"
            )
        return DownstreamTfdsSource(task, data_dir)
    if task.name not in local_files.LOCAL_TASKS:
        local = ", ".join(local_files.LOCAL_TASKS)
        raise ConfigError(
            f"config.finetune.task={task.name!r} has no local files in lmx (local: {local}); use "
            "config.finetune.source='tfds'"
        )
    return _local_source(task, data_dir)


def examples(task: DownstreamTask, split: str, *, source: str, data_dir: str) -> tf.data.Dataset:
    """The examples of `split` ("train" | "validation") in source order, unshuffled, once."""
    _check_split(split)
    return data_source(task, source=source, data_dir=data_dir).get_dataset(split=split, shuffle=False)
