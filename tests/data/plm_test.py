"""Permutation-LM data (lmx.data.plm, lmx.data.streams): the prediction fraction 1/K, uniform factorization orders,
span-based targets, determinism, the feature converter (unpacked and packed) and rows that continue their stream."""

import collections
import itertools

import numpy as np
import pytest
import seqio
import tensorflow as tf

from lmx.config_lib import ConfigError
from lmx.data import pipeline, plm, streams

PROTECTED = (0, 1, 2)  # pad, eos, unk of these synthetic chunks


def _chunks(count: int, length: int, seed: int = 0) -> np.ndarray:
    """[count, length] token ids in 3..99 with an EOS (1) every ~40 tokens, as the document stream has."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, 100, (count, length))
    tokens[rng.random((count, length)) < 1 / 40] = 1
    return tokens


def _targets(chunks: np.ndarray, *, k: int = 6, spans: bool = False, seed: int = 0, epochs: int = 1) -> list:
    """The target positions `plm.plm` draws for each chunk (of each epoch), in stream order."""
    ds = tf.data.Dataset.from_tensor_slices({"targets": np.asarray(chunks, np.int32)}).repeat(epochs)
    with seqio.utils.map_seed_manager(seed):
        ds = plm.plm(ds, protected=PROTECTED, k=k, spans=spans)
    return [ex["target_positions"] for ex in ds.as_numpy_iterator()]


@pytest.mark.parametrize("spans", [False, True], ids=["tokens", "spans"])
@pytest.mark.parametrize("k", [6, 3, 1])
def test_prediction_fraction_is_one_over_k(k, spans):
    predicted = maskable = 0
    chunks = _chunks(60, 128)
    for tokens, positions in zip(chunks, _targets(chunks, k=k, spans=spans), strict=True):
        count = int(np.isin(tokens, PROTECTED, invert=True).sum())
        assert len(positions) == count // k  # the last floor(maskable / K) of the order
        assert len(set(positions.tolist())) == len(positions)  # distinct
        assert not np.isin(tokens[positions], PROTECTED).any()  # never EOS, unk or padding
        predicted, maskable = predicted + len(positions), maskable + count
    assert abs(predicted / maskable - 1 / k) < 1 / 128


def test_factorization_orders_are_uniform():
    """K = 1 predicts every token: its order must be a uniformly random permutation; K = 2 a uniform half."""
    tokens = np.array([[5, 6, 7, 8]])
    draws = 2400
    perms = collections.Counter(tuple(p) for p in _targets(tokens, k=1, epochs=draws))
    assert set(perms) == set(itertools.permutations(range(4)))
    expected = draws / 24
    chi2 = sum((n - expected) ** 2 / expected for n in perms.values())
    assert chi2 < 50  # 23 degrees of freedom: p < 1e-3 above ~50
    halves = collections.Counter(frozenset(p) for p in _targets(tokens, k=2, epochs=draws))
    assert len(halves) == 6 and min(halves.values()) > draws / 6 * 0.8


def _mean_run(positions_per_chunk) -> float:
    runs = []
    for positions in positions_per_chunk:
        marked = np.zeros(130, bool)
        marked[positions] = True
        edges = np.diff(np.concatenate([[0], marked.astype(int), [0]]))
        runs += list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    return float(np.mean(runs))


def test_span_targets_come_in_spans():
    """XLNet's span-based prediction: spans of 1-5 tokens (p ~ 1/n, mean 2.19) vs single tokens at random."""
    tokens = _chunks(80, 128, seed=3)
    spans, singles = _mean_run(_targets(tokens, spans=True)), _mean_run(_targets(tokens, spans=False))
    assert spans > 1.7 and singles < 1.35, (spans, singles)


def test_span_windows_hold_one_span_each():
    """Without specials, a chunk of 60 tokens and K = 6: every run of targets is one span of at most 5 tokens, or
    two from adjacent windows meeting at their border (at most 10), or a top-up single."""
    for positions in _targets(np.full((1, 60), 9), spans=True, epochs=50):
        positions = np.sort(positions)
        assert len(positions) == 10
        runs = np.split(positions, np.flatnonzero(np.diff(positions) > 1) + 1)
        assert max(len(r) for r in runs) <= 2 * plm.MAX_SPAN


def test_orders_are_deterministic_for_the_seed_and_fresh_every_epoch():
    chunks = _chunks(4, 64)
    first, again = _targets(chunks, seed=7, epochs=2), _targets(chunks, seed=7, epochs=2)
    other = _targets(chunks, seed=8, epochs=2)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert any((a != b).any() for a, b in zip(first, other, strict=True))
    assert all((a != b).any() for a, b in zip(first[:4], first[4:], strict=True))  # epoch 2 draws anew


def _convert(examples, lengths, pack):
    ds = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "targets": tf.TensorSpec([None], tf.int32),
            "target_positions": tf.TensorSpec([None], tf.int32),
        },
    )
    return list(plm.PlmFeatureConverter(pack=pack)(ds, lengths).as_numpy_iterator())


def test_converter_unpacked_matches_its_docstring():
    (row,) = _convert([{"targets": [7, 8, 9, 5, 1], "target_positions": [3, 1]}], plm.task_lengths(6, 3), False)
    np.testing.assert_array_equal(row["encoder_input_tokens"], [7, 8, 9, 5, 1, 0])
    np.testing.assert_array_equal(row["encoder_perm_rank"], [0, 2, 0, 1, 0, 0])
    np.testing.assert_array_equal(row["encoder_target_positions"], [1, 3])
    np.testing.assert_array_equal(row["encoder_target_tokens"], [8, 5])
    np.testing.assert_array_equal(row["encoder_loss_weights"], [1, 1])


def test_converter_packs_examples_with_their_own_ranks():
    examples = [
        {"targets": [7, 8, 9], "target_positions": [2]},
        {"targets": [4, 5, 6, 3], "target_positions": [0, 3]},
    ]
    (row,) = _convert(examples, {"targets": 8, "target_positions": 4}, True)
    np.testing.assert_array_equal(row["encoder_input_tokens"], [7, 8, 9, 4, 5, 6, 3, 0])
    np.testing.assert_array_equal(row["encoder_segment_ids"], [1, 1, 1, 2, 2, 2, 2, 0])
    np.testing.assert_array_equal(row["encoder_positions"], [0, 1, 2, 0, 1, 2, 3, 0])
    np.testing.assert_array_equal(row["encoder_perm_rank"], [0, 0, 1, 1, 0, 0, 2, 0])
    np.testing.assert_array_equal(row["encoder_target_positions"], [2, 3, 6, 0])  # row positions, a padding slot
    np.testing.assert_array_equal(row["encoder_target_tokens"], [9, 4, 3, 0])
    np.testing.assert_array_equal(row["encoder_loss_weights"], [1, 1, 1, 0])


def test_converter_refuses_more_targets_than_slots():
    """Two examples of 2 targets each fit 3 slots alone but not packed together (a plm chain never makes them:
    floor(a / K) + floor(b / K) <= floor((a + b) / K))."""
    examples = [{"targets": [7, 8, 9], "target_positions": [0, 1]}] * 2
    with pytest.raises(tf.errors.InvalidArgumentError, match="query-stream slots"):
        _convert(examples, {"targets": 8, "target_positions": 3}, True)


def test_task_lengths_refuse_k_beyond_the_length():
    assert plm.task_lengths(512, 6) == {"targets": 512, "target_positions": 85}  # XLNet's num_predict
    with pytest.raises(ConfigError, match="plm_k=200"):
        plm.task_lengths(128, 200)


def test_contiguous_rows_layout():
    examples = tf.data.Dataset.range(100).map(lambda i: {"x": tf.fill([2], tf.cast(i, tf.int32))})
    batches = [b["x"][:, 0] for b in streams.contiguous_rows(examples, rows=2, window=3).take(5).as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(batches), [[0, 3], [1, 4], [2, 5], [6, 9], [7, 10]])


def test_rows_continue_their_own_stream(data_config):
    """Through the real pipeline (embedded corpus): with 2 rows and windows of 3 steps, row r at step t is the example
    the one-row stream has at (t // 3) * 6 + 3 r + t % 3 — tokens and factorization orders alike."""
    data_config.objective, data_config.inputs_length, data_config.stream_window = "plm", 64, 1
    single = pipeline.make_dataset(data_config, split="train", rows=1, shuffle=True, shard=0, shards=1)
    stream = [{k: v[0] for k, v in b.items()} for b in single.take(12).as_numpy_iterator()]
    data_config.stream_window = 3
    rows = pipeline.make_dataset(data_config, split="train", rows=2, shuffle=True, shard=0, shards=1)
    for t, batch in enumerate(rows.take(6).as_numpy_iterator()):
        for r in range(2):
            expected = stream[(t // 3) * 6 + 3 * r + t % 3]
            for name in ("encoder_input_tokens", "encoder_perm_rank", "encoder_target_positions"):
                np.testing.assert_array_equal(batch[name][r], expected[name])
    # Consecutive examples are consecutive text: the one-row stream is the document stream cut into chunks.
    assert all(len(ex["encoder_input_tokens"]) == 64 and (ex["encoder_input_tokens"] != 0).all() for ex in stream)
