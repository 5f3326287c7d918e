"""Causal LM, full-sentence and prefix-LM examples on real text, through their feature converters."""

import numpy as np
import pretraining_text
import pytest
import seqio
import tensorflow as tf

from lmx.data import converters, language_modeling


@pytest.fixture(scope="module")
def docs(shared_data, t5_vocab):
    """Token lists of the documents of one book (~35K tokens)."""
    ds = pretraining_text.tokenized(pretraining_text.documents(shared_data, ["carroll-alice.txt"]), t5_vocab)
    return ds.cache()


def _lists(ds, key="targets"):
    return [ex[key].tolist() for ex in ds.as_numpy_iterator()]


def test_lm_chunks_the_stream_with_eos_between_documents(docs):
    chunks = _lists(language_modeling.lm(docs, {"targets": 64}, eos_id=1))
    stream = [t for doc in _lists(docs) for t in doc + [1]]
    assert sum(chunks, []) == stream
    assert {len(c) for c in chunks[:-1]} == {64} and 0 < len(chunks[-1]) <= 64
    assert sum(c.count(1) for c in chunks) == len(_lists(docs))  # one EOS per document


def test_lm_through_seqio_decoder_converter(docs):
    ds = language_modeling.lm(docs, {"targets": 64}, eos_id=1)
    rows = list(seqio.DecoderFeatureConverter(pack=True)(ds, {"targets": 64}).as_numpy_iterator())
    row = rows[0]
    assert set(row) == {
        "decoder_target_tokens",
        "decoder_input_tokens",
        "decoder_loss_weights",
        "decoder_segment_ids",
        "decoder_positions",
    }
    # Teacher forcing: inputs are the targets shifted right behind BOS = 0; every token carries loss.
    np.testing.assert_array_equal(row["decoder_input_tokens"][1:], row["decoder_target_tokens"][:-1])
    assert row["decoder_input_tokens"][0] == 0 and (row["decoder_loss_weights"] == 1).all()
    assert (row["decoder_segment_ids"] == 1).all() and (row["decoder_positions"] == np.arange(64)).all()


def test_full_sentences_layout(docs):
    special = pretraining_text.t5_objective_ids(seqio.PassThroughVocabulary(32100))
    examples = list(language_modeling.full_sentences(docs, {"targets": 64}, ids=special).as_numpy_iterator())
    for ex in examples[:-1]:
        assert len(ex["targets"]) == 64 and ex["targets"][0] == special.cls and ex["targets"][-1] == special.sep
        assert (ex["token_types"] == 0).all()
    # The chunks are the stream of documents, each followed by [SEP] (RoBERTa's separator between documents).
    stream = [t for doc in _lists(docs) for t in doc + [special.sep]]
    assert sum((ex["targets"][1:-1].tolist() for ex in examples), []) == stream


def _split(docs, seed, lengths, decoder_only=False):
    with seqio.utils.map_seed_manager(seed):
        return list(language_modeling.prefix_lm(docs, lengths, decoder_only=decoder_only).as_numpy_iterator())


def test_prefix_lm_splits_uniformly(docs):
    lengths = {"inputs": 64, "targets": 64}
    examples = _split(docs, 1, lengths)
    chunks = language_modeling.concatenate_and_split(docs, 64)
    # inputs + targets rebuild each chunk (a last chunk of one token is dropped); the split is uniform in [1, C - 1].
    assert [ex["inputs"].tolist() + ex["targets"].tolist() for ex in examples] == [
        c for c in _lists(chunks) if len(c) >= 2
    ]
    splits = np.array([len(ex["inputs"]) for ex in examples[:-1]])
    assert splits.min() >= 1 and splits.max() <= 63
    assert abs(splits.mean() - 32) < 2.5  # 550 draws: the mean's standard error is 0.8
    counts = np.bincount(splits, minlength=64)[1:]
    assert counts.max() < 5 * counts.mean()
    assert [len(ex["inputs"]) for ex in _split(docs, 1, lengths)] == [len(ex["inputs"]) for ex in examples]
    assert [len(ex["inputs"]) for ex in _split(docs, 2, lengths)] != [len(ex["inputs"]) for ex in examples]


def test_prefix_lm_encoder_decoder_features(docs, t5_vocab):
    lengths = {"inputs": 32, "targets": 32}
    with seqio.utils.map_seed_manager(4):
        ds = language_modeling.prefix_lm(docs, lengths)
        ds = seqio.preprocessors.append_eos_after_trim(ds, pretraining_text.features(t5_vocab), lengths)
    for ex in ds.take(50).as_numpy_iterator():
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
        assert len(ex["inputs"]) + len(ex["targets"]) == 32 + 2  # the whole chunk, an EOS on each part
    row = next(seqio.EncDecFeatureConverter(pack=False)(ds, lengths).as_numpy_iterator())
    assert row["encoder_input_tokens"].shape == row["decoder_target_tokens"].shape == (32,)


def _attention(row):
    """[L, L] bool: who may attend to whom in a packed prefix-LM row (t5x's rule for decoder_causal_attention)."""
    seg, bidir = row["decoder_segment_ids"], row["decoder_causal_attention"].astype(bool)
    q, k = np.arange(len(seg))[:, None], np.arange(len(seg))[None, :]
    same = (seg[:, None] == seg[None, :]) & (seg[:, None] > 0)
    return same & ((k <= q) | (bidir[:, None] & bidir[None, :]))


def test_prefix_lm_decoder_only_attention_and_loss(docs, t5_vocab):
    length = 48
    lengths = converters.prefix_lm_decoder_task_lengths(length)
    with seqio.utils.map_seed_manager(6):
        ds = language_modeling.prefix_lm(docs, lengths, decoder_only=True)
        examples = list(
            seqio.preprocessors.append_eos_after_trim(ds, pretraining_text.features(t5_vocab), lengths)
            .take(40)
            .as_numpy_iterator()
        )
    source = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in ("inputs", "targets")},
    )
    rows = list(converters.PrefixLMDecoderFeatureConverter(pack=True)(source, lengths).as_numpy_iterator())
    assert {len(v) for row in rows for v in row.values()} == {length}  # one row of the decoder length
    packed = iter(examples)
    for row in rows:
        mask = _attention(row)
        for segment in range(1, row["decoder_segment_ids"].max() + 1):
            ex = next(packed)
            where = np.flatnonzero(row["decoder_segment_ids"] == segment)
            prefix, rest = len(ex["inputs"]), len(ex["targets"])
            assert len(where) == prefix + rest and (row["decoder_positions"][where] == np.arange(len(where))).all()
            np.testing.assert_array_equal(
                row["decoder_target_tokens"][where], np.concatenate([ex["inputs"], ex["targets"]])
            )
            # Bidirectional over BOS + prefix (prefix + 1 decoder inputs), causal after; loss on the continuation.
            bidir = where[: prefix + 1]
            assert mask[np.ix_(bidir, bidir)].all()
            for q in where[prefix + 1 :]:
                assert (mask[q, where] == (where <= q)).all()
            np.testing.assert_array_equal(row["decoder_loss_weights"][where], np.arange(len(where)) >= prefix)
            # No position that carries loss sees the decoder input holding its own target (the next position).
            for q in where[row["decoder_loss_weights"][where] > 0]:
                assert not mask[q, q + 1 :].any()
        # Never across segments, never from or to padding.
        seg = row["decoder_segment_ids"]
        assert not (mask & (seg[:, None] != seg[None, :])).any() and not mask[seg == 0].any()
    assert sum(row["decoder_segment_ids"].max() for row in rows) == 40
    # Unpacked: one example per row, the same masks.
    rows = list(converters.PrefixLMDecoderFeatureConverter(pack=False)(source, lengths).as_numpy_iterator())
    assert len(rows) == 40 and {len(v) for row in rows for v in row.values()} == {length}
    for row, ex in zip(rows, examples, strict=True):
        prefix, total = len(ex["inputs"]), len(ex["inputs"]) + len(ex["targets"])
        np.testing.assert_array_equal(row["decoder_causal_attention"], np.arange(length) <= prefix)
        np.testing.assert_array_equal(
            row["decoder_loss_weights"], (np.arange(length) >= prefix) & (np.arange(length) < total)
        )


def test_prefix_lm_lengths_are_checked():
    assert language_modeling.prefix_lm_chunk_length({"inputs": 512, "targets": 114}, decoder_only=False) == 114
    assert language_modeling.prefix_lm_chunk_length({"inputs": 512, "targets": 512}, decoder_only=True) == 510
    with pytest.raises(ValueError, match="at least 2 tokens"):
        language_modeling.prefix_lm_chunk_length({"inputs": 3, "targets": 3}, decoder_only=True)
