"""The seqio Task path the training pipeline takes: register -> get_dataset -> packed feature converter."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from lmx.data import tasks, vocab

MODEL_FEATURES = {
    "encoder_input_tokens",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_target_tokens",
    "decoder_input_tokens",
    "decoder_segment_ids",
    "decoder_positions",
    "decoder_loss_weights",
}


@pytest.fixture(scope="module")
def embedded_vocab(tmp_path_factory):
    """A 1,000-piece vocabulary of the embedded corpus, trained once for this module."""
    from lmx import config_lib

    c = config_lib.base_config().data
    c.corpus = "embedded"
    return vocab.train_vocabulary(vocab.corpus_texts(c), str(tmp_path_factory.mktemp("vocab") / "v.model"), 1000)


@pytest.fixture
def data_config(data_config, embedded_vocab):
    data_config.vocab_path = embedded_vocab
    return data_config


def _dataset(data_config, split, shard, num_shards, shuffle=True, num_epochs=None, batch_size=4):
    """The pipeline of lmx.data.pipeline: register, get_dataset, feature converter, batch."""
    name = tasks.register_task(data_config)
    lengths = tasks.task_feature_lengths(data_config)
    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=lengths,
        split=split,
        shuffle=shuffle,
        seed=data_config.seed,
        shard_info=seqio.ShardInfo(shard, num_shards),
        num_epochs=num_epochs,
    )
    return tasks.feature_converter(data_config)(ds, lengths).batch(batch_size)


def _batches(data_config, split, shard, num_shards, shuffle=True, num_epochs=None, batch_size=4, count=3):
    ds = _dataset(data_config, split, shard, num_shards, shuffle, num_epochs, batch_size)
    return list(ds.take(count).as_numpy_iterator())


def test_packed_encoder_decoder_batches_from_the_embedded_corpus(data_config):
    batches = _batches(data_config, "train", shard=1, num_shards=2)
    assert tasks.register_task(data_config) == "embedded_span_corruption"
    vocab_size = 1100  # 1,000 pieces + 100 sentinels
    for batch in batches:
        assert set(batch) == MODEL_FEATURES
        for key, value in batch.items():
            assert value.dtype == np.int32
            assert value.shape == (4, 128 if key.startswith("encoder") else 32), key
        inputs, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
        assert inputs.max() < vocab_size and targets.max() < vocab_size
        # Span corruption fills the encoder exactly (kept tokens + sentinels + EOS = 128) and the decoder up to 29.
        assert (batch["encoder_segment_ids"] == 1).all() and (inputs[:, -1] == 1).all()
        assert ((targets != 0).sum(axis=1) == 29).all() and (targets[:, 28] == 1).all()
        for row_inputs, row_targets in zip(inputs, targets, strict=True):
            sentinels = row_inputs[row_inputs >= 1000].tolist()
            assert sentinels == list(range(1099, 1099 - len(sentinels), -1))
            assert row_targets[row_targets >= 1000].tolist() == sentinels and row_targets[0] == 1099
        # Teacher forcing: decoder inputs are the targets shifted right, starting from 0 (BOS = pad in T5).
        np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:29], targets[:, :28])
        assert (batch["decoder_input_tokens"][:, 0] == 0).all()
        np.testing.assert_array_equal(batch["decoder_loss_weights"], (targets != 0).astype(np.int32))


def test_same_seed_same_batches_and_shards_differ(data_config):
    data_config.pack = False  # packing is deterministic too, but slow to trace; the order is what is tested here
    first = _batches(data_config, "train", shard=0, num_shards=2, count=2)
    again = _batches(data_config, "train", shard=0, num_shards=2, count=2)
    other_shard = _batches(data_config, "train", shard=1, num_shards=2, count=2)
    for a, b, c in zip(first, again, other_shard, strict=True):
        np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])
        assert not np.array_equal(a["encoder_input_tokens"], c["encoder_input_tokens"])


def test_validation_split_ends_and_unpacked_rows_hold_one_example(data_config):
    data_config.pack = False
    data_config.inputs_length, data_config.targets_length = 512, 114
    batches = _batches(data_config, "validation", 0, 1, shuffle=False, num_epochs=1, batch_size=2, count=1000)
    assert 1 <= len(batches) < 1000
    batch = batches[0]
    assert set(batch) == {
        "encoder_input_tokens",
        "decoder_target_tokens",
        "decoder_input_tokens",
        "decoder_loss_weights",
    }
    assert batch["encoder_input_tokens"].shape == (2, 512) and batch["decoder_target_tokens"].shape == (2, 114)


def test_text_files_iterator_checkpoint_restores_the_exact_stream(data_config, shared_data, tmp_path):
    # lmx.data.pipeline checkpoints the tf.data iterator: every op of the source must be serializable.
    data_config.corpus = "text_files"
    data_config.text_files = str(shared_data / "pretrain" / "gutenberg" / "[cs]h*.txt")
    data_config.pack = False
    iterator = iter(_dataset(data_config, "train", 0, 2))
    for _ in range(3):
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "iterator"))
    expected = [next(iterator)["encoder_input_tokens"].numpy() for _ in range(2)]
    restored = iter(_dataset(data_config, "train", 0, 2))
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    for want in expected:
        np.testing.assert_array_equal(next(restored)["encoder_input_tokens"].numpy(), want)


def test_reregistering_replaces_the_task(data_config):
    tasks.register_task(data_config)
    data_config.noise_density = 0.1
    name = tasks.register_task(data_config)
    assert seqio.get_mixture_or_task(name).preprocessors[2].keywords["noise_density"] == 0.1


def test_unknown_objective_lists_the_known_ones(data_config):
    data_config.objective = "prefix_lm_typo"
    with pytest.raises(ValueError, match="prefix_lm_typo.*is unknown; choose one of.*span_corruption"):
        tasks.register_task(data_config)


def test_targets_length_too_short_for_span_corruption(data_config):
    data_config.inputs_length, data_config.targets_length = 512, 100
    with pytest.raises(ValueError, match=r"targets_length=100 .* 114 .*inputs_length=512.*targets_length=114"):
        tasks.register_task(data_config)


def test_more_spans_than_sentinels_is_refused(data_config):
    data_config.inputs_length, data_config.targets_length = 4096, 1024  # ~230 spans, but only 100 sentinels
    with pytest.raises(ValueError, match=r"up to 2\d\d spans.*extra_ids=100.*set extra_ids >= 2\d\d"):
        tasks.register_task(data_config)
    data_config.extra_ids = 300
    assert tasks.register_task(data_config) == "embedded_span_corruption"
