"""BERT MLM (token, whole-word, n-gram) and ELECTRA masking against the papers' rates, on real text."""

import numpy as np
import pretraining_text
import pytest
import seqio
import tensorflow as tf

from lmx.data import language_modeling, masking

LENGTH = 128


@pytest.fixture(scope="module")
def vocab(t5_vocab):
    return t5_vocab


@pytest.fixture(scope="module")
def special(vocab):
    return pretraining_text.t5_objective_ids(vocab)


@pytest.fixture(scope="module")
def sequences(shared_data, vocab, special):
    """[CLS] chunk [SEP] examples of ~150K tokens of two books (RoBERTa's full-sentence inputs)."""
    docs = pretraining_text.tokenized(pretraining_text.documents(shared_data), vocab)
    return language_modeling.full_sentences(docs, {"targets": LENGTH}, ids=special).cache()


def _masked(dataset, seed, **kwargs):
    with seqio.utils.map_seed_manager(seed):
        ds = kwargs.pop("fn", masking.mlm)(dataset, **kwargs)
    return list(ds.as_numpy_iterator())


def _specials(special):
    return np.array(special.protected)


@pytest.fixture(scope="module")
def bert_examples(sequences, special):
    return _masked(sequences, 7, ids=special)


def test_bert_rates_on_real_text(bert_examples, special):
    targets = np.concatenate([ex["targets"] for ex in bert_examples])
    inputs = np.concatenate([ex["inputs"] for ex in bert_examples])
    selected = np.concatenate([ex["loss_weights"] for ex in bert_examples]).astype(bool)
    maskable = ~np.isin(targets, _specials(special))
    assert maskable.sum() > 100_000
    # 15% of the maskable tokens, per sequence round(0.15 n) (at least 1), as BERT's create_pretraining_data.py.
    assert abs(selected.sum() / maskable.sum() - 0.15) < 0.01
    for ex in bert_examples:
        n = int((~np.isin(ex["targets"], _specials(special))).sum())
        assert ex["loss_weights"].sum() == max(1, int(np.round(0.15 * n)))
    assert not (selected & ~maskable).any()
    # 80% [MASK], 10% a random token, 10% unchanged (Devlin et al. 2019, section 3.1).
    is_mask = inputs[selected] == special.mask
    unchanged = inputs[selected] == targets[selected]
    random = ~is_mask & ~unchanged
    assert abs(is_mask.mean() - 0.8) < 0.01
    assert abs(random.mean() - 0.1) < 0.01
    assert abs(unchanged.mean() - 0.1) < 0.01  # a random draw equal to the original (1 in 32K) counts here too
    # Random tokens are ordinary pieces, spread over the vocabulary rather than copied from the text.
    drawn = inputs[selected][random]
    assert not np.isin(drawn, _specials(special)).any() and drawn.max() < special.num_tokens
    assert abs(drawn.mean() / special.num_tokens - 0.5) < 0.05
    # Unselected tokens stay; the targets are the original sequence; weights are 0/1 int32.
    np.testing.assert_array_equal(inputs[~selected], targets[~selected])
    assert {ex["loss_weights"].dtype for ex in bert_examples} == {np.dtype(np.int32)}


def test_same_seed_same_masks_other_seed_other_masks(sequences, special, bert_examples):
    again = _masked(sequences, 7, ids=special)
    other = _masked(sequences, 8, ids=special)
    assert all((a["inputs"] == b["inputs"]).all() for a, b in zip(again, bert_examples, strict=True))
    differ = [not (a["loss_weights"] == b["loss_weights"]).all() for a, b in zip(other, bert_examples, strict=True)]
    assert np.mean(differ) > 0.99


def test_other_text_at_the_same_stream_position_gets_other_masks(sequences, special):
    """Input shards read with one seed get the same seed stream; the masks must still differ between them."""
    shard0 = _masked(sequences.shard(2, 0).take(200), 7, ids=special)
    shard1 = _masked(sequences.shard(2, 1).take(200), 7, ids=special)
    same = [(a["loss_weights"] == b["loss_weights"]).mean() for a, b in zip(shard0, shard1, strict=True)]
    # Independent masks agree on about 0.85^2 + 0.15^2 = 74% of positions; shared seeds would give ~100%.
    assert abs(np.mean(same) - 0.745) < 0.03


def _words(tokens, starts_table, special):
    """Word index of each token (-1 for special tokens): an independent reading of the word-start table."""
    words, current = [], -1
    previous_special = True
    for t in tokens:
        if t in special.protected:
            words.append(-1)
            previous_special = True
            continue
        if starts_table[t] or previous_special:
            current += 1
        words.append(current)
        previous_special = False
    return np.array(words)


def test_whole_word_masking_never_splits_a_word(sequences, special, vocab):
    table = masking.sentencepiece_word_starts(vocab)
    # SentencePiece marks a word's first piece with "▁"; punctuation stands alone (ALBERT's rule).
    assert table[vocab.encode("hello")[0]] and table[vocab.encode(".")[-1]]
    assert not table[vocab.encode("Persuasion")[-1]]  # "▁Pers" "u" "asion": the last piece continues the word
    examples = _masked(sequences, 3, ids=special, word_starts=table)
    total_selected = total_maskable = multi_piece_words = 0
    for ex in examples:
        words = _words(ex["targets"], table, special)
        selected = ex["loss_weights"].astype(bool)
        for w in np.unique(words[selected]):
            in_word = words == w
            assert selected[in_word].all(), "a word was split"
            multi_piece_words += in_word.sum() > 1
        total_selected += selected.sum()
        total_maskable += (words >= 0).sum()
    assert abs(total_selected / total_maskable - 0.15) < 0.01
    assert multi_piece_words > 500


def test_ngram_units_follow_the_span_distribution(special):
    """masking_units cuts words into runs of 1..N words with probabilities p(n) (ALBERT: p(n) ~ 1/n, N = 3)."""
    length = 20_000
    tokens = tf.random.stateless_uniform([length], seed=[1, 2], minval=3, maxval=1000, dtype=tf.int32)
    starts = np.random.default_rng(0).random(1000) < 0.7  # ~1.4 pieces per word
    maskable = tf.ones([length], tf.bool)
    for probs in (masking.albert_ngram_probs(3), masking.spanbert_span_probs(0.2, 10)):
        units = masking.masking_units(
            tokens, maskable, tf.constant([3, 4]), tf.constant(starts), tf.constant(probs, tf.float32)
        ).numpy()
        word_start = starts[tokens.numpy()]
        word_start[0] = True
        assert not (units & ~word_start).any()  # a unit begins at a word start
        words_per_unit = np.diff(np.flatnonzero(np.append(units, True)[word_start.tolist() + [True]]))
        observed = np.bincount(words_per_unit[:-1], minlength=len(probs) + 1)[1:] / (len(words_per_unit) - 1)
        np.testing.assert_allclose(observed, probs, atol=0.02)
    np.testing.assert_allclose(masking.albert_ngram_probs(3), [6 / 11, 3 / 11, 2 / 11])
    spanbert = masking.spanbert_span_probs(0.2, 10)
    assert abs(sum(n * p for n, p in enumerate(spanbert, 1)) - 3.8) < 0.05  # SpanBERT's mean span length


def test_ngram_masking_on_real_text(sequences, special, vocab):
    table = masking.sentencepiece_word_starts(vocab)
    examples = _masked(sequences, 5, ids=special, word_starts=table, ngram_probs=masking.albert_ngram_probs())
    selected = np.concatenate([ex["loss_weights"] for ex in examples]).astype(bool)
    targets = np.concatenate([ex["targets"] for ex in examples])
    assert abs(selected.sum() / (~np.isin(targets, _specials(special))).sum() - 0.15) < 0.01
    for ex in examples:
        words = _words(ex["targets"], table, special)
        sel = ex["loss_weights"].astype(bool)
        assert all(sel[words == w].all() for w in np.unique(words[sel]))


def _bert_greedy(lengths_in_order, budget):
    """BERT's loop: take each unit (in order) that still fits in the budget."""
    taken, used = [], 0
    for n in lengths_in_order:
        if used + n <= budget:
            taken.append(True)
            used += n
        else:
            taken.append(False)
    return taken


@pytest.mark.parametrize("seed", range(20))
def test_select_units_is_bert_greedy_rule(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, size=rng.integers(5, 40))
    unit_start = np.concatenate([[True] + [False] * (n - 1) for n in lengths])
    maskable = np.ones_like(unit_start)
    priority = rng.random(unit_start.size).astype(np.float32)
    budget = int(rng.integers(1, lengths.sum()))
    selected = masking.select_units(
        tf.constant(unit_start), tf.constant(maskable), tf.constant(budget), tf.constant(priority)
    ).numpy()
    order = np.argsort(priority[unit_start])
    expected_units = np.zeros(lengths.size, bool)
    expected_units[order] = _bert_greedy(lengths[order], budget)
    np.testing.assert_array_equal(selected, np.repeat(expected_units, lengths))


def test_masks_never_touch_padding_or_ids(special):
    s = special
    row = [s.cls, 5, 6, s.unk, 7, s.sep, 8, 9, s.eos, 10, s.mask, 11, s.sep] + [0] * 7
    dataset = tf.data.Dataset.from_tensors({"targets": tf.constant(row, tf.int32)}).repeat(300)
    for kwargs in ({"rate": 0.5}, {"rate": 0.9, "mask_prob": 0.0, "random_prob": 1.0}, {"fn": masking.electra_mask}):
        examples = _masked(dataset, 11, ids=special, **kwargs)
        fixed = np.isin(row, _specials(special))
        for ex in examples:
            assert not ex["loss_weights"][fixed].any()
            np.testing.assert_array_equal(ex["inputs"][fixed], np.array(row)[fixed])
            assert not np.isin(ex["inputs"][~fixed], [s.cls, s.sep, s.eos, s.unk, 0]).any()


def test_random_tokens_are_uniform_over_ordinary_ids():
    special = masking.ObjectiveIds(pad=0, eos=1, unk=2, mask=5, cls=6, sep=9, num_tokens=12, reserved=(11, 40))
    draws = masking.random_ordinary_tokens(60_000, tf.constant([5, 6]), special).numpy()
    ordinary = [3, 4, 7, 8, 10]
    assert set(np.unique(draws)) == set(ordinary)
    np.testing.assert_allclose(np.bincount(draws)[ordinary] / draws.size, 0.2, atol=0.01)


def test_electra_masks_every_selected_position(sequences, special):
    examples = _masked(sequences, 9, ids=special, fn=masking.electra_mask)
    targets = np.concatenate([ex["targets"] for ex in examples])
    inputs = np.concatenate([ex["inputs"] for ex in examples])
    selected = np.concatenate([ex["loss_weights"] for ex in examples]).astype(bool)
    maskable = ~np.isin(targets, _specials(special))
    assert abs(selected.sum() / maskable.sum() - 0.15) < 0.01
    assert not (selected & ~maskable).any()
    assert (inputs[selected] == special.mask).all() and (inputs[~selected] == targets[~selected]).all()
    # The released code's variant: 85% [MASK], the rest left unchanged (never a random token).
    examples = _masked(sequences.take(300), 9, ids=special, fn=masking.electra_mask, mask_prob=0.85)
    changed = [ex["inputs"][ex["loss_weights"] > 0] for ex in examples]
    originals = [ex["targets"][ex["loss_weights"] > 0] for ex in examples]
    is_mask = np.concatenate([c == special.mask for c in changed])
    kept = np.concatenate([c == o for c, o in zip(changed, originals, strict=True)])
    assert (is_mask | kept).all() and abs(is_mask.mean() - 0.85) < 0.02


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rate": 0.0}, r"rate must lie in \(0, 1\)"),
        ({"rate": 1.0}, r"rate must lie in \(0, 1\)"),
        ({"mask_prob": 0.8, "random_prob": 0.3}, "sum to at most 1"),
        ({"mask_prob": -0.1}, ">= 0"),
    ],
)
def test_bad_rates_are_refused(special, kwargs, match):
    dataset = tf.data.Dataset.from_tensors({"targets": tf.constant([3, 4], tf.int32)})
    with pytest.raises(ValueError, match=match):
        masking.mlm(dataset, ids=special, **kwargs)


def test_special_ids_are_checked():
    with pytest.raises(ValueError, match="pad id must be 0"):
        masking.ObjectiveIds(pad=3, eos=1, unk=2, mask=4, cls=5, sep=6, num_tokens=100)
    with pytest.raises(ValueError, match="no ordinary id"):
        masking.ObjectiveIds(pad=0, eos=1, unk=2, mask=3, cls=4, sep=5, num_tokens=6)


def test_objective_ids_of_a_vocabulary():
    """From the vocabulary's special roles: [SEP] is its eos, random draws stop below the sentinels, bos protected."""
    from lmx.data import special_tokens

    wordpiece = special_tokens.SpecialIds(pad=0, eos=102, unk=100, bos=None, cls=101, mask=103, sentinels=())
    ids = masking.ObjectiveIds.of_vocabulary(wordpiece, 30522)
    assert (ids.sep, ids.cls, ids.mask, ids.num_tokens) == (102, 101, 103, 30522)
    assert ids.protected == (0, 100, 101, 102, 103)
    bpe = special_tokens.SpecialIds(pad=0, eos=1, unk=None, bos=5, cls=2, mask=3, sentinels=(99, 98))
    ids = masking.ObjectiveIds.of_vocabulary(bpe, 100)
    assert ids.num_tokens == 98 and ids.protected == (0, 1, 2, 3, 5)
    t5 = special_tokens.SpecialIds(pad=0, eos=1, unk=2, bos=None, cls=None, mask=None, sentinels=(99,))
    with pytest.raises(ValueError, match=r"no cls token.*config.data.special_tokens.cls"):
        masking.ObjectiveIds.of_vocabulary(t5, 100)


def test_word_starts_of_wordpiece_and_byte_bpe():
    pieces = ["[PAD]", "[CLS]", "un", "##aff", "##able", "the", "##s", "."]
    assert masking.wordpiece_word_starts(pieces).tolist() == [True, True, True, False, False, True, False, True]
    pieces = ["ĠHello", "Ġwor", "ld", ",", "Ġ", "ing", "!!"]
    assert masking.marked_word_starts(pieces, "Ġ").tolist() == [True, True, False, True, True, False, True]
