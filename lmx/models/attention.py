"""Multi-head dot-product attention of T5 and the masks that keep padding and packed examples apart.

Masks are boolean [B or 1, 1, Q, K] arrays (True = may attend), combined with `combine_masks` and turned into an
additive float32 bias with `mask_to_bias`. Packing puts several examples in one row; their segment ids (1, 2, ...;
0 = padding) keep attention inside each example.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.models.layers import DenseGeneral

Array = jax.Array

# Additive bias of a masked logit. Finite (not -inf) so a fully masked row (a padding query) gives a uniform
# softmax instead of NaNs; large enough that exp() underflows to exactly 0 next to any real logit.
MASK_BIAS = -1e10


def make_attention_mask(query_segment_ids: Array, key_segment_ids: Array) -> Array:
    """[B, Q], [B, K] segment ids -> [B, 1, Q, K]: True where both are the same segment and neither is padding (0)."""
    q = query_segment_ids[:, None, :, None]
    k = key_segment_ids[:, None, None, :]
    return (q == k) & (q != 0) & (k != 0)


def make_causal_mask(length: int) -> Array:
    """[1, 1, L, L]: True where the key is at or before the query."""
    position = jnp.arange(length)
    return (position[None, :] <= position[:, None])[None, None]


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of the given boolean masks (broadcast); None entries are ignored, all None gives None."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_and(out, m)
    return out


def mask_to_bias(mask: Array) -> Array:
    """Boolean mask -> additive float32 bias (0 where allowed, MASK_BIAS where masked), same shape."""
    return jnp.where(mask, 0.0, MASK_BIAS).astype(jnp.float32)


@jax.custom_vjp
def add_position_bias(mask_bias: Array, position_bias: Array) -> Array:
    """[B or 1, 1, Q, K] mask bias + [1, N, Q, K] position bias -> the [B or 1, N, Q, K] attention bias."""
    return mask_bias + position_bias


def _add_position_bias_fwd(mask_bias: Array, position_bias: Array):
    return mask_bias + position_bias, mask_bias.shape[0]


def _add_position_bias_bwd(mask_rows: int, grad: Array) -> tuple[Array, Array]:
    # grad: [B, N, Q, K]. The position bias gradient sums it over the batch rows. Written as a dot with a vector of
    # ones: XLA:CPU runs the plain reduce over the leading axis at under 1 GB/s, ~1 s of a t5_small train step.
    ones = jnp.ones((grad.shape[0],), grad.dtype)
    d_position = jnp.einsum("b,bnqk->nqk", ones, grad)[None]  # [1, N, Q, K]
    d_mask = jnp.sum(grad, axis=1, keepdims=True)  # [B, 1, Q, K]; a constant's gradient, dropped by XLA
    if mask_rows != grad.shape[0]:
        d_mask = jnp.sum(d_mask, axis=0, keepdims=True)
    return d_mask, d_position


add_position_bias.defvjp(_add_position_bias_fwd, _add_position_bias_bwd)


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    bias: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
    dtype: jnp.dtype = jnp.float32,
) -> Array:
    """softmax(q k^T + bias) v per head, with no 1/sqrt(head_dim): T5 folds that factor into the query init.

    query: [B, Q, N, H]; key, value: [B, K, N, H]; bias: broadcastable to [B, N, Q, K]. Returns [B, Q, N, H].
    The logits go to float32 before the bias and softmax, so a bfloat16 model still normalises exactly.
    """
    logits = jnp.einsum("BQNH,BKNH->BNQK", query.astype(dtype), key.astype(dtype))
    logits = logits.astype(jnp.float32)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)  # [B, N, Q, K]
    if not deterministic and dropout_rate > 0.0:
        if dropout_rng is None:
            raise ValueError("dropout_rng is required when attention dropout is active")
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(dtype)
    return jnp.einsum("BNQK,BKNH->BQNH", probs, value.astype(dtype))


class MultiHeadAttention(nn.Module):
    """T5 attention: q, k, v projections [embed, heads, kv], attention, output projection [heads, kv, embed].

    Init (Mesh TF T5): q ~ N(0, (embed*head_dim)^-1/2): the usual fan-in scale times the 1/sqrt(head_dim) that
    the logits skip; k, v ~ N(0, embed^-1/2); out ~ N(0, (heads*head_dim)^-1/2).
    """

    num_heads: int
    head_dim: int
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array | None, *, deterministic: bool) -> Array:
        # inputs_q: [B, Q, D]; inputs_kv: [B, K, D]; bias: broadcastable to [B, N, Q, K].
        embed_dim = inputs_q.shape[-1]
        normal = nn.initializers.normal

        def projection(name, stddev):
            return DenseGeneral(
                (self.num_heads, self.head_dim),
                ("embed", "heads", "kv"),
                kernel_init=normal(stddev=stddev),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        query = projection("query", (embed_dim * self.head_dim) ** -0.5)(inputs_q)  # [B, Q, N, H]
        key = projection("key", embed_dim**-0.5)(inputs_kv)  # [B, K, N, H]
        value = projection("value", embed_dim**-0.5)(inputs_kv)  # [B, K, N, H]
        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))

        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        x = dot_product_attention(
            query,
            key,
            value,
            bias,
            dropout_rate=self.dropout_rate,
            dropout_rng=dropout_rng,
            deterministic=deterministic,
            dtype=self.dtype,
        )  # [B, Q, N, H]
        x = nn.with_logical_constraint(x, ("batch", "length", "heads", "kv"))
        out = DenseGeneral(
            embed_dim,
            ("heads", "kv", "embed"),
            axis=(-2, -1),
            kernel_init=normal(stddev=(self.num_heads * self.head_dim) ** -0.5),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(x)  # [B, Q, D]
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))
