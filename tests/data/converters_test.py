"""The encoder-only and sentence-pair feature converters: padding, packing without mixing examples, checks."""

import numpy as np
import pytest
import tensorflow as tf

from lmx.data import converters

ENCODER_FEATURES = {"encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights", "encoder_token_types"}


def _examples(num, seed=0, with_label=False):
    """Encoder examples of random lengths 3..20 whose features are recognisable per example."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(num):
        n = int(rng.integers(3, 21))
        targets = rng.integers(3, 1000, n).astype(np.int32)
        weights = (rng.random(n) < 0.3).astype(np.int32)
        ex = {
            "targets": targets,
            "inputs": np.where(weights > 0, 999, targets).astype(np.int32),
            "loss_weights": weights,
            "token_types": (np.arange(n) >= n // 2).astype(np.int32),
        }
        if with_label:
            ex["pair_label"] = np.array([i % 2], np.int32)
        examples.append(ex)
    return examples


def _dataset(examples):
    spec = {k: tf.TensorSpec([None], tf.int32) for k in examples[0]}
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)


def test_packed_rows_hold_whole_examples_in_separate_segments():
    examples = _examples(60)
    lengths = converters.encoder_task_lengths(32)
    rows = list(converters.EncoderOnlyFeatureConverter(pack=True)(_dataset(examples), lengths).as_numpy_iterator())
    assert set(rows[0]) == ENCODER_FEATURES | {"encoder_segment_ids", "encoder_positions"}
    assert len(rows) < len(examples) / 2  # several examples per row
    unpacked = []
    for row in rows:
        assert {v.shape for v in row.values()} == {(32,)} and {v.dtype for v in row.values()} == {np.dtype(np.int32)}
        seg = row["encoder_segment_ids"]
        # Segments are contiguous runs 1, 2, ..., then padding (segment 0) with zeros everywhere.
        runs = seg[seg > 0]
        assert (np.diff(runs) >= 0).all() and (np.unique(runs) == np.arange(1, runs.max() + 1)).all()
        assert (seg[len(runs) :] == 0).all()
        for key in ENCODER_FEATURES:
            assert (row[key][seg == 0] == 0).all()
        for s in range(1, runs.max() + 1):
            where = seg == s
            assert (row["encoder_positions"][where] == np.arange(where.sum())).all()  # restart in each example
            unpacked.append({key: row[key][where] for key in ENCODER_FEATURES})
    # Every example comes back whole and in order, each in a segment of its own.
    assert len(unpacked) == len(examples)
    for got, ex in zip(unpacked, examples, strict=True):
        for task_key, model_key in (
            ("inputs", "encoder_input_tokens"),
            ("targets", "encoder_target_tokens"),
            ("loss_weights", "encoder_loss_weights"),
            ("token_types", "encoder_token_types"),
        ):
            np.testing.assert_array_equal(got[model_key], ex[task_key])


def test_unpacked_rows_are_padded():
    examples = _examples(5)
    lengths = converters.encoder_task_lengths(24)
    rows = list(converters.EncoderOnlyFeatureConverter(pack=False)(_dataset(examples), lengths).as_numpy_iterator())
    assert len(rows) == 5 and set(rows[0]) == ENCODER_FEATURES
    for row, ex in zip(rows, examples, strict=True):
        n = len(ex["targets"])
        np.testing.assert_array_equal(row["encoder_input_tokens"][:n], ex["inputs"])
        assert (row["encoder_input_tokens"][n:] == 0).all() and (row["encoder_loss_weights"][n:] == 0).all()


def test_sentence_pairs_are_one_per_row_with_their_label():
    examples = _examples(6, with_label=True)
    lengths = converters.encoder_task_lengths(24, with_pair_label=True)
    rows = list(converters.SentencePairFeatureConverter()(_dataset(examples), lengths).as_numpy_iterator())
    assert set(rows[0]) == ENCODER_FEATURES | {"pair_label"}
    assert [row["pair_label"].tolist() for row in rows] == [[i % 2] for i in range(6)]
    batch = next(iter(converters.SentencePairFeatureConverter()(_dataset(examples), lengths).batch(3)))
    assert batch["pair_label"].shape == (3, 1) and batch["encoder_token_types"].shape == (3, 24)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="never packed.*data.pack=False"):
        converters.SentencePairFeatureConverter(pack=True)
    lengths = {**converters.encoder_task_lengths(24), "token_types": 16}
    with pytest.raises(ValueError, match="share one length"):
        converters.EncoderOnlyFeatureConverter(pack=False)(_dataset(_examples(2)), lengths)
