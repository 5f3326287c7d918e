"""The "classify" fine-tuning objective (lmx.objectives.FINETUNE_OBJECTIVES) against numpy: mean cross-entropy and
accuracy over rows for classes, mean squared error for a regression head, as (sum, rows) terms."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmx import objectives

CLASSIFY = objectives.FINETUNE_OBJECTIVES["classify"]


def _train_config(label_smoothing=0.0):
    return ml_collections.ConfigDict({"label_smoothing": label_smoothing, "z_loss": 1e-4})


def _means(logits, labels, train_config):
    batch = {"labels": jnp.asarray(labels)[:, None]}
    terms = CLASSIFY.terms({"logits": jnp.asarray(logits)}, batch, train_config)
    rows = CLASSIFY.denominators(batch)
    means = {name: float(value) / float(rows[den]) for name, (value, den) in terms.items()}
    return means, float(objectives.training_loss(means, CLASSIFY.coefficients(train_config)))


def test_classes_cross_entropy_and_accuracy_over_rows():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32) * 3
    labels = np.array([0, 2, 1, 1, 0, 2], np.int32)
    means, loss = _means(logits, labels, _train_config())
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    xent = -log_probs[np.arange(6), labels].mean()
    assert means["cross_entropy"] == pytest.approx(xent, rel=1e-5)
    assert means["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == labels))
    assert loss == pytest.approx(xent, rel=1e-5)  # no z-loss for a head of a few classes
    assert "z_loss" not in means

    smoothed, loss = _means(logits, labels, _train_config(0.1))
    expected = 0.9 * -log_probs[np.arange(6), labels] - 0.1 * log_probs.mean(-1)
    assert loss == pytest.approx(expected.mean(), rel=1e-5)
    assert smoothed["cross_entropy"] == pytest.approx(xent, rel=1e-5)


def test_regression_is_the_mean_squared_error_of_the_score():
    scores = np.array([[0.5], [4.0], [2.2]], np.float32)
    labels = np.array([1.0, 3.8, 2.2], np.float32)
    means, loss = _means(scores, labels, _train_config())
    assert set(means) == {"mse"}
    expected = np.mean((scores[:, 0] - labels) ** 2)
    assert means["mse"] == pytest.approx(expected, rel=1e-6) and loss == pytest.approx(expected, rel=1e-6)
