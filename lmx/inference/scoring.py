"""Scoring: log p(target | prompt) by teacher forcing, for ranking and multiple choice (`lmx.infer --mode=score`).

One forward pass of the training model (no cache): decoder-only rows are prompt + target (the logits at position j
predict token j + 1; only the target's tokens count), encoder-decoder rows put the prompt in the encoder and the
target, shifted right behind the start token 0, in the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MIN_BUCKET = 16


def _bucket(length: int) -> int:
    return max(MIN_BUCKET, 1 << math.ceil(math.log2(max(length, 1))))


def features(
    prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], *, rows: int, encoder_decoder: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """-> (features [rows, L] incl. "targets", weights [rows, L]: 1 on the target tokens). Lengths are rounded up
    to powers of two (few compiles); rows beyond len(prompts) are padding."""
    if encoder_decoder:
        encoder = np.zeros((rows, _bucket(max(map(len, prompts)))), np.int32)
        width = _bucket(max(map(len, targets)))
        decoder, target, weights = (np.zeros((rows, width), np.int32) for _ in range(3))
        for row, (p, t) in enumerate(zip(prompts, targets, strict=True)):
            encoder[row, : len(p)] = p
            decoder[row, 1 : len(t)] = t[:-1]  # the start token 0, then the target shifted right
            target[row, : len(t)] = t
            weights[row, : len(t)] = 1
        batch = {"encoder_input_tokens": encoder, "decoder_input_tokens": decoder, "targets": target}
        return batch, weights.astype(np.float32)
    width = _bucket(max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True)) - 1)
    inputs, target, weights, segments = (np.zeros((rows, width), np.int32) for _ in range(4))
    for row, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        sequence = [*p, *t]
        n = len(sequence) - 1
        inputs[row, :n], target[row, :n], segments[row, :n] = sequence[:-1], sequence[1:], 1
        weights[row, len(p) - 1 : n] = 1  # the positions whose next token is a target token
    batch = {"decoder_input_tokens": inputs, "decoder_segment_ids": segments, "targets": target}
    return batch, weights.astype(np.float32)


def token_logprobs(model: nn.Module, params: Any, batch: dict[str, jax.Array], vocab_limit: int | None = None):
    """[B, L] log p(targets[b, j]) under the model at every position (the caller keeps the weighted ones); ids
    >= vocab_limit (rows padding the table beyond the vocabulary) are excluded, as decoding excludes them."""
    logits = model.apply({"params": params}, batch)["logits"]  # [B, L, V] float32
    if vocab_limit is not None:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, -jnp.inf)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_probs, batch["targets"][..., None], axis=-1)[..., 0]
