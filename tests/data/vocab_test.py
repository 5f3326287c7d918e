"""Vocabularies of every kind: special ids, sentinels, training (deterministic, atomic), caching, the CLI, and the
one-line errors for files and corpora that cannot be a vocabulary. Parity with Hugging Face: tokenizer_parity_test."""

import os

import numpy as np
import pytest
import seqio

from lmx.data import special_tokens, vocab


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


def test_t5_special_ids(shared_data, data_config):
    data_config.vocab_path = str(shared_data / "spm" / "t5_spiece.model")
    v = vocab.get_vocabulary(data_config)
    special = vocab.special_ids(v)
    assert (special.pad, special.eos, special.unk, special.bos, special.cls, special.mask) == (
        0,
        1,
        2,
        None,
        None,
        None,
    )
    assert special.sentinels == tuple(range(32099, 31999, -1))  # <extra_id_0> is 32099
    assert (v.eos_id, v.unk_id, v.bos_id) == (1, 2, None)  # seqio's properties say the same
    # A config names a piece for a role the vocabulary lacks (here a sentinel: T5 has no [MASK])...
    data_config.special_tokens.mask = "▁<extra_id_99>"
    assert vocab.special_ids(vocab.get_vocabulary(data_config)).mask == 32000
    # ... and a name that is no piece of it is one error naming the field.
    data_config.special_tokens.mask = "[MASK]"
    with pytest.raises(ValueError, match=r"config.data.special_tokens.mask='\[MASK\]' is not a token of .*t5_spiece"):
        vocab.get_vocabulary(data_config)


def test_trained_sentencepiece_vocabularies_reserve_cls_and_mask(embedded_texts, tmp_path):
    for kind in ("unigram", "bpe"):
        path = vocab.train_vocabulary(embedded_texts, str(tmp_path / f"{kind}.model"), 1000, kind=kind)
        v = vocab.load_vocabulary(path, kind, extra_ids=10, lower_case=False, token_names={})
        special = vocab.special_ids(v)
        assert (special.pad, special.eos, special.unk, special.cls, special.mask) == (0, 1, 2, 3, 4)
        assert special.sentinels == tuple(range(1009, 999, -1)) and v.vocab_size == 1010
        assert [v.tokenizer.id_to_piece(i) for i in (3, 4)] == ["<cls>", "<mask>"]
        ids = v.encode("<cls> and <mask> in text are text")
        assert 3 not in ids and 4 not in ids  # control pieces: reserved ids, never produced from text
        # The seqio vocabulary of the same file says the same (special_ids of a plain seqio vocabulary).
        assert vocab.special_ids(seqio.SentencePieceVocabulary(path, extra_ids=10)) == special


def test_wordpiece_and_byte_bpe_special_ids_and_sentinels(embedded_texts, tmp_path, transformers):
    path = vocab.train_vocabulary(embedded_texts, str(tmp_path / "vocab.txt"), 800, kind="wordpiece")
    v = vocab.load_vocabulary(path, "wordpiece", extra_ids=3, lower_case=True, token_names={})
    assert vocab.special_ids(v) == special_tokens.SpecialIds(
        pad=0, eos=3, unk=1, bos=None, cls=2, mask=4, sentinels=(802, 801, 800)
    )
    # Pieces join into words; a sentinel reads as [UNK] (seqio's rule when there is an unk); decoding stops at eos.
    assert v.decode([2, *v.encode("Hello"), 802, 3, 7]) == "[CLS] hello [UNK] [SEP]"
    directory = vocab.train_vocabulary(embedded_texts, str(tmp_path / "bpe"), 600, kind="byte_bpe")
    assert sorted(os.listdir(directory)) == ["merges.txt", "vocab.json"]
    v = vocab.load_vocabulary(directory, "byte_bpe", extra_ids=2, lower_case=False, token_names={})
    assert vocab.special_ids(v) == special_tokens.SpecialIds(
        pad=0, eos=1, unk=None, bos=1, cls=2, mask=3, sentinels=(601, 600)
    )
    assert v.vocab_size == 602 and v.decode(v.encode("déjà vu 🙂")) == "déjà vu 🙂"


def test_gpt2_special_ids(shared_data, data_config):
    data_config.vocab_kind = "byte_bpe"
    data_config.vocab_path = str(shared_data / "tokenizers" / "gpt2" / "vocab.json")  # merges.txt beside it
    data_config.extra_ids = 0
    special = vocab.special_ids(vocab.get_vocabulary(data_config))
    # GPT-2 has no pad token: seqio's padding id 0 is also the token "!" there.
    assert special == special_tokens.SpecialIds(
        pad=0, eos=50256, unk=None, bos=50256, cls=None, mask=None, sentinels=()
    )


@pytest.mark.parametrize("kind", ["unigram", "bpe", "wordpiece", "byte_bpe"])
def test_get_vocabulary_trains_each_kind_once_and_caches_it(data_config, kind, transformers):
    data_config.vocab_kind = kind
    data_config.vocab_pieces = 700
    first = vocab.get_vocabulary(data_config)
    path = vocab.cached_vocab_path(data_config)
    stamp = os.stat(path).st_mtime_ns
    again = vocab.get_vocabulary(data_config)
    assert os.stat(path).st_mtime_ns == stamp  # not trained again
    assert first.vocab_size == again.vocab_size == 700 + data_config.extra_ids
    text = "def f(x): return x  # naïve"
    assert first.encode(text) == again.encode(text) and len(first.encode(text)) < len(text)


@pytest.mark.parametrize("kind", ["wordpiece", "byte_bpe"])
def test_hugging_face_trainers_are_deterministic(embedded_texts, tmp_path, kind, transformers):
    paths = [vocab.train_vocabulary(embedded_texts, str(tmp_path / f"{kind}{i}"), 900, kind=kind) for i in range(2)]
    if kind == "byte_bpe":  # directories
        paths = [os.path.join(p, name) for name in ("vocab.json", "merges.txt") for p in paths]
    contents = [open(p, "rb").read() for p in paths]
    assert contents[0::2] == contents[1::2]


def test_vocab_kind_must_match_the_file(shared_data, data_config):
    data_config.vocab_path = str(shared_data / "spm" / "test_sentencepiece_1k_bpe.model")
    with pytest.raises(ValueError, match=r"_1k_bpe.model is a SentencePiece bpe model but config.data.vocab_kind="):
        vocab.get_vocabulary(data_config)
    data_config.vocab_kind = "bpe"
    assert vocab.special_ids(vocab.get_vocabulary(data_config)).unk == 0  # this model's own ids: unk 0, eos 2
    data_config.vocab_kind = "wordpiece"
    with pytest.raises(ValueError, match=r"_1k_bpe.model is not a WordPiece vocab.txt: byte \d+ is not UTF-8"):
        vocab.get_vocabulary(data_config)


# Issue 9's rows: a file that is not a vocabulary and a corpus that is not text are one ValueError (lmx.train turns
# it into one line `lmx.train: error: ...` and exit 2) naming the path and what was expected; nothing is written.


PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("unigram", r"passwd is not a SentencePiece model .*expected a SentencePiece unigram .model file"),
        ("bpe", r"passwd is not a SentencePiece model .*expected a SentencePiece bpe .model file"),
        ("wordpiece", r"passwd has no eos token \('\[SEP\]' by the wordpiece convention\); expected a wordpiece"),
        ("byte_bpe", r"passwd is not a BPE vocab.json; expected a JSON object mapping each token to its id"),
    ],
)
def test_a_file_that_is_not_a_vocabulary_is_one_error(data_config, tmp_path, cache_dir, kind, expected):
    path = tmp_path / "passwd"  # what --config.data.vocab_path=/etc/passwd points at, on every machine
    path.write_text(PASSWD)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    data_config.vocab_kind, data_config.vocab_path = kind, str(path)
    with pytest.raises(ValueError, match=expected) as error:
        vocab.get_vocabulary(data_config)
    assert isinstance(error.value, vocab.VocabularyError) and "\n" not in str(error.value)
    assert not os.listdir(cache_dir)


def test_etc_passwd_as_vocabulary(data_config):
    if not os.path.exists("/etc/passwd"):
        pytest.skip("no /etc/passwd here; test_a_file_that_is_not_a_vocabulary_is_one_error covers the same")
    data_config.vocab_path = "/etc/passwd"
    with pytest.raises(vocab.VocabularyError, match=r"^config.data.vocab_path='/etc/passwd': /etc/passwd is not a Sen"):
        vocab.get_vocabulary(data_config)


def test_text_files_of_random_bytes_are_one_error(data_config, tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_bytes(rng.integers(0, 256, 50_000, dtype="uint8").tobytes())
    data_config.corpus, data_config.text_files = "text_files", str(tmp_path / "*.txt")
    with pytest.raises(
        vocab.VocabularyError,
        match=r"config.data.text_files='.*\*.txt' matches files that are not UTF-8 text: .*part0.txt \(and 2 more "
        r"files\) has \d+% undecodable bytes or control characters at its start; expected UTF-8 text files",
    ):
        vocab.get_vocabulary(data_config)
    assert not os.listdir(cache_dir)


def test_a_corpus_that_is_not_text_is_one_error_whatever_its_source(tmp_path):
    noise = ["".join(chr(c) for c in range(0x20, 0x7F)) + "\ufffd\x00\x01" * 20] * 10
    with pytest.raises(vocab.VocabularyError, match=r"^config.data.corpus='x' is not UTF-8 text: \d+% of the"):
        vocab.train_vocabulary(noise, str(tmp_path / "v.model"), 100, source="config.data.corpus='x'")
    # SentencePiece's own refusals (here: far more distinct characters than pieces) are one line too.
    many_chars = ["".join(chr(c) for c in range(0x4E00 + i * 500, 0x4E00 + i * 500 + 500)) for i in range(8)]
    with pytest.raises(vocab.VocabularyError, match=r"SentencePiece cannot train a 100-piece unigram vocabulary"):
        vocab.train_vocabulary(many_chars, str(tmp_path / "v.model"), 100)
    assert not os.listdir(tmp_path)


def test_cli_trains_each_kind_and_refuses_random_bytes(tmp_path, capsys, transformers):
    books = str(tmp_path / "book.txt")
    with open(books, "w") as f:
        f.write("Alice was beginning to get very tired of sitting by her sister on the bank.\n" * 200)
    vocab.main(
        ["--kind=byte_bpe", "--corpus=text_files", f"--text_files={books}", "--pieces=300", f"--out={tmp_path}/b"]
    )
    assert sorted(os.listdir(tmp_path / "b")) == ["merges.txt", "vocab.json"]
    vocab.main(
        [
            "--kind=wordpiece",
            "--corpus=text_files",
            f"--text_files={books}",
            "--pieces=200",
            "--no-lower_case",
            f"--out={tmp_path}/vocab.txt",
        ]
    )
    assert "Alice" in (tmp_path / "vocab.txt").read_text().split("\n")
    (tmp_path / "noise.txt").write_bytes(os.urandom(20_000))
    with pytest.raises(SystemExit) as exit_:
        vocab.main(["--corpus=text_files", f"--text_files={tmp_path}/noise.txt", "--pieces=300", f"--out={tmp_path}/n"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("lmx.data.vocab: error: config.data.text_files=") and "noise.txt" in err[0]
    )
    assert not os.path.exists(tmp_path / "n")
