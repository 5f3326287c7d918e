"""The downstream metrics, written once, as the GLUE papers define them (Wang et al. 2019, section 3 and table 1).

Scales: accuracy, F1, MCC and exact match are fractions (0..1), correlations lie in -1..1, BLEU is sacrebleu's 0..100.
Every metric is higher-is-better. Inputs are sequences of equal length; an empty one raises ValueError (a metric of
nothing is a bug upstream, not a score). A prediction of -1 (`DownstreamTask.text_to_label` of an unparseable text)
is simply wrong: it matches no label.

Undefined cases return 0.0, as scikit-learn does for F1 and MCC: MCC when the labels or the predictions are all one
class, Pearson and Spearman when either input is constant (scipy returns nan there). 0.0 is what such a predictor is
worth, and it keeps best-checkpoint comparisons total (nan compares false with everything).

  compute(task, targets, predictions) -> {"f1": ..., "accuracy": ...}   every metric of a DownstreamTask
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lmx.finetune.catalog import DownstreamTask


def _pair(labels, predictions, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """[n] arrays of two equally long, nonempty sequences."""
    labels, predictions = np.asarray(labels, dtype=dtype), np.asarray(predictions, dtype=dtype)
    if labels.ndim != 1 or labels.shape != predictions.shape:
        raise ValueError(
            f"metrics need two flat sequences of equal length, got shapes {labels.shape} and {predictions.shape}"
        )
    if labels.size == 0:
        raise ValueError("a metric of 0 examples is undefined; evaluate at least one example")
    return labels, predictions


def accuracy(labels, predictions) -> float:
    """Fraction of examples whose prediction equals the label (SST-2, QNLI, RTE, WNLI, MNLI, AG News)."""
    labels, predictions = _pair(labels, predictions)
    return float(np.mean(labels == predictions))


def f1(labels, predictions) -> float:
    """Binary F1 of class 1 (MRPC "equivalent", QQP "duplicate"): 2 TP / (2 TP + FP + FN), the harmonic mean of
    precision and recall; 0.0 when there is neither a positive label nor a positive prediction."""
    labels, predictions = _pair(labels, predictions)
    true_positive = np.sum((labels == 1) & (predictions == 1))
    false_positive = np.sum((labels != 1) & (predictions == 1))
    false_negative = np.sum((labels == 1) & (predictions != 1))
    denominator = 2 * true_positive + false_positive + false_negative
    return float(2 * true_positive / denominator) if denominator else 0.0


def matthews_corrcoef(labels, predictions) -> float:
    """Matthews correlation coefficient (CoLA; Matthews 1975), in its multiclass form (Gorodkin 2004), over the
    confusion matrix C of the classes seen in either input:

        MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))

    with s examples, c = trace(C) correct, t_k labels and p_k predictions of class k. For two classes this is
    (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)). 0.0 when undefined (all labels or all predictions
    one class)."""
    labels, predictions = _pair(labels, predictions)
    classes, index = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    label_index, prediction_index = index[: labels.size], index[labels.size :]
    t = np.bincount(label_index, minlength=classes.size).astype(np.float64)  # [K] labels per class
    p = np.bincount(prediction_index, minlength=classes.size).astype(np.float64)  # [K] predictions per class
    s = float(labels.size)
    c = float(np.sum(label_index == prediction_index))
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - p @ t) / denominator) if denominator > 0 else 0.0


def pearson(labels, predictions) -> float:
    """Pearson's r (STS-B): covariance over the product of standard deviations, in float64; 0.0 when either input
    is constant (undefined)."""
    x, y = _pair(labels, predictions, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(np.clip((x @ y) / denominator, -1.0, 1.0)) if denominator > 0 else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """[n] float64 ranks 1..n of `values`; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # [distinct] the rank of each distinct value's last occurrence
    first = last - counts + 1
    return ((first + last) / 2.0)[inverse]


def spearman(labels, predictions) -> float:
    """Spearman's rho (STS-B): Pearson's r of the ranks, ties given their average rank; 0.0 when either input is
    constant (undefined)."""
    x, y = _pair(labels, predictions, np.float64)
    return pearson(average_ranks(x), average_ranks(y))


def _texts(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[list[str], list[str]]:
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses; give one per reference")
    if not references:
        raise ValueError("a metric of 0 examples is undefined; evaluate at least one example")
    return references, hypotheses


def bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus BLEU (Papineni et al. 2002) by sacrebleu (Post 2018) with its defaults (13a tokenization, "exp"
    smoothing of n-gram orders without a match), one reference per hypothesis; 0..100 (Multi30k)."""
    import sacrebleu  # only evaluation of translation needs it

    references, hypotheses = _texts(references, hypotheses)
    return float(sacrebleu.metrics.BLEU(tokenize="13a").corpus_score(hypotheses, [references]).score)


def exact_match(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference, ignoring leading and trailing white space (T5's sequence
    accuracy, as a fraction)."""
    references, hypotheses = _texts(references, hypotheses)
    return float(np.mean([r.strip() == h.strip() for r, h in zip(references, hypotheses, strict=True)]))


# The metric names a DownstreamTask lists (its first is the one that selects checkpoints).
METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
    "bleu": bleu,
    "exact_match": exact_match,
}


def _as_labels(task: DownstreamTask, values) -> list:
    """Labels of a classification or regression task: texts (a text-to-text model's output, seqio's targets) are
    read with task.text_to_label; numbers pass through."""
    return [
        task.text_to_label(v.decode("utf-8") if isinstance(v, bytes) else v) if isinstance(v, str | bytes) else v
        for v in values
    ]


def compute(task: DownstreamTask, targets, predictions) -> dict[str, float]:
    """{metric: value} of every metric of `task`, in task.metrics order (the first selects checkpoints).

    Classification and regression: labels (int / float) or their texts, which are read with task.text_to_label
    (unparseable -> -1, wrong). Translation: target and predicted strings. Also usable as a seqio metric_fn
    (`functools.partial(compute, task)`)."""
    if task.kind != "translation":
        targets, predictions = _as_labels(task, targets), _as_labels(task, predictions)
    return {name: METRICS[name](targets, predictions) for name in task.metrics}
