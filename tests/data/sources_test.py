"""Text sources: the embedded corpus, local text files, TFDS corpora (mocked, offline) and the held-out split."""

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from lmx.data import sources


def _texts(source, split, **kwargs):
    return [ex["text"].decode() for ex in source.get_dataset(split=split, **kwargs).as_numpy_iterator()]


def _documents(text: str) -> list[str]:
    return [doc.decode() for doc in sources.text_documents(tf.constant(text)).numpy()]


def test_text_documents_join_wrapped_lines_and_group_paragraphs():
    prose = "It was the best\nof times, it was\nthe worst of times.\r\n\n  \nA second\nparagraph.\n"
    assert _documents(prose) == ["It was the best of times, it was the worst of times.\nA second paragraph."]
    code = "\nExample:\n\n   def f(x):  \n       return x\n\n\n"
    assert _documents(code) == ["Example:\n   def f(x):\n       return x"]
    assert _documents("") == [] and _documents("\n \n") == []
    # Paragraphs starting in the same 1,000-byte window (offsets counted over the paragraphs alone) form a document.
    paragraphs = [f"Paragraph {i}: " + "word " * (20 * (i % 7)) + "end." for i in range(30)]
    starts = [sum(len(p) for p in paragraphs[:i]) for i in range(len(paragraphs))]
    expected = {}
    for paragraph, start in zip(paragraphs, starts, strict=True):
        expected.setdefault(start // 1000, []).append(paragraph)
    assert _documents("\n\n".join(paragraphs)) == ["\n".join(group) for group in expected.values()]
    assert len(expected) > 3


def test_embedded_corpus_splits_are_disjoint_and_stable(data_config):
    source = sources.get_source(data_config)
    train, validation = _texts(source, "train", shuffle=False), _texts(source, "validation", shuffle=False)
    assert len(train) > 300 and sum(map(len, train)) > 400_000
    assert 0.01 < len(validation) / (len(train) + len(validation)) < 0.1
    assert not set(train) & set(validation)
    assert _texts(sources.get_source(data_config), "validation", shuffle=False) == validation
    shuffled = _texts(source, "train", shuffle=True, seed=3)
    assert shuffled != train and sorted(shuffled) == sorted(train)
    assert _texts(source, "train", shuffle=True, seed=3) == shuffled


def test_text_files_make_paragraph_documents(data_config, shared_data):
    data_config.corpus = "text_files"
    data_config.text_files = str(shared_data / "pretrain" / "gutenberg" / "*.txt")
    validation = _texts(sources.get_source(data_config), "validation", shuffle=False)
    assert len(validation) > 300
    assert any("Alice" in doc for doc in validation) and any("Ahab" in doc for doc in validation)
    # Documents are whole paragraphs: wrapped lines joined, so lines are far longer than the books' ~70 columns.
    lines = [line for doc in validation for line in doc.split("\n")]
    assert sum(map(len, lines)) / len(lines) > 150


def test_text_files_splits_are_disjoint(data_config, shared_data):
    data_config.corpus = "text_files"
    data_config.text_files = str(shared_data / "pretrain" / "gutenberg" / "[cs]h*.txt")  # Chesterton, Shakespeare
    source = sources.get_source(data_config)
    train, validation = _texts(source, "train", shuffle=False), _texts(source, "validation", shuffle=False)
    assert validation and not set(train) & set(validation)
    shuffled = _texts(source, "train", shuffle=True, seed=0)
    assert shuffled != train and sorted(shuffled) == sorted(train)


def test_text_files_errors_name_the_glob(data_config, tmp_path):
    data_config.corpus = "text_files"
    data_config.text_files = str(tmp_path / "missing" / "*.txt")
    with pytest.raises(ValueError, match=r"missing/\*\.txt.* matches no files.*data\.text_files"):
        sources.get_source(data_config)
    (tmp_path / "empty.txt").write_text("")
    data_config.text_files = str(tmp_path / "*.txt")
    with pytest.raises(ValueError, match=r"matches only empty files"):
        sources.get_source(data_config)


def test_unknown_corpus_lists_the_known_ones(data_config):
    data_config.corpus = "bookcorpus"
    with pytest.raises(ValueError, match="embedded, text_files, c4, wikipedia"):
        sources.get_source(data_config)


def test_eval_fraction_must_be_a_fraction(data_config):
    data_config.eval_fraction = 0.0
    with pytest.raises(ValueError, match="eval_fraction"):
        sources.get_source(data_config)


@pytest.mark.parametrize("corpus", ["c4", "wikipedia"])
def test_tfds_corpora_load_through_seqio(data_config, corpus):
    data_config.corpus = corpus
    with tfds.testing.mock_data(num_examples=5):
        source = sources.get_source(data_config)
        for split in ("train", "validation"):
            texts = _texts(source, split, shuffle=False)
            assert len(texts) == 5 and all(isinstance(t, str) for t in texts)


@pytest.mark.parametrize("eval_fraction", [0.05, 0.005])
def test_wikipedia_holds_out_the_tail_of_train(data_config, eval_fraction, monkeypatch):
    data_config.corpus = "wikipedia"
    data_config.eval_fraction = eval_fraction
    made = []
    monkeypatch.setattr(
        sources, "PreparedTfdsDataSource", lambda name, data_dir, splits: made.append({"name": name, "splits": splits})
    )
    sources.get_source(data_config)
    split_map = made[0]["splits"]
    info = {"train": tfds.core.SplitInfo(name="train", shard_lengths=[100_000], num_bytes=0, filename_template=None)}
    (train,) = tfds.core.ReadInstruction.from_spec(split_map["train"]).to_absolute(info)
    (validation,) = tfds.core.ReadInstruction.from_spec(split_map["validation"]).to_absolute(info)
    assert (train.from_ or 0, train.to) == (0, round(100_000 * (1 - eval_fraction)))
    assert (validation.from_, validation.to) == (train.to, None)


def test_unprepared_tfds_dataset_is_one_clear_error_and_never_downloads(data_config, tmp_path):
    data_config.corpus = "c4"
    data_config.tfds_data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"c4/en:3.1.0 is not prepared in .*corpus=embedded\|text_files"):
        sources.get_source(data_config).get_dataset("train")
    assert not any(tmp_path.rglob("*.tfrecord*"))  # nothing was downloaded or generated
