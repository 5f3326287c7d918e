"""Batches of a downstream task (lmx.finetune.downstream) for the fine-tuning loop: the training stream, sharded
like lmx.data.pipeline's (input shard k always feeds block k of the global batch; positions checkpointed), and the
validation split in order, padded to whole global batches.

Rows carry their label as `labels` [B, 1] (not [B]): every batch feature is then [batch, length] and takes the
batch sharding of the mesh (lmx.sharding.batch_sharding).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import NamedSharding

from lmx.data import pipeline
from lmx.finetune import downstream


def features(config, task, vocabulary: seqio.Vocabulary, split: str, **kwargs) -> tf.data.Dataset:
    """Unbatched model features of `split` in config.finetune.format, labels as [1]; kwargs: shuffle, seed,
    num_epochs, shard_info (downstream's)."""
    f, d = config.finetune, config.data
    where = {"source": f.source, "data_dir": f.data_dir}
    if f.format == "classify":
        # A T5 encoder reads "a b EOS" (it never saw a [CLS] in pretraining); BERT-style encoders [CLS] a [SEP] b [SEP].
        layout = "t5" if config.model.name == "encoder_decoder" else "auto"
        dataset = downstream.classification_features(
            task, vocabulary, split, length=d.inputs_length, layout=layout, **where, **kwargs
        )
        return dataset.map(lambda ex: {**ex, "labels": ex["labels"][None]})
    return downstream.text_to_text_features(
        task,
        vocabulary,
        split,
        inputs_length=d.inputs_length,
        targets_length=d.targets_length,
        decoder_only=config.model.name == "decoder_only",
        **where,
        **kwargs,
    )


def train_iterator(config, task, vocabulary: seqio.Vocabulary, batch_sharding: NamedSharding) -> pipeline.DataIterator:
    """This process's rows of each global batch of the training split, shuffled (config.data.seed), repeated
    forever: a checkpointable lmx.data.pipeline.DataIterator."""
    global_batch = config.train.batch_size
    shards = pipeline.num_input_shards(config.data)
    start, stop = pipeline.process_rows(batch_sharding, global_batch)
    datasets = {}
    for shard in pipeline.shards_of_rows(start, stop, global_batch, shards):
        rows = features(
            config,
            task,
            vocabulary,
            "train",
            shuffle=True,
            seed=config.data.seed,
            num_epochs=None,
            shard_info=seqio.ShardInfo(index=shard, num_shards=shards),
        )
        datasets[shard] = rows.batch(global_batch // shards, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    writers = pipeline.shard_writers(batch_sharding, global_batch, shards)
    saved = frozenset(shard for shard, process in writers.items() if process == jax.process_index())
    return pipeline.DataIterator(datasets, saved, shards)


def eval_batches(
    dataset: tf.data.Dataset, global_batch: int, rows: tuple[int, int]
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(this process's rows [start, stop) of each global batch, how many rows of the global batch are examples) of
    an unbatched, finite dataset in its order. The last batch is filled with rows of zeros (token 0 is padding;
    their loss weights are 0), whose outputs the caller drops."""
    start, stop = rows
    for batch in dataset.batch(global_batch).as_numpy_iterator():
        real = len(next(iter(batch.values())))
        if real < global_batch:
            batch = {
                name: np.concatenate([value, np.zeros((global_batch - real, *value.shape[1:]), value.dtype)])
                for name, value in batch.items()
            }
        yield {name: value[start:stop] for name, value in batch.items() if value.dtype != object}, real


def count_examples(config, task) -> int:
    """Examples in the training split (for config.finetune.epochs)."""
    f = config.finetune
    return len(downstream.eval_targets(task, "train", source=f.source, data_dir=f.data_dir))
