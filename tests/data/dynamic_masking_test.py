"""RoBERTa's dynamic masking through a real seqio Task: fresh masks each epoch, exact masks after a resume."""

import functools

import numpy as np
import pretraining_text
import seqio
import tensorflow as tf

from lmx.data import language_modeling, masking, sources

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was not amused.",
    "Persuasion is the last novel Jane Austen finished; it was published after her death.",
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
]


def _register(name, source, vocab, special, length):
    """A Task of the lmx chain: tokenize -> full sentences -> MLM, with no cache placeholder (as lmx's tasks)."""
    steps = [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
        functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
        functools.partial(language_modeling.full_sentences, ids=special),
        functools.partial(masking.mlm, ids=special),
    ]
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=steps,
        output_features={"targets": seqio.Feature(vocab)},
        shuffle_buffer_size=16,
    )
    return seqio.get_mixture_or_task(name), {"targets": length}


def _fixed_source():
    def dataset_fn(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_tensor_slices({"text": TEXTS})

    return seqio.FunctionDataSource(dataset_fn, splits=("train",))


def _epochs(task, lengths, seed, count):
    ds = task.get_dataset(lengths, split="train", shuffle=False, seed=seed, num_epochs=None)
    return list(ds.take(count).as_numpy_iterator())


def test_masks_change_every_epoch(t5_vocab):
    special = pretraining_text.t5_objective_ids(t5_vocab)
    # One example per epoch: the three texts and their separators fill exactly L - 2 tokens.
    length = sum(len(t5_vocab.encode(text)) + 1 for text in TEXTS) + 2
    task, lengths = _register("test_dynamic_mlm", _fixed_source(), t5_vocab, special, length)
    epochs = _epochs(task, lengths, seed=5, count=8)
    assert all((ex["targets"] == epochs[0]["targets"]).all() for ex in epochs)  # the same text every epoch
    # RoBERTa's dynamic masking: a fresh mask each time the sequence is seen (BERT's static masks would repeat).
    assert len({tuple(ex["loss_weights"]) for ex in epochs}) == 8
    # Deterministic for a seed, different for another.
    again = _epochs(task, lengths, seed=5, count=8)
    assert [tuple(ex["inputs"]) for ex in again] == [tuple(ex["inputs"]) for ex in epochs]
    other = _epochs(task, lengths, seed=6, count=8)
    assert [tuple(ex["inputs"]) for ex in other] != [tuple(ex["inputs"]) for ex in epochs]


def test_restored_iterator_reproduces_the_masks(t5_vocab, data_config, tmp_path):
    """A tf.data iterator checkpoint (what lmx saves) restores the position of the masks' seed stream too."""
    special = pretraining_text.t5_objective_ids(t5_vocab)
    task, lengths = _register("test_dynamic_mlm_resume", sources.embedded_source(data_config), t5_vocab, special, 64)

    def dataset():
        return task.get_dataset(lengths, split="train", shuffle=True, seed=9, num_epochs=None).batch(4)

    iterator = iter(dataset())
    for _ in range(5):
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "iterator"))
    expected = [next(iterator) for _ in range(4)]
    restored = iter(dataset())
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    for want, got in zip(expected, [next(restored) for _ in range(4)], strict=True):
        for key in ("targets", "inputs", "loss_weights"):
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
    # A fresh iterator (no restore) starts over: different batches, so the comparison above is not vacuous.
    fresh = next(iter(dataset()))
    assert not np.array_equal(fresh["inputs"].numpy(), expected[0]["inputs"].numpy())
