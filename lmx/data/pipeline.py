"""seqio task -> this process's rows of each global batch -> global jax.Arrays on the mesh; checkpointable.

The global batch is cut into `input_shards` equal blocks of rows; block k always comes from seqio shard k of the
task (ShardInfo(k, input_shards)). A process reads only the shards of the rows its devices hold, so the global
batch at every step is the same whatever the number of processes or the mesh: a run can be resumed on another
topology and sees the data stream it would have seen. Each shard's position is saved on its own.
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import NamedSharding

from lmx.data import streams, tasks


def num_input_shards(data_config) -> int:
    """config.data.input_shards, with -1 meaning one shard per process."""
    return data_config.input_shards if data_config.input_shards > 0 else jax.process_count()


def process_rows(batch_sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
    """[start, stop): the rows of the global batch that this process's devices hold."""
    index_map = batch_sharding.addressable_devices_indices_map((global_batch, 1))
    spans = sorted({(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop) for s in index_map.values()})
    start, stop = spans[0][0], spans[-1][1]
    covered = sum(b - a for a, b in spans)
    if covered != stop - start:
        raise ValueError(
            f"process {jax.process_index()} holds non-contiguous batch rows {spans}; use a mesh whose "
            "batch axes are laid out process by process (the default make_mesh order)"
        )
    return start, stop


def shards_of_rows(start: int, stop: int, global_batch: int, shards: int) -> range:
    """The input shards whose row blocks make up rows [start, stop) of the global batch."""
    if global_batch % shards:
        raise ValueError(
            f"config.train.batch_size={global_batch} is not divisible by config.data.input_shards={shards}; "
            "choose input_shards dividing the batch size"
        )
    block = global_batch // shards
    if start % block or stop % block:
        raise ValueError(
            f"process {jax.process_index()} holds batch rows [{start}, {stop}) but input shards are blocks of {block} "
            f"rows (config.data.input_shards={shards}); set input_shards to a multiple of the {jax.process_count()} "
            "processes"
        )
    return range(start // block, stop // block)


# Written beside the shard positions: {"input_shards": number of input shards of the global batch}.
SHARDS_FILE = "input_shards.json"


class DataIterator:
    """Iterates this process's rows of each global batch ({feature: np.ndarray [rows, length]}).

    Rows come from one tf.data iterator per input shard, concatenated in shard order. `save`/`restore` use
    tf.data's own iterator checkpoints (shuffle and prefetch buffers included), one per shard, so a restored
    iterator yields exactly the batches the original would have yielded next.
    """

    def __init__(
        self,
        datasets: dict[int, tf.data.Dataset],
        saved_shards: frozenset[int] | None = None,
        num_shards: int | None = None,
    ):
        self._iterators = {shard: iter(dataset) for shard, dataset in sorted(datasets.items())}
        # Shards whose position this process writes (when processes share rows, only one of them writes).
        self._saved_shards = frozenset(self._iterators) if saved_shards is None else saved_shards
        # Input shards of the whole global batch (all processes), written with the positions so that a restore
        # can tell positions of another config.data.input_shards from damage; None for never-saved iterators.
        self.num_shards = num_shards

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [next(iterator) for iterator in self._iterators.values()]
        return {name: np.concatenate([part[name].numpy() for part in parts]) for name in parts[0]}

    def save(self, path: str) -> None:
        for shard, iterator in self._iterators.items():
            if shard not in self._saved_shards:
                continue
            os.makedirs(os.path.join(path, f"shard_{shard}"), exist_ok=True)
            tf.train.Checkpoint(iterator=iterator).write(os.path.join(path, f"shard_{shard}", "iterator"))
        if 0 in self._saved_shards and self.num_shards is not None:  # one process writes it
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, SHARDS_FILE), "w") as f:
                json.dump({"input_shards": self.num_shards}, f)

    @staticmethod
    def saved_num_shards(path: str) -> int | None:
        """The number of input shards whose positions `path` holds: from SHARDS_FILE, or (checkpoints written
        before it existed) the shard_0 .. shard_{n-1} directories; None when neither tells."""
        if os.path.exists(os.path.join(path, SHARDS_FILE)):
            with open(os.path.join(path, SHARDS_FILE)) as f:
                return int(json.load(f)["input_shards"])
        names = os.listdir(path) if os.path.isdir(path) else []
        present = {int(m.group(1)) for n in names if (m := re.fullmatch(r"shard_(\d+)", n))}
        return len(present) if present and present == set(range(len(present))) else None

    def check_saved(self, path: str) -> None:
        """Before a restore reads anything: ValueError when `path` holds the positions of another number of input
        shards (a config to fix), FileNotFoundError naming the first file of this process's shards that is missing
        (damage)."""
        saved = self.saved_num_shards(path)
        if saved is not None and self.num_shards is not None and saved != self.num_shards:
            raise ValueError(
                f"its data positions are of {saved} input shards, this run reads {self.num_shards} (-1 means one per "
                f"process); resume with --config.data.input_shards={saved} (a multiple of the process count)"
            )
        for shard in self._iterators:
            prefix = os.path.join(path, f"shard_{shard}", "iterator")
            if not os.path.exists(prefix + ".index"):
                raise FileNotFoundError(f"data/shard_{shard}/iterator.index is missing")
            if not tf.io.gfile.glob(prefix + ".data-*"):
                raise FileNotFoundError(f"data/shard_{shard}/iterator.data-* is missing")

    def restore(self, path: str) -> None:
        self.check_saved(path)
        for shard, iterator in self._iterators.items():
            prefix = os.path.join(path, f"shard_{shard}", "iterator")
            tf.train.Checkpoint(iterator=iterator).read(prefix).assert_consumed()


def make_dataset(data_config, *, split: str, rows: int, shuffle: bool, shard: int, shards: int) -> tf.data.Dataset:
    """Batches of `rows` converted (packed) examples from one seqio shard of the configured task (or mixture),
    forever."""
    name = tasks.register_task(data_config)
    task = seqio.get_mixture_or_task(name)
    lengths = tasks.task_feature_lengths(data_config)
    dataset = task.get_dataset(  # a Task shuffles with the buffer it was registered with (data.shuffle_buffer)
        sequence_length=lengths,
        split=split,
        shuffle=shuffle,
        seed=data_config.seed,
        shard_info=seqio.ShardInfo(index=shard, num_shards=shards),
        num_epochs=None,  # repeat; evaluation takes a fixed number of batches from the start
        use_cached=False,
    )
    dataset = tasks.feature_converter(data_config)(dataset, lengths)
    if tasks.get_objective(data_config).row_streams:  # XLNet's memory: each row continues its own stretch of text
        dataset = streams.contiguous_rows(dataset, rows, data_config.stream_window)
    else:
        dataset = dataset.batch(rows, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_datasets(config, batch_sharding: NamedSharding, *, split: str, shuffle: bool) -> dict[int, tf.data.Dataset]:
    """The datasets of the input shards whose rows this process feeds, by shard index."""
    global_batch = config.train.batch_size
    shards = num_input_shards(config.data)
    start, stop = process_rows(batch_sharding, global_batch)
    return {
        shard: make_dataset(
            config.data, split=split, rows=global_batch // shards, shuffle=shuffle, shard=shard, shards=shards
        )
        for shard in shards_of_rows(start, stop, global_batch, shards)
    }


def shard_writers(batch_sharding: NamedSharding, global_batch: int, shards: int) -> dict[int, int]:
    """Input shard -> the lowest process holding its rows: the one process that saves its position."""
    block = global_batch // shards
    writers: dict[int, int] = {}
    for device, index in batch_sharding.devices_indices_map((global_batch, 1)).items():
        start = index[0].start or 0
        stop = global_batch if index[0].stop is None else index[0].stop
        for shard in range(start // block, -(-stop // block)):
            writers[shard] = min(writers.get(shard, device.process_index), device.process_index)
    return writers


def make_iterator(config, batch_sharding: NamedSharding, *, split: str, shuffle: bool) -> DataIterator:
    """This process's iterator over its rows of each global batch of `config.train.batch_size`."""
    shards = num_input_shards(config.data)
    writers = shard_writers(batch_sharding, config.train.batch_size, shards)
    saved = frozenset(shard for shard, process in writers.items() if process == jax.process_index())
    return DataIterator(make_datasets(config, batch_sharding, split=split, shuffle=shuffle), saved, shards)
