"""Each vocabulary kind gives Hugging Face's (and SentencePiece's) ids on a paragraph of every file of
../shared/data/pretrain and on strings with accents, emoji, tabs and runs of spaces; the TF path (encode_tf, run
in tf.data as the pipeline runs it) gives the Python path's ids; decoding inverts encoding where nothing is lost."""

import os
import random
import re
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from lmx.data import byte_bpe, vocab, wordpiece

TRICKY = [
    "naïve café résumé Ångström STRASSE straße İstanbul ΟΔΥΣΣΕΥΣ",
    "emoji 😀🎉 👩\u200d👩\u200d👧 ok🥰",
    "tabs\there\t\tand  runs   of    spaces\t",
    "  leading and trailing  ",
    "lines\n\n\nand a  'tis\t\t x don't I'll we'RE",
    "日本語のテキスト, 中文 ½ ① Ⅷ 123 4567",
    "ﬁ ligature Ｆｕｌｌ ǅ \u00a0nbsp\u2003em\u3000ideographic",
    "zero\u200bwidth soft\u00adhyphen \x00nul \x07bell \ufffd",
    "----======........ https://example.com/a_b?c=d#e",
    "x" * 120 + " " + "é" * 101,
    "",
    " ",
]


@pytest.fixture(scope="module")
def texts(shared_data):
    """TRICKY, then the middle paragraph (of 100+ characters) of every file of ../shared/data/pretrain, raw, cut to
    its first 1,500 characters (some files have no blank lines: their "paragraph" is the whole file)."""
    paragraphs = []
    for path in sorted((shared_data / "pretrain").glob("*/*.txt")):
        blocks = [b for b in re.split(r"\n[ \t]*\n", path.read_text(encoding="utf-8")) if len(b.strip()) >= 100]
        paragraphs.append(blocks[len(blocks) // 2][:1500])
    assert len(paragraphs) >= 140
    return TRICKY + paragraphs


def tf_ids(vocabulary, texts):
    """encode_tf of each text, mapped over a tf.data dataset as seqio's tokenize step does."""
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string)).map(vocabulary.encode_tf)
    return [ids.tolist() for ids in dataset.as_numpy_iterator()]


def assert_same_ids(name, texts, expected, python, tf_path):
    for text, e, p, t in zip(texts, expected, python, tf_path, strict=True):
        assert p == e, f"{name}: the Python path differs from the reference on {text[:60]!r}"
        assert t == e, f"{name}: the TF path differs from the reference on {text[:60]!r}"


def test_byte_bpe_gives_gpt2_ids(shared_data, transformers, texts):
    directory = str(shared_data / "tokenizers" / "gpt2")
    v = vocab.load_vocabulary(directory, "byte_bpe", extra_ids=0, lower_case=False, token_names={})
    hf = transformers.GPT2TokenizerFast.from_pretrained(directory)
    # Special tokens written in text are text to lmx; HF's split_special_tokens=True reads them the same way.
    expected = [hf(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] for t in texts]
    assert_same_ids("byte_bpe", texts, expected, [v.encode(t) for t in texts], tf_ids(v, texts))
    assert v.encode("Hello world") == [15496, 995]  # from GPT-2's own tokenizer (../shared/data/README.md)
    assert sum(len(ids) for ids in expected) > 20_000  # the paragraphs are real work, not a handful of tokens
    for text, ids in zip(texts, expected, strict=True):  # lossless: bytes in, bytes out
        assert v.decode(ids) == text == hf.decode(ids)
    # seqio's decode_tf: through the first eos (the padding after it is id 0, GPT-2's "!", and must not show).
    rows = tf.ragged.constant([ids + [v.eos_id] for ids in expected]).to_tensor(default_value=0)
    assert [d.decode("utf-8") for d in v.decode_tf(rows).numpy()] == [t + "<|endoftext|>" for t in texts]


def test_byte_bpe_encodes_any_bytes(shared_data):
    v = vocab.load_vocabulary(str(shared_data / "tokenizers" / "gpt2"), "byte_bpe", 0, False, {})
    rng = np.random.default_rng(0)
    blobs = [rng.integers(0, 256, size=n, dtype=np.uint8).tobytes() for n in (1, 7, 300, 2000)]
    for blob, ids in zip(blobs, tf_ids(v, blobs), strict=True):  # invalid UTF-8 included: no unk, no loss
        assert v.bytes_of(ids) == blob
        assert v.decode_tf(tf.constant(ids)).numpy().decode("utf-8") == blob.decode("utf-8", errors="replace")


def test_gpt2_pretokenizer_agrees_with_hugging_face_on_random_strings(transformers):
    from tokenizers import pre_tokenizers

    reference = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    to_byte = {char: b for b, char in byte_bpe.byte_to_unicode().items()}
    pool = [*"aZé'stremvld 1½①Ⅷ٣ \x00\t\n\r\x0b\x0c\x85\xa0\u2003\u3000\u2028!?.-\"日😀\u0301\u200b_"]
    pool += ["'s", "'ll", "  "]
    rng = random.Random(0)
    strings = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 12))) for _ in range(1000)]
    lengths = tf.data.Dataset.from_tensor_slices(strings).map(byte_bpe._word_lengths).as_numpy_iterator()
    for s, tf_lengths in zip(strings, lengths, strict=True):
        expected = [len(bytes(to_byte[c] for c in word)) for word, _ in reference.pre_tokenize_str(s)]
        assert [len(w.encode()) for w in byte_bpe.pretokenize(s)] == expected, repr(s)
        assert tf_lengths.tolist() == expected, repr(s)


@pytest.fixture(scope="module")
def wordpiece_dir(transformers, shared_data, tmp_path_factory):
    """A 4,000-token uncased WordPiece vocab.txt trained by lmx on three books."""
    books = sorted((shared_data / "pretrain" / "gutenberg").glob("*.txt"))[:3]
    texts = [p.read_text(encoding="utf-8") for p in books]
    directory = tmp_path_factory.mktemp("wordpiece")
    vocab.train_vocabulary(texts, str(directory / "vocab.txt"), 4000, kind="wordpiece", lower_case=True)
    return directory


@pytest.mark.parametrize("lower_case", [True, False])
def test_wordpiece_gives_bert_ids(wordpiece_dir, transformers, texts, lower_case):
    from tokenizers import decoders

    v = vocab.load_vocabulary(str(wordpiece_dir), "wordpiece", extra_ids=0, lower_case=lower_case, token_names={})
    hf = transformers.BertTokenizerFast.from_pretrained(str(wordpiece_dir), do_lower_case=lower_case)
    expected = [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert_same_ids("wordpiece", texts, expected, [v.encode(t) for t in texts], tf_ids(v, texts))
    assert v.unk_id in expected[1] and len({i for ids in expected for i in ids}) > 1000
    # Decoding joins pieces; Hugging Face's decoder does the same without its punctuation clean-up.
    hf.backend_tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    assert [v.decode(ids) for ids in expected] == [hf.decode(ids) for ids in expected]
    rows = tf.ragged.constant([ids + [v.eos_id] for ids in expected]).to_tensor()  # padded with [PAD] after [SEP]
    assert [d.decode("utf-8") for d in v.decode_tf(rows).numpy()] == [v.decode(ids + [v.eos_id]) for ids in expected]


def test_wordpiece_classifies_characters_as_bert_does(transformers):
    """Steps 1-4 on every character of Latin, Greek, Cyrillic, punctuation, symbols, CJK, Hangul, fullwidth and
    emoji blocks, between two letters, against Hugging Face's BertNormalizer + BertPreTokenizer."""
    from tokenizers import normalizers, pre_tokenizers

    blocks = [(0x0, 0x52F), (0x2000, 0x22FF), (0x3000, 0x30FF), (0x4E00, 0x4EFF), (0xAC00, 0xAC7F), (0xF900, 0xF9FF)]
    blocks += [(0xFE30, 0xFFFF), (0x1F300, 0x1F64F)]
    texts = [f"a{chr(c)}B" for a, b in blocks for c in range(a, b + 1) if not 0xD800 <= c < 0xE000]
    for lower_case in (True, False):
        normalizer, splitter = normalizers.BertNormalizer(lowercase=lower_case), pre_tokenizers.BertPreTokenizer()
        expected = [[w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(t))] for t in texts]
        tf_words = wordpiece.split_words_tf(tf.constant(texts), lower_case).to_list()
        for text, e, t in zip(texts, expected, tf_words, strict=True):
            assert wordpiece.split_words(text, lower_case) == e, repr(text)
            assert [w.decode("utf-8") for w in t] == e, repr(text)


def _sentencepiece_models(shared_data, tmp_path_factory):
    models = {p.stem: str(p) for p in sorted((shared_data / "spm").glob("*.model"))}
    embedded = [p.read_text(encoding="utf-8") for p in sorted((shared_data / "pretrain" / "inaugural").glob("*"))[:20]]
    for kind in ("unigram", "bpe"):
        path = str(tmp_path_factory.mktemp(kind) / "v.model")
        models[f"lmx_{kind}"] = vocab.train_vocabulary(embedded, path, 1000, kind=kind)
    return models


def test_sentencepiece_tf_and_python_paths_give_sentencepiece_ids(shared_data, transformers, texts, tmp_path_factory):
    for name, path in _sentencepiece_models(shared_data, tmp_path_factory).items():
        processor = spm.SentencePieceProcessor(model_file=path)
        trainer_spec = sentencepiece_model_pb2.ModelProto.FromString(open(path, "rb").read()).trainer_spec
        kind = "bpe" if trainer_spec.model_type == trainer_spec.BPE else "unigram"
        v = vocab.load_vocabulary(path, kind, extra_ids=100, lower_case=False, token_names={})
        expected = [processor.encode(t) for t in texts]
        tf_path = tf_ids(v, texts)
        if kind == "unigram" and trainer_spec.byte_fallback:
            # tensorflow-text's SentencepieceTokenizer (the only TF one with byte fallback) adds the piece scores of
            # a segmentation in another order than sentencepiece 0.2: where two segmentations tie within float32
            # rounding, it may pick the other one. Such a difference must be a tie, and rare.
            ties = [i for i, (e, t) in enumerate(zip(expected, tf_path, strict=True)) if e != t]
            for i in ties:
                score = [sum(processor.get_score(piece) for piece in ids) for ids in (expected[i], tf_path[i])]
                assert score[1] == pytest.approx(score[0], abs=1e-3) and v.decode(tf_path[i]) == v.decode(expected[i])
                tf_path[i] = expected[i]
            assert len(ties) <= 2, f"{name}: {len(ties)} texts segment differently in TF"
        assert_same_ids(name, texts, expected, [v.encode(t) for t in texts], tf_path)
        if name == "t5_spiece":  # Hugging Face's T5 tokenizer reads T5's own vocabulary exactly as SentencePiece
            directory = tmp_path_factory.mktemp("t5")
            shutil.copy(path, directory / "spiece.model")
            hf = transformers.T5TokenizerFast.from_pretrained(str(directory))
            assert [hf(t, add_special_tokens=False)["input_ids"] for t in texts] == expected
            known = [ids for ids in expected if v.unk_id not in ids]  # unk decodes as " ⁇ " here, "<unk>" in HF
            assert [v.decode(ids) for ids in known] == [hf.decode(ids) for ids in known] and len(known) > 140
        text = "The quick brown fox: naïve café, 日本語 ✓"  # normalized text without runs of spaces round-trips
        assert v.decode(v.encode(text)) == text or not trainer_spec.byte_fallback


@pytest.mark.parametrize("kind", ["byte_bpe", "wordpiece"])
def test_tokenizing_datasets_can_be_checkpointed(shared_data, wordpiece_dir, kind, tmp_path):
    """The TF paths are TF ops only: tf.data saves and restores an iterator that tokenizes (a py_function would make
    the save fail)."""
    path = str(shared_data / "tokenizers" / "gpt2") if kind == "byte_bpe" else str(wordpiece_dir)
    v = vocab.load_vocabulary(path, kind, extra_ids=0, lower_case=True, token_names={})
    dataset = tf.data.Dataset.from_tensor_slices(TRICKY * 4).shuffle(16, seed=1).map(v.encode_tf, num_parallel_calls=2)
    iterator = iter(dataset.prefetch(2))
    for _ in range(5):
        next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    checkpoint.write(os.path.join(tmp_path, "ckpt"))
    rest = [next(iterator).numpy().tolist() for _ in range(10)]
    restored = iter(dataset.prefetch(2))
    tf.train.Checkpoint(iterator=restored).read(os.path.join(tmp_path, "ckpt")).assert_consumed()
    assert [next(restored).numpy().tolist() for _ in range(10)] == rest
