"""Position information: T5's relative position buckets and bias, and rotary position embeddings.

Learned absolute positions (GPT-2, BERT) are an `Embed` table looked up with the batch's positions
(lmx.models.embeddings). Positions are always inputs ([B, L], restarting at 0 in each packed example), never
`arange(L)` taken for granted, so packed rows see the positions each example would have alone.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def relative_position_bucket(
    relative_position: Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
    """Maps key_position - query_position to a bucket id in [0, num_buckets) (T5 paper, section 2.1).

    Steps:
      1. Bidirectional: half the buckets for keys after the query (relative_position > 0), half for keys at or
         before it; then work with |relative_position|. Unidirectional (causal): future keys are invisible anyway,
         so they all map to distance 0 and every bucket serves the past.
      2. Of the buckets of one direction, the first half hold the distances 0, 1, ..., exact-1 one each.
      3. The second half cover distances exact..max_distance with boundaries spaced logarithmically; every
         distance >= max_distance shares the last bucket.
    Computed in float32 like Mesh TF and HF, so trained checkpoints keep their buckets.
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    max_exact = num_buckets // 2
    is_exact = distance < max_exact
    # The max() only keeps log() finite on the exact branch, which jnp.where discards.
    log_ratio = jnp.log(jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact) / math.log(
        max_distance / max_exact
    )
    log_bucket = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    log_bucket = jnp.minimum(log_bucket, num_buckets - 1)
    return bucket + jnp.where(is_exact, distance, log_bucket)


class RelativePositionBias(nn.Module):
    """Learned scalar bias per (bucket, head), added to the attention logits; one per stack, shared by its layers.

    Init: variance scaling (scale 1, fan_avg, uniform) over the [buckets, heads] table, as T5X/Flaxformer T5.1.1 do.
    The bias stays float32: it is added to the attention logits on the float32 softmax path.
    """

    num_buckets: int
    max_distance: int
    num_heads: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, q_len: int, k_len: int, *, bidirectional: bool, query_offset: Array | int = 0) -> Array:
        # -> [1, H, Q, K]. query_offset: the position of the first query (decoding one token at cache slot i: i);
        # keys are at positions 0 .. K - 1.
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(
                nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"), ("relpos_buckets", "heads")
            ),
            (self.num_buckets, self.num_heads),
            self.param_dtype,
        )
        query_position = query_offset + jnp.arange(q_len)[:, None]  # [Q, 1]
        key_position = jnp.arange(k_len)[None, :]  # [1, K]
        buckets = relative_position_bucket(
            key_position - query_position, bidirectional, self.num_buckets, self.max_distance
        )
        # Gather rather than a one-hot matmul: the table is tiny and the [Q, K] bucket ids are computed once per step.
        bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [Q, K, H]
        return jnp.transpose(bias, (2, 0, 1))[None]  # [1, H, Q, K]


def apply_rotary(x: Array, positions: Array, theta: float) -> Array:
    """Rotary position embedding (Su et al. 2021, RoFormer section 3.4), "rotate half" layout (GPT-NeoX, LLaMA).

    x: [B, L, N, H] queries or keys; positions: [B, L]. Feature pairs (i, i + H/2) are rotated by the angle
    position * theta^(-2i/H), so q.k depends on the positions only through their difference. Computed in float32.
    """
    half = x.shape[-1] // 2
    inverse_frequency = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [H/2]
    angle = positions.astype(jnp.float32)[:, :, None] * inverse_frequency  # [B, L, H/2]
    cos, sin = jnp.cos(angle)[:, :, None, :], jnp.sin(angle)[:, :, None, :]  # [B, L, 1, H/2]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)
