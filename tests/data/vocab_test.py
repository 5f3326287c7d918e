"""SentencePiece vocabularies: T5 special ids, sentinels, determinism, atomic writes, caching and errors."""

import os

import pytest
import seqio

from lmx.data import vocab


@pytest.fixture(scope="module")
def embedded_texts():
    from lmx import config_lib

    c = config_lib.base_config().data
    c.corpus = "embedded"
    return list(vocab.corpus_texts(c))


@pytest.fixture(scope="module")
def trained(embedded_texts, tmp_path_factory):
    return vocab.train_vocabulary(embedded_texts, str(tmp_path_factory.mktemp("vocab") / "v.model"), num_pieces=1000)


def test_trained_vocabulary_has_t5_special_ids_and_sentinels_on_top(trained):
    v = seqio.SentencePieceVocabulary(trained, extra_ids=100)
    assert (v.pad_id, v.eos_id, v.unk_id, v.tokenizer.bos_id()) == (0, 1, 2, -1)
    assert [v.tokenizer.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert v.vocab_size == 1100
    assert v.tokenizer.id_to_piece(1099) == "▁<extra_id_0>"  # sentinel i is vocab_size - 1 - i
    assert v.tokenizer.id_to_piece(1000) == "▁<extra_id_99>"
    text = "The quick brown fox: naïve café, 日本語 ✓"  # rare characters fall back to bytes: no unk, lossless
    ids = v.encode(text)
    assert v.unk_id not in ids and max(ids) < 1000
    assert v.decode(ids) == text


def test_training_is_deterministic_and_atomic(embedded_texts, trained, tmp_path, monkeypatch):
    again = vocab.train_vocabulary(embedded_texts, str(tmp_path / "again.model"), num_pieces=1000)
    with open(trained, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()
    assert os.listdir(tmp_path) == ["again.model"]  # no temporary file left behind

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(vocab.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        vocab.train_vocabulary(embedded_texts, str(tmp_path / "crashed.model"), num_pieces=1000)
    assert os.listdir(tmp_path) == ["again.model"]  # neither a partial model nor a temporary file


def test_get_vocabulary_trains_once_then_reuses_the_cache(data_config, cache_dir, monkeypatch):
    calls = []
    train = vocab.train_vocabulary
    monkeypatch.setattr(vocab, "train_vocabulary", lambda *a, **k: calls.append(a[1]) or train(*a, **k))
    first = vocab.get_vocabulary(data_config)
    second = vocab.get_vocabulary(data_config)
    path = vocab.cached_vocab_path(data_config)
    assert calls == [path] and path.startswith(str(cache_dir))
    assert first.vocab_size == second.vocab_size == 1100
    assert first.encode("def f(x): return x") == second.encode("def f(x): return x")


def test_cache_key_includes_corpus_files_and_size(data_config):
    paths = {vocab.cached_vocab_path(data_config)}
    data_config.vocab_pieces = 2000
    paths.add(vocab.cached_vocab_path(data_config))
    data_config.corpus = "text_files"
    for pattern in ("a/*.txt", "b/*.txt"):
        data_config.text_files = pattern
        paths.add(vocab.cached_vocab_path(data_config))
    assert len(paths) == 4


def test_missing_vocab_path_is_a_clear_error(data_config, tmp_path):
    data_config.vocab_path = str(tmp_path / "nope.model")
    with pytest.raises(FileNotFoundError, match=r"nope\.model.*python -m lmx\.data\.vocab.*vocab_path=''"):
        vocab.get_vocabulary(data_config)


def test_t5_vocabulary_through_seqio(shared_data, data_config):
    data_config.vocab_path = str(shared_data / "spm" / "t5_spiece.model")
    v = vocab.get_vocabulary(data_config)
    ids = v.encode("translate English to German: The house is wonderful.")
    assert ids == [13959, 1566, 12, 2968, 10, 37, 629, 19, 1627, 5]
    assert v.vocab_size == 32100 and v.tokenizer.id_to_piece(32099) == "▁<extra_id_0>"


def test_cli_trains_a_vocabulary(tmp_path, shared_data):
    out = tmp_path / "books.model"
    books = str(shared_data / "pretrain" / "gutenberg" / "carroll-*.txt")
    vocab.main(["--corpus=text_files", f"--text_files={books}", "--pieces=800", f"--out={out}"])
    v = seqio.SentencePieceVocabulary(str(out), extra_ids=100)
    assert v.vocab_size == 900
    assert v.decode(v.encode("Alice was beginning to get very tired")) == "Alice was beginning to get very tired"


def test_too_many_pieces_for_the_corpus_gives_fewer_rather_than_failing(embedded_texts, tmp_path):
    path = vocab.train_vocabulary(embedded_texts, str(tmp_path / "big.model"), num_pieces=32000)
    size = seqio.SentencePieceVocabulary(path, extra_ids=0).vocab_size
    assert 2000 < size < 32000  # the embedded corpus supports ~4,500 pieces
