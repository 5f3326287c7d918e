"""Span corruption against the T5 paper's description, on real text tokenized with the T5 vocabulary."""

import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from lmx.data import preprocessors, sources

INPUTS_LENGTH, TARGETS_LENGTH = 512, 114
BOOKS = ("austen-persuasion.txt", "carroll-alice.txt", "chesterton-ball.txt")


def _features(vocab):
    return {"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)}


def _tokenized(shared_data, vocab) -> tf.data.Dataset:
    """{"targets": tokens} documents of a few books (~300K T5 tokens)."""
    paths = [shared_data / "pretrain" / "gutenberg" / name for name in BOOKS]
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths]).flat_map(
        lambda path: tf.data.Dataset.from_tensor_slices(sources.text_documents(tf.io.read_file(path)))
    )
    ds = ds.map(lambda text: {"text": text})
    ds = seqio.preprocessors.rekey(ds, key_map={"targets": "text"})
    return seqio.preprocessors.tokenize(ds, _features(vocab), copy_pretokenized=False)


def _corrupt(tokenized, vocab, seed, inputs_length=INPUTS_LENGTH, targets_length=TARGETS_LENGTH):
    with seqio.utils.map_seed_manager(seed):
        ds = preprocessors.span_corruption(
            tokenized,
            sequence_length={"inputs": inputs_length, "targets": targets_length},
            output_features=_features(vocab),
            noise_density=0.15,
            mean_noise_span_length=3.0,
        )
    return [(ex["inputs"].tolist(), ex["targets"].tolist()) for ex in ds.as_numpy_iterator()]


def _segments(tokens, first_sentinel):
    """[(sentinel or None, tokens before the next sentinel)] of a sequence."""
    segments = [(None, [])]
    for t in tokens:
        if t >= first_sentinel:
            segments.append((t, []))
        else:
            segments[-1][1].append(t)
    return segments


def _part_pmf(total: int, parts: int, k: int) -> float:
    """P(a given part has length k) for a uniformly random composition of `total` into `parts` positive parts."""
    return math.comb(total - k - 1, parts - 2) / math.comb(total - 1, parts - 1)


@pytest.fixture(scope="module")
def corrupted(shared_data, t5_vocab):
    tokenized = _tokenized(shared_data, t5_vocab).cache()  # tokenize once for all the tests of this module
    raw_length, _ = preprocessors.span_corruption_lengths(INPUTS_LENGTH, 0.15, 3.0)
    chunks = [
        ex["targets"].tolist() for ex in preprocessors.concatenate_and_split(tokenized, raw_length).as_numpy_iterator()
    ]
    return tokenized, chunks, _corrupt(tokenized, t5_vocab, seed=7)


def test_span_corruption_lengths_match_t5_arithmetic():
    # T5 pretrains with 512 input tokens, 15% noise, mean span 3 (Raffel et al. 2020, 3.1.4), targets 114 tokens.
    # A raw chunk of 568 tokens: round(0.15 * 568) = round(85.2) = 85 noise tokens in round(85 / 3) = 28 spans.
    # Inputs keep 568 - 85 = 483 tokens, add 28 sentinels and EOS: 512. Targets: 85 + 28 sentinels + EOS = 114.
    assert 568 - 85 + 28 + 1 == 512 and 85 + 28 + 1 == 114
    # One more raw token (round(85.35) = 85 noise, still 28 spans) would make 513 inputs: 568 is the largest.
    assert 569 - 85 + 28 + 1 == 513
    assert preprocessors.span_corruption_lengths(512, 0.15, 3.0) == (568, 114)


@pytest.mark.parametrize("inputs_length", [16, 64, 128, 626, 1024, 2048])
def test_span_corruption_lengths_are_the_largest_that_fit(inputs_length):
    def inputs_of(raw):  # an independent count: half-to-even rounding like Python's round and tf.round
        noise = int(np.round(raw * 0.15))
        return raw - noise + max(int(np.round(noise / 3.0)), 1) + 1

    raw, targets = preprocessors.span_corruption_lengths(inputs_length, 0.15, 3.0)
    assert inputs_of(raw) <= inputs_length < inputs_of(raw + 1)
    noise = int(np.round(raw * 0.15))
    assert targets == noise + max(int(np.round(noise / 3.0)), 1) + 1


def test_random_segmentation_edges():
    seed = tf.constant([1, 2])
    assert preprocessors.random_segmentation(7, 1, seed).numpy().tolist() == [7]
    assert preprocessors.random_segmentation(7, 7, seed).numpy().tolist() == [1] * 7
    for s in range(20):
        parts = preprocessors.random_segmentation(50, 9, tf.constant([s, 0])).numpy()
        assert parts.sum() == 50 and parts.min() >= 1 and len(parts) == 9


def test_concatenate_and_split_keeps_every_token(corrupted, t5_vocab):
    tokenized, chunks, _ = corrupted
    stream = [t for ex in tokenized.as_numpy_iterator() for t in ex["targets"].tolist()]
    assert sum(chunks, []) == stream
    assert {len(c) for c in chunks[:-1]} == {568}


def test_merging_inputs_and_targets_restores_the_text(corrupted, t5_vocab):
    _, chunks, examples = corrupted
    first_sentinel = t5_vocab.vocab_size - 100  # 32000: ids above the pieces are sentinels
    assert len(examples) == len(chunks) > 400
    for chunk, (inputs, targets) in zip(chunks, examples, strict=True):
        spans = dict(_segments(targets, first_sentinel)[1:])
        merged = [t for token in inputs for t in (spans[token] if token >= first_sentinel else [token])]
        assert merged == chunk


def test_sentinels_count_down_from_the_top_in_order(corrupted, t5_vocab):
    _, chunks, examples = corrupted
    top = t5_vocab.vocab_size - 1  # 32099 = <extra_id_0>
    assert t5_vocab.tokenizer.id_to_piece(top) == "▁<extra_id_0>"
    for inputs, targets in examples:
        in_sentinels = [t for t in inputs if t >= top - 99]
        tgt_sentinels = [t for t in targets if t >= top - 99]
        assert in_sentinels == tgt_sentinels == list(range(top, top - len(in_sentinels), -1))
        assert targets[0] == top  # targets start with the first sentinel
        assert inputs[-1] >= top - 99  # spans alternate kept, noise, ..., so the chunk ends in a noise span
    # Full chunks fill the lengths exactly once EOS is appended.
    full = [ex for chunk, ex in zip(chunks, examples, strict=True) if len(chunk) == 568]
    assert {(len(i) + 1, len(t) + 1) for i, t in full} == {(INPUTS_LENGTH, TARGETS_LENGTH)}


def test_noise_statistics(corrupted, t5_vocab):
    _, chunks, examples = corrupted
    first_sentinel = t5_vocab.vocab_size - 100
    noise_spans, kept_spans, noise_at = [], [], []
    for chunk, (inputs, targets) in zip(chunks, examples, strict=True):
        noise = [len(span) for _, span in _segments(targets, first_sentinel)[1:]]
        kept = [len(span) for _, span in _segments(inputs, first_sentinel)[:-1]]
        assert min(noise) >= 1 and min(kept) >= 1 and sum(noise) + sum(kept) == len(chunk)
        noise_spans += noise
        kept_spans += kept
        if len(chunk) == 568:
            mask = np.concatenate([np.repeat([0, 1], [k, n]) for k, n in zip(kept, noise, strict=True)])
            noise_at.append(mask)
    total = sum(len(c) for c in chunks)
    assert abs(sum(noise_spans) / total - 0.15) < 0.005
    assert abs(np.mean(noise_spans) - 3.0) < 0.1
    # Span lengths follow a uniformly random composition of 85 noise (483 kept) tokens into 28 spans.
    for spans, total_tokens in ((noise_spans, 85), (kept_spans, 483)):
        for k in (1, 2, 3):
            observed = np.mean(np.asarray(spans) == k)
            assert abs(observed - _part_pmf(total_tokens, 28, k)) < 0.02, (total_tokens, k)
    # Noise is spread evenly along the chunk (away from the fixed kept start and noise end).
    rate = np.mean(noise_at, axis=0)
    for quarter in np.array_split(rate[10:-10], 4):
        assert abs(quarter.mean() - 0.15) < 0.02


def test_same_seed_same_output_other_seed_other_output(corrupted, t5_vocab):
    tokenized, _, examples = corrupted
    again = _corrupt(tokenized, t5_vocab, seed=7)
    other = _corrupt(tokenized, t5_vocab, seed=8)
    assert again == examples
    assert len(other) == len(examples)
    # Every full chunk is masked differently (the short last chunk has one span: its mask is not random).
    assert all(a != o for a, o in zip(again[:-1], other[:-1], strict=True))


def test_short_targets_length_is_refused(shared_data, t5_vocab):
    tokenized = _tokenized(shared_data, t5_vocab).take(2)
    with pytest.raises(ValueError, match=r"targets_length=100 .* 114 .*inputs_length=512.*targets_length=114"):
        _corrupt(tokenized, t5_vocab, seed=1, targets_length=100)
