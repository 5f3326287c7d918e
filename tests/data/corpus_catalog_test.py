"""The corpus catalog: TFDS lm1b (mocked, offline), BookCorpus-style local books held out by book, and seqio
mixtures of `<corpus>_<objective>` tasks at configured rates (checked on thousands of examples)."""

import collections

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from lmx import config_lib
from lmx.config_lib import ConfigError
from lmx.data import pipeline, sources, tasks, vocab


def _texts(source, split, **kwargs):
    return [ex["text"].decode() for ex in source.get_dataset(split=split, **kwargs).as_numpy_iterator()]


def test_lm1b_loads_through_seqio(data_config):
    data_config.corpus = "lm1b"
    with tfds.testing.mock_data(num_examples=7):
        source = sources.get_source(data_config)
        assert source.tfds_dataset.name == "lm1b:1.1.0" and tuple(source.splits) == ("train", "validation")
        for split in ("train", "validation"):
            texts = _texts(source, split, shuffle=False)
            assert len(texts) == 7 and all(isinstance(t, str) for t in texts)


def test_lm1b_validates_on_its_test_split(data_config, monkeypatch):
    data_config.corpus = "lm1b"
    made = []
    monkeypatch.setattr(sources, "PreparedTfdsDataSource", lambda name, data_dir, splits: made.append(splits))
    sources.get_source(data_config)
    assert made == [{"train": "train", "validation": "test"}]


def _write_books(directory, count=6, paragraphs=100):
    """Books whose every sentence names its book, one paragraph per blank-line block, lines hard-wrapped."""
    for b in range(count):
        text = "\n\n".join(
            "\n".join(f"Book{b} paragraph {p} line {i} says something." for i in range(4)) for p in range(paragraphs)
        )
        (directory / f"book_{b}.txt").write_text(text)
    return str(directory / "*.txt")


def test_books_hold_out_whole_books(data_config, tmp_path):
    data_config.corpus = "books"
    data_config.text_files = _write_books(tmp_path)
    data_config.eval_fraction = 0.3  # 2 of 6 books
    source = sources.get_source(data_config)
    train, validation = _texts(source, "train", shuffle=False), _texts(source, "validation", shuffle=False)

    def books(documents):
        return {word for doc in documents for word in doc.split() if word.startswith("Book")}

    assert len(books(validation)) == 2 and len(books(train)) == 4 and not books(train) & books(validation)
    # Wrapped lines joined into paragraphs (one per line), paragraphs gathered into documents of ~10,000 bytes: a
    # book of ~16,500 bytes makes two.
    assert all(line.count(" says something.") == 4 for doc in train for line in doc.split("\n"))
    assert len(train) == 8 and 8000 < max(len(doc) for doc in train) < 11000
    shuffled = _texts(source, "train", shuffle=True, seed=1)
    assert sorted(shuffled) == sorted(train) and shuffled != train
    # The split depends on the books' names only: the same books are held out from another directory.
    _, held = sources.held_out_books([f"/elsewhere/book_{b}.txt" for b in range(6)], 0.3)
    assert sorted(f"Book{f[-5]}" for f in held) == sorted(books(validation))


def test_books_need_two_books(data_config, tmp_path):
    data_config.corpus = "books"
    data_config.text_files = _write_books(tmp_path, count=1)
    with pytest.raises(ValueError, match=r"matches 1 book; corpus 'books' holds out whole books"):
        sources.get_source(data_config)


@pytest.fixture
def two_corpora(monkeypatch):
    """Two registered corpora of disjoint letters: "alpha_text" (a-f) and "omega_text" (u-z)."""

    def corpus(words):
        def source(data_config):
            def dataset_fn(split, shuffle_files, seed=None):
                del shuffle_files, seed
                docs = [" ".join(words[i % 3 :] + words[: i % 3]) * 20 for i in range(50 if split == "train" else 5)]
                return tf.data.Dataset.from_tensor_slices({"text": docs})

            return seqio.FunctionDataSource(dataset_fn, splits=("train", "validation"))

        return source

    monkeypatch.setitem(sources.SOURCES, "alpha_text", corpus(["bad", "cafe", "dab"]))
    monkeypatch.setitem(sources.SOURCES, "omega_text", corpus(["wuzzy", "vux", "yuz"]))


@pytest.fixture(scope="module")
def two_corpora_vocab(tmp_path_factory):
    """A vocabulary of the two corpora's letters."""
    path = str(tmp_path_factory.mktemp("vocab") / "v.model")
    return vocab.train_vocabulary(["bad cafe dab wuzzy vux yuz"] * 100, path, 300)


@pytest.fixture
def mixture_config(data_config, two_corpora, two_corpora_vocab):
    """The lm objective over a 3:1 mixture of the two corpora."""
    data_config.vocab_path = two_corpora_vocab
    data_config.objective, data_config.targets_length = "lm", 8
    data_config.mixture = (("alpha_text", 3.0), ("omega_text", 1))
    return data_config


def test_mixture_samples_tasks_at_their_rates(mixture_config):
    name = tasks.register_task(mixture_config)
    assert name == "mixture_alpha_text_omega_text_lm"
    assert sorted(t.name for t in seqio.get_mixture_or_task(name).tasks) == ["alpha_text_lm", "omega_text_lm"]
    vocabulary = vocab.get_vocabulary(mixture_config)
    dataset = pipeline.make_dataset(mixture_config, split="train", rows=50, shuffle=True, shard=0, shards=1)
    counts = collections.Counter()
    for batch in dataset.take(80).as_numpy_iterator():  # 4,000 rows of 8 tokens, each from one task
        for row in batch["decoder_target_tokens"]:
            letters = set(vocabulary.decode(row.tolist()))
            counts[("alpha" if letters & set("abcdef") else "") + ("omega" if letters & set("uvwxyz") else "")] += 1
    assert counts["alpha"] + counts["omega"] == 4000, counts  # every row from one task
    share = counts["alpha"] / (counts["alpha"] + counts["omega"])
    assert abs(share - 0.75) < 0.03, counts  # binomial standard deviation ~0.007


def test_mixture_keeps_encoder_features_and_its_iterator_resumes(mixture_config, tmp_path):
    mixture_config.objective, mixture_config.inputs_length = "mlm", 16

    def iterator():
        dataset = pipeline.make_dataset(mixture_config, split="train", rows=4, shuffle=True, shard=0, shards=1)
        return pipeline.DataIterator({0: dataset}, num_shards=1)

    first = iterator()
    batch = next(first)
    assert batch["encoder_loss_weights"].sum() > 0 and "encoder_token_types" in batch  # declared, so mixed too
    first.save(str(tmp_path))
    expected = [next(first) for _ in range(3)]
    resumed = iterator()
    resumed.restore(str(tmp_path))  # the mixture's task choices resume too
    for want, got in zip(expected, (next(resumed) for _ in range(3)), strict=True):
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_array_equal(want[name], got[name])


@pytest.mark.parametrize(
    "mixture, match",
    [
        ((("alpha_text", 1.0), ("no_such_corpus", 1.0)), r"names unknown 'no_such_corpus'; choose from"),
        ((("alpha_text", 0.0),), r"gives 'alpha_text' the rate 0.0; rates must be positive"),
        ((("alpha_text", -2),), r"rate -2; rates must be positive"),
        ((("alpha_text", 1.0), ("alpha_text", 2.0)), r"names 'alpha_text' twice"),
        (("alpha_text",), r"holds 'alpha_text'; it must be a tuple of \(name, rate > 0\) pairs"),
    ],
)
def test_bad_mixtures_are_one_line_config_errors(data_config, two_corpora, mixture, match):
    data_config.mixture = mixture
    with pytest.raises(ConfigError, match=r"config.data.mixture=.* " + match) as error:
        tasks.register_task(data_config)
    assert "\n" not in str(error.value)
    config = config_lib.base_config()
    config.data.mixture = mixture
    with pytest.raises(ConfigError, match=match):
        config_lib.check_fields(config)
