"""NSP and SOP sentence pairs (BERT, ALBERT) on real text: layout, token types, labels, truncation, lengths."""

import numpy as np
import pretraining_text
import pytest
import seqio
import tensorflow as tf

from lmx.data import converters, masking, sentence_pairs

LENGTH = 64


@pytest.fixture(scope="module")
def special(t5_vocab):
    return pretraining_text.t5_objective_ids(t5_vocab)


@pytest.fixture(scope="module")
def book(shared_data):
    return pretraining_text.documents(shared_data).cache()


class Corpus:
    """The documents' tokens, sentence by sentence (as the pairs see them), searchable for contiguous runs."""

    def __init__(self, book, vocab):
        docs = []
        for ex in book.as_numpy_iterator():
            sentences = [s.decode() for s in sentence_pairs.split_sentences(tf.constant(ex["text"])).numpy()]
            docs.append(np.concatenate(vocab.tokenizer.encode(sentences)))
        self.stream = np.concatenate([np.append(doc, -1) for doc in docs])  # -1 between documents
        self.doc = np.repeat(np.arange(len(docs)), [len(doc) + 1 for doc in docs])

    def find(self, run) -> np.ndarray:
        """Positions where the contiguous token run `run` starts."""
        at = np.flatnonzero(self.stream[: len(self.stream) - len(run) + 1] == run[0])
        for k, token in enumerate(run[1:], 1):
            at = at[self.stream[at + k] == token]
        return at

    def documents(self, run) -> set[int]:
        return set(self.doc[self.find(run)].tolist())

    def in_order(self, first, second) -> bool:
        """Whether `second` follows (not necessarily right after) an occurrence of `first` in the same document."""
        firsts, seconds = self.find(first), self.find(second)
        after = seconds[None, :] >= firsts[:, None] + len(first)
        return bool((after & (self.doc[seconds][None, :] == self.doc[firsts][:, None])).any())


@pytest.fixture(scope="module")
def corpus(book, t5_vocab):
    return Corpus(book, t5_vocab)


def _pairs(book, vocab, special, task, seed, **kwargs):
    with seqio.utils.map_seed_manager(seed):
        ds = sentence_pairs.sentence_pairs(
            book, {"targets": LENGTH}, pretraining_text.features(vocab), ids=special, task=task, **kwargs
        )
    return list(ds.as_numpy_iterator())


@pytest.fixture(scope="module")
def nsp(book, t5_vocab, special):
    return _pairs(book, t5_vocab, special, "nsp", 1)


@pytest.fixture(scope="module")
def sop(book, t5_vocab, special):
    return _pairs(book, t5_vocab, special, "sop", 1)


def _segments(ex, special):
    """(A, B) token lists of a [CLS] A [SEP] B [SEP] example, after checking its layout and token types."""
    t, types = ex["targets"].tolist(), ex["token_types"].tolist()
    assert len(t) <= LENGTH and t[0] == special.cls and t[-1] == special.sep and t.count(special.sep) == 2
    first_sep = t.index(special.sep)
    assert types == [0] * (first_sep + 1) + [1] * (len(t) - first_sep - 1)
    a, b = t[1:first_sep], t[first_sep + 1 : -1]
    assert a and b
    return a, b


def test_nsp_pairs(nsp, corpus, special):
    labels = np.array([ex["pair_label"][0] for ex in nsp])
    assert len(nsp) > 2500 and {ex["pair_label"].shape for ex in nsp} == {(1,)}
    assert abs(labels.mean() - 0.5) < 0.03  # 50% random next (3 standard errors)
    for ex in nsp[::4]:
        a, b = _segments(ex, special)
        docs_a = corpus.documents(a)
        assert docs_a, "A is a contiguous run of one document"
        if ex["pair_label"][0] == 0:  # B is the text after A: right after it unless truncation cut between them
            assert corpus.in_order(a, b)
            if len(ex["targets"]) < LENGTH:
                assert corpus.documents(a + b)
        else:  # B comes from another document
            docs_b = corpus.documents(b)
            assert docs_b and docs_a - docs_b  # A's document (a short A may occur in several) lacks B


def test_sop_pairs(sop, corpus, special):
    labels = np.array([ex["pair_label"][0] for ex in sop])
    assert abs(labels.mean() - 0.5) < 0.03
    for ex in sop[::4]:
        a, b = _segments(ex, special)
        # Two consecutive segments of one document, in order (label 0) or swapped (label 1).
        first, second = (b, a) if ex["pair_label"][0] else (a, b)
        assert corpus.in_order(first, second)
        if len(ex["targets"]) < LENGTH:
            assert corpus.documents(first + second)


def test_pairs_fill_the_length(sop, nsp):
    for examples in (sop, nsp):
        lengths = np.array([len(ex["targets"]) for ex in examples])
        # Documents here are ~250 tokens, so most chunks reach the target of LENGTH - 3 tokens.
        assert np.mean(lengths == LENGTH) > 0.5 and lengths.max() == LENGTH


def test_same_seed_same_pairs_other_seed_other_pairs(book, t5_vocab, special):
    first = _pairs(book.take(30), t5_vocab, special, "nsp", 1)
    again = _pairs(book.take(30), t5_vocab, special, "nsp", 1)
    other = _pairs(book.take(30), t5_vocab, special, "nsp", 2)
    assert [ex["targets"].tolist() for ex in again] == [ex["targets"].tolist() for ex in first]
    assert [ex["targets"].tolist() for ex in other] != [ex["targets"].tolist() for ex in first]


def _bert_truncate(la, lb, max_tokens):
    """BERT's truncate_seq_pair, one token at a time: (tokens cut from A, tokens cut from B)."""
    cut_a = cut_b = 0
    while la + lb > max_tokens:
        if la > lb:
            la, cut_a = la - 1, cut_a + 1
        else:
            lb, cut_b = lb - 1, cut_b + 1
    return cut_a, cut_b


def test_truncation_matches_bert():
    grid = [(la, lb, m) for la in range(0, 40, 3) for lb in range(0, 40, 4) for m in (5, 17, 30, 61)]
    la, lb, m = (np.array(x) for x in zip(*grid, strict=True))
    cut_a, cut_b = sentence_pairs.truncation(tf.constant(la), tf.constant(lb), tf.constant(m))
    expected = np.array([_bert_truncate(*g) for g in grid])
    np.testing.assert_array_equal(np.stack([cut_a.numpy(), cut_b.numpy()], axis=1), expected)


def test_short_sequences_at_their_rate():
    """One long document of one-token sentences: every chunk holds its target exactly, so the example lengths show
    the target distribution: L - 3 tokens, or with probability 0.1 uniform in [2, L - 3]."""
    lengths = tf.RaggedTensor.from_row_lengths(tf.ones([60_000], tf.int32), [60_000])
    spans = sentence_pairs._pair_spans(lengths, tf.constant([5, 6]), "sop", 61, 0.1).numpy()
    sizes = spans[:, 3] - spans[:, 2] + spans[:, 1] - spans[:, 0]
    short = sizes < 61
    assert abs(short.mean() - 0.1 * 59 / 60) < 0.02  # a uniform draw in [2, 61] is short 59 times in 60
    assert sizes.min() >= 2 and abs(sizes[short].mean() - 31) < 2.5
    none = sentence_pairs._pair_spans(lengths, tf.constant([5, 6]), "sop", 61, 0.0).numpy()
    assert ((none[:, 3] - none[:, 2] + none[:, 1] - none[:, 0])[:-1] == 61).all()  # the last ends the document


def test_masked_pairs_through_the_pair_converter(book, t5_vocab, special):
    with seqio.utils.map_seed_manager(3):
        ds = sentence_pairs.sentence_pairs(
            book.take(20), {"targets": LENGTH}, pretraining_text.features(t5_vocab), ids=special, task="sop"
        )
        ds = masking.mlm(ds, ids=special)
    lengths = converters.encoder_task_lengths(LENGTH, with_pair_label=True)
    batch = next(iter(converters.SentencePairFeatureConverter()(ds, lengths).batch(16)))
    batch = {k: v.numpy() for k, v in batch.items()}
    assert batch["encoder_input_tokens"].shape == (16, LENGTH) and batch["pair_label"].shape == (16, 1)
    targets, weights = batch["encoder_target_tokens"], batch["encoder_loss_weights"]
    assert not weights[np.isin(targets, [special.cls, special.sep, 0])].any()
    np.testing.assert_array_equal(batch["encoder_input_tokens"][:, 0], special.cls)
    assert weights.sum() > 0


def test_bad_settings_are_refused(book, t5_vocab, special):
    features = pretraining_text.features(t5_vocab)
    with pytest.raises(ValueError, match="task='mlm'; known: nsp, sop"):
        sentence_pairs.sentence_pairs(book, {"targets": 64}, features, ids=special, task="mlm")
    with pytest.raises(ValueError, match="short_seq_prob=1.5"):
        sentence_pairs.sentence_pairs(book, {"targets": 64}, features, ids=special, task="nsp", short_seq_prob=1.5)
    with pytest.raises(ValueError, match="targets_length >= 5"):
        sentence_pairs.sentence_pairs(book, {"targets": 4}, features, ids=special, task="nsp")
