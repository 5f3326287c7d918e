"""Losses of the pretraining objectives, as pure functions of (model, params, batch).

Every loss returns *sums* over target tokens plus the token count, so that gradient accumulation and data
parallelism divide by the number of target tokens of the whole global batch, never by a microbatch's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp


def cross_entropy_sums(
    logits: jax.Array, targets: jax.Array, weights: jax.Array, *, z_loss: float, label_smoothing: float
) -> dict[str, jax.Array]:
    """Weighted sums of token cross-entropy, z-loss and accuracy.

    logits: [B, L, V] (any float dtype; computed in float32), targets: [B, L] int, weights: [B, L].
    z-loss (PaLM, section 5): z_loss * log(Z)^2 keeps the softmax normaliser near 1 for stability.
    """
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, L]
    log_probs = logits - log_z[..., None]  # [B, L, V]
    target_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [B, L]
    xent = -target_log_prob
    if label_smoothing > 0:
        # Smoothed target: (1 - s) on the label, s spread uniformly over the vocabulary.
        xent = (1.0 - label_smoothing) * xent - label_smoothing * jnp.mean(log_probs, axis=-1)
    z_term = z_loss * jnp.square(log_z)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return {
        "loss": jnp.sum((xent + z_term) * weights),
        "cross_entropy": jnp.sum(-target_log_prob * weights),
        "z_loss": jnp.sum(z_term * weights),
        "accuracy": jnp.sum(correct * weights),
        "tokens": jnp.sum(weights),
    }


def seq2seq_loss(model, params, batch: Mapping[str, jax.Array], *, rngs, train: bool, train_config):
    """Encoder-decoder objectives (span corruption, prefix LM as seq2seq): cross-entropy on decoder targets."""
    logits = model.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        batch.get("encoder_segment_ids"),
        batch.get("decoder_segment_ids"),
        enable_dropout=train,
        rngs=rngs,
    )
    return cross_entropy_sums(
        logits,
        batch["decoder_target_tokens"],
        batch["decoder_loss_weights"],
        z_loss=train_config.z_loss,
        label_smoothing=train_config.label_smoothing,
    )


# Objective name -> loss function. The data side (lmx.data.tasks.OBJECTIVES) builds the matching features.
OBJECTIVES: dict[str, Callable] = {"span_corruption": seq2seq_loss}

# Which model family each objective needs.
OBJECTIVE_MODELS: dict[str, tuple[str, ...]] = {"span_corruption": ("encoder_decoder",)}


def get_objective(name: str) -> Callable:
    if name not in OBJECTIVES:
        raise ValueError(f"config.data.objective={name!r} has no loss; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def init_inputs(model_name: str, data_config) -> dict[str, jax.Array]:
    """Dummy inputs of one row with the configured lengths, for `model.init` (shapes only matter)."""
    if model_name == "encoder_decoder":
        return {
            "encoder_input_tokens": jnp.ones((1, data_config.inputs_length), jnp.int32),
            "decoder_input_tokens": jnp.ones((1, data_config.targets_length), jnp.int32),
        }
    raise ValueError(f"config.model.name={model_name!r} has no init inputs; known: ['encoder_decoder']")
