"""seqio task -> process-local numpy batches -> global jax.Arrays on the mesh; a checkpointable iterator.

Each process reads only its shard of the data (seqio ShardInfo) and batches `global_batch / process_count` rows;
`lmx.sharding.global_batch_from_host` then assembles the global array from every process's rows.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import seqio
import tensorflow as tf

from lmx.data import tasks


class DataIterator:
    """Iterates process-local batches ({feature: np.ndarray [local_batch, length]}); saves its exact position.

    The position is tf.data's own iterator checkpoint (shuffle and prefetch buffers included), so a restored
    iterator yields exactly the batches the original would have yielded next.
    """

    def __init__(self, dataset: tf.data.Dataset):
        self._dataset = dataset
        self._iterator = iter(dataset)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in next(self._iterator).items()}

    def save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        tf.train.Checkpoint(iterator=self._iterator).write(os.path.join(path, "iterator"))

    def restore(self, path: str) -> None:
        tf.train.Checkpoint(iterator=self._iterator).read(os.path.join(path, "iterator")).assert_consumed()


def make_dataset(
    data_config, *, split: str, local_batch_size: int, shuffle: bool, shard_index: int, num_shards: int
) -> tf.data.Dataset:
    """Batched, converted (packed) features of the configured task for one process, repeating forever."""
    name = tasks.register_task(data_config)
    task = seqio.get_mixture_or_task(name)
    lengths = tasks.task_feature_lengths(data_config)
    dataset = task.get_dataset(
        sequence_length=lengths,
        split=split,
        shuffle=shuffle,
        shuffle_buffer_size=data_config.shuffle_buffer,
        seed=data_config.seed,
        shard_info=seqio.ShardInfo(index=shard_index, num_shards=num_shards),
        num_epochs=None,  # repeat; evaluation takes a fixed number of batches from the start
        use_cached=False,
    )
    dataset = tasks.feature_converter(data_config)(dataset, lengths)
    dataset = dataset.batch(local_batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_iterator(config, *, split: str, shuffle: bool) -> DataIterator:
    """This process's iterator over its rows of each global batch of `config.train.batch_size`."""
    return DataIterator(
        make_dataset(
            config.data,
            split=split,
            local_batch_size=config.train.batch_size // jax.process_count(),
            shuffle=shuffle,
            shard_index=jax.process_index(),
            num_shards=jax.process_count(),
        )
    )
