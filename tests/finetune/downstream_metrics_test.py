"""lmx.finetune.metrics against independent references: scikit-learn (accuracy, F1, MCC), scipy.stats (Pearson,
Spearman), sacrebleu and BLEU's formula; random inputs of several sizes and the edge cases (all one class, constant
inputs, ties, one example, empty inputs, unparseable predictions).

(Named downstream_metrics_test.py: tests/metrics_test.py already owns the module name metrics_test.)
"""

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import sacrebleu
import scipy.stats
import sklearn.metrics

from lmx.finetune import catalog, metrics

SIZES = (1, 2, 7, 100, 1000)


def _quiet(fn, *args, **kwargs):
    """A reference's value without its warnings about undefined cases."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("classes", [2, 3])
def test_classification_metrics_match_sklearn_on_random_labels(n, classes):
    rng = np.random.default_rng(1000 * n + classes)
    labels = rng.integers(0, classes, n)
    predictions = np.where(rng.random(n) < 0.7, labels, rng.integers(-1, classes, n))  # -1: unparseable text
    assert metrics.accuracy(labels, predictions) == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))
    expected_mcc = _quiet(sklearn.metrics.matthews_corrcoef, labels, predictions)
    assert metrics.matthews_corrcoef(labels, predictions) == pytest.approx(expected_mcc, abs=1e-12)
    # F1 of class 1: anything else is the negative class (-1 and 2 included).
    expected_f1 = _quiet(sklearn.metrics.f1_score, labels == 1, predictions == 1, zero_division=0.0)
    assert metrics.f1(labels, predictions) == pytest.approx(expected_f1, abs=1e-12)
    if classes == 2:
        binary = np.where(predictions == 1, 1, 0)
        expected = _quiet(sklearn.metrics.f1_score, labels, binary, zero_division=0.0)
        assert metrics.f1(labels, predictions) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "labels, predictions",
    [
        ([1, 1, 1, 1], [1, 1, 1, 1]),  # all one class, all right
        ([1, 1, 1, 1], [1, 0, 1, 0]),  # labels all one class
        ([0, 1, 0, 1], [1, 1, 1, 1]),  # constant predictions
        ([0, 0, 0], [0, 0, 0]),  # no positive label nor prediction: F1 0/0
        ([1], [1]),  # one example
        ([0], [-1]),
    ],
)
def test_classification_edge_cases_match_sklearn(labels, predictions):
    assert metrics.accuracy(labels, predictions) == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))
    assert metrics.matthews_corrcoef(labels, predictions) == _quiet(
        sklearn.metrics.matthews_corrcoef, labels, predictions
    )
    expected_f1 = _quiet(sklearn.metrics.f1_score, np.equal(labels, 1), np.equal(predictions, 1), zero_division=0.0)
    assert metrics.f1(labels, predictions) == pytest.approx(expected_f1)


def test_mcc_of_a_confusion_matrix_by_hand():
    # TP 3, TN 2, FP 1, FN 1: (3*2 - 1*1) / sqrt(4 * 4 * 3 * 3) = 5 / 12.
    labels = [1, 1, 1, 1, 0, 0, 0]
    predictions = [1, 1, 1, 0, 0, 0, 1]
    assert metrics.matthews_corrcoef(labels, predictions) == pytest.approx(5 / 12)
    assert metrics.f1(labels, predictions) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


@pytest.mark.parametrize("n", SIZES[1:])
@pytest.mark.parametrize("tied", [False, True])
def test_correlations_match_scipy(n, tied):
    rng = np.random.default_rng(n + 7 * tied)
    if tied:  # STS-B-like: scores on a 0.2 grid, predictions rounded as T5's texts are: many ties
        labels = np.round(rng.uniform(0, 5, n) * 5) / 5
        predictions = np.round(np.clip(labels + rng.normal(0, 1, n), 0, 5) * 5) / 5
    else:
        labels = rng.uniform(0, 5, n)
        predictions = labels + rng.normal(0, 1.5, n)
    if np.ptp(labels) == 0 or np.ptp(predictions) == 0:
        pytest.skip("constant draw")  # tested below
    assert metrics.pearson(labels, predictions) == pytest.approx(scipy.stats.pearsonr(labels, predictions)[0], abs=1e-9)
    expected = scipy.stats.spearmanr(labels, predictions)[0]
    assert metrics.spearman(labels, predictions) == pytest.approx(expected, abs=1e-9)


def test_average_ranks_match_scipy():
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert metrics.average_ranks(values).tolist() == scipy.stats.rankdata(values, method="average").tolist()
    assert metrics.average_ranks(values).tolist() == [5.0, 1.5, 5.0, 3.0, 5.0, 1.5]


def test_correlations_of_perfect_reversed_and_undefined_inputs():
    x = [0.0, 1.2, 2.4, 5.0]
    assert metrics.pearson(x, x) == pytest.approx(1.0)
    assert metrics.spearman(x, [10, 20, 30, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert metrics.spearman(x, [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Constant input: scipy says nan (undefined); lmx documents 0.0.
    assert math.isnan(_quiet(scipy.stats.pearsonr, x, [2.0] * 4)[0])
    assert metrics.pearson(x, [2.0] * 4) == 0.0 and metrics.spearman(x, [2.0] * 4) == 0.0
    assert metrics.pearson([3.0], [1.0]) == 0.0  # one example: constant


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_empty_or_mismatched_inputs_raise_one_clear_error(name):
    fn = metrics.METRICS[name]
    with pytest.raises(ValueError, match="0 examples"):
        fn([], [])
    with pytest.raises(ValueError, match="equal length|hypotheses"):
        fn(["a", "b"] if name in ("bleu", "exact_match") else [1, 0], ["a"] if name in ("bleu", "exact_match") else [1])


def _ngrams(words, n):
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def reference_bleu(references, hypotheses):
    """Papineni et al. (2002) corpus BLEU of whitespace-tokenized texts, one reference each: 100 * BP *
    exp(mean_n log p_n), p_n the clipped n-gram precision (n = 1..4), BP = min(1, exp(1 - r / c))."""
    matches, totals = np.zeros(4), np.zeros(4)
    ref_len = hyp_len = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = ref.split(), hyp.split()
        ref_len, hyp_len = ref_len + len(r), hyp_len + len(h)
        for n in range(1, 5):
            hyp_counts, ref_counts = _ngrams(h, n), _ngrams(r, n)
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    brevity = min(1.0, math.exp(1 - ref_len / hyp_len))
    return 100 * brevity * math.exp(np.mean(np.log(matches / totals)))


def test_bleu_matches_the_formula_and_sacrebleu():
    # Lower-case words without punctuation: 13a tokenization is the identity, so the formula sees the same tokens.
    references = [
        "ein mann sitzt auf einer bank im park",
        "zwei hunde spielen im schnee",
        "eine frau liest ein buch am fenster",
    ]
    hypotheses = [
        "ein mann sitzt auf der bank im park",
        "zwei hunde spielen im schnee",
        "eine frau liest ein buch",  # short: brevity penalty
    ]
    value = metrics.bleu(references, hypotheses)
    assert value == pytest.approx(reference_bleu(references, hypotheses), rel=1e-9)
    assert value == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert metrics.bleu(references, references) == pytest.approx(100.0)
    assert metrics.bleu(["a b c d"], ["e f g h"]) == 0.0


def test_bleu_tokenizes_punctuation_as_13a():
    references = ["Ein Hund rennt durch das Gras."]
    assert metrics.bleu(references, ["Ein Hund rennt durch das Gras ."]) == pytest.approx(100.0)
    hypotheses = ["Ein Hund läuft durch das Gras!"]
    assert metrics.bleu(references, hypotheses) == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def test_exact_match():
    assert metrics.exact_match(["Das Haus.", "Ein Hund"], [" Das Haus. ", "Ein Hund!"]) == 0.5
    assert metrics.exact_match(["a"], ["a"]) == 1.0


def test_compute_gives_every_metric_of_the_task_selection_metric_first():
    mrpc = catalog.get_task("mrpc")
    values = metrics.compute(mrpc, [1, 0, 1, 1], [1, 0, 0, 1])
    assert list(values) == ["f1", "accuracy"]
    assert values == {"f1": pytest.approx(0.8), "accuracy": 0.75}
    # A text-to-text model's texts are read as labels; one that names no class is wrong.
    texts = ["equivalent", "not_equivalent", "banana", "equivalent"]
    assert metrics.compute(mrpc, [1, 0, 1, 1], texts) == values
    assert metrics.compute(catalog.get_task("cola"), [1, 0, 1, 0], [1, 0, 1, 0]) == {"mcc": 1.0}
    stsb = metrics.compute(catalog.get_task("stsb"), [0.0, 2.5, 4.0], ["0.2", "2.4", "oops"])
    assert list(stsb) == ["pearson", "spearman"]
    assert stsb["spearman"] == pytest.approx(-0.5)  # unparseable "oops" is -1: prediction ranks 2 3 1
    translation = metrics.compute(
        catalog.get_task("multi30k"), ["Ein Hund rennt im Park."], ["Ein Hund rennt im Park."]
    )
    assert translation == {"bleu": pytest.approx(100.0), "exact_match": 1.0}
