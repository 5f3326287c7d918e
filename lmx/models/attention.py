"""Multi-head attention of every family (T5, GPT-2/3, BERT, the modern GQA/RoPE decoder) and its masks.

Masks are boolean [B or 1, 1, Q, K] arrays (True = may attend), combined with `combine_masks` and turned into an
additive float32 bias with `mask_to_bias`. Packing puts several examples in one row; their segment ids (1, 2, ...;
0 = padding) keep attention inside each example. Locally banded layers (GPT-3) never build a [Q, K] mask: they
compute only the band, blockwise (`banded_attention`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.models.init import Inits
from lmx.models.layers import DenseGeneral
from lmx.models.positions import apply_rotary

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


def self_attention_mask(segment_ids: Array, *, causal: bool, prefix: Array | None = None) -> Array:
    """[B, 1, L, L] boolean self-attention mask of one stream: same segment, not padding, and (causal) not the future.

    prefix [B, L] (a decoder trained as a prefix LM, T5 section 3.2.1): positions marked True attend to each other
    in both directions; everything else stays causal.
    """
    mask = make_attention_mask(segment_ids, segment_ids)
    if causal:
        allowed = make_causal_mask(segment_ids.shape[1])
        if prefix is not None:
            prefix = prefix.astype(bool)
            allowed = allowed | (prefix[:, None, :, None] & prefix[:, None, None, :])
        mask = mask & allowed
    return mask


def cached_self_attention_mask(key_mask: Array, cache_index: Array, q_len: int, prefix: Array | None = None) -> Array:
    """[B, 1, Q, C] mask of Q queries written at cache slots cache_index .. cache_index + Q - 1 (decoding).

    key_mask [B, C]: the slots that hold a real token (left padding and empty slots are False; the caller marks
    this call's tokens). Causal over slots; prefix [B, C] (a prefix LM's prompt) attends both ways within itself.
    """
    query_slot = cache_index + jnp.arange(q_len)  # [Q]
    allowed = jnp.arange(key_mask.shape[1])[None, :] <= query_slot[:, None]  # [Q, C]
    allowed = jnp.broadcast_to(allowed, (key_mask.shape[0], q_len, key_mask.shape[1]))  # [B, Q, C]
    if prefix is not None:
        query_prefix = jax.lax.dynamic_slice_in_dim(prefix, cache_index, q_len, axis=1)  # [B, Q]
        allowed = allowed | (query_prefix[:, :, None] & prefix[:, None, :])
    return (allowed & key_mask[:, None, :])[:, None]


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


def _dropout(probs: Array, rate: float, rng: Array | None, deterministic: bool) -> Array:
    if deterministic or rate == 0.0:
        return probs
    if rng is None:
        raise ValueError("dropout_rng is required when attention dropout is active")
    keep = jax.random.bernoulli(rng, 1.0 - rate, probs.shape)
    return jnp.where(keep, probs / (1.0 - rate), 0.0).astype(probs.dtype)


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
    """softmax(q k^T + bias) v per head. The caller scales q (T5 folds 1/sqrt(head_dim) into the query's init).

    query: [B, Q, N, H]; key, value: [B, K, M, H] with M dividing N (M < N: grouped-query attention, Ainslie et
    al. 2023: query head n reads key/value head n // (N / M)); bias: broadcastable to [B, N, Q, K].
    Returns [B, Q, N, H]. The logits go to float32 before the bias and softmax, so a bfloat16 model still
    normalises exactly.
    """
    batch, q_len, num_heads, head_dim = query.shape
    kv_heads = key.shape[2]
    groups = num_heads // kv_heads
    query = query.reshape(batch, q_len, kv_heads, groups, head_dim)  # [B, Q, M, G, H]
    logits = jnp.einsum("BQMGH,BKMH->BMGQK", query.astype(dtype), key.astype(dtype)).astype(jnp.float32)
    if bias is not None:
        bias = bias.astype(jnp.float32)
        # [B|1, N|1, Q, K] -> [B|1, M|1, G|1, Q, K]
        bias = bias.reshape(bias.shape[0], *((kv_heads, groups) if bias.shape[1] > 1 else (1, 1)), *bias.shape[2:])
        logits = logits + bias
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)  # [B, M, G, Q, K]
    probs = _dropout(probs, dropout_rate, dropout_rng, deterministic)
    out = jnp.einsum("BMGQK,BKMH->BQMGH", probs, value.astype(dtype))
    return out.reshape(batch, q_len, num_heads, head_dim)


def banded_attention(
    query: Array,
    key: Array,
    value: Array,
    segment_ids: Array,
    band: int,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
    dtype: jnp.dtype = jnp.float32,
) -> Array:
    """Causal self-attention restricted to a band: query i sees keys i - band + 1 .. i (GPT-3's "locally banded
    sparse attention", Brown et al. 2020 section 2.1, after Child et al. 2019), computed blockwise.

    query: [B, L, N, H]; key, value: [B, L, M, H]; segment_ids: [B, L] (0 = padding). Steps:
      1. Pad L up to a multiple of the band and cut it into blocks of `band` positions.
      2. Block b's queries can only see keys in blocks b - 1 and b: stack those two as its keys ([2 band]).
      3. Mask keys outside the band, in the future, in another segment, or padding; softmax; weighted sum.
    Work and memory grow as L x 2 band, not L^2.
    """
    batch, length, num_heads, head_dim = query.shape
    kv_heads, groups = key.shape[2], num_heads // key.shape[2]
    # A band as long as the row is plain causal attention: blocks of `length` then do that work once instead of
    # padding the row up to one block of `band` (a 32-token debug row would otherwise compute 256 x 512 logits).
    band = min(band, length)
    blocks = -(-length // band)
    pad = blocks * band - length

    def blocked(x):  # [B, L, ...] -> [B, blocks, band, ...]
        x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return x.reshape(batch, blocks, band, *x.shape[2:])

    def with_previous(x):  # [B, blocks, band, ...] -> [B, blocks, 2 band, ...]: block b - 1, then block b
        previous = jnp.pad(x, ((0, 0), (1, 0)) + ((0, 0),) * (x.ndim - 2))[:, :-1]
        return jnp.concatenate([previous, x], axis=2)

    q = blocked(query).reshape(batch, blocks, band, kv_heads, groups, head_dim)  # [B, C, W, M, G, H]
    k, v = with_previous(blocked(key)), with_previous(blocked(value))  # [B, C, 2W, M, H]
    q_segments = blocked(segment_ids)  # [B, C, W]
    k_segments = with_previous(q_segments)  # [B, C, 2W] (the zero-padded block before the first is padding)
    q_pos = jnp.arange(band)[:, None] + band  # position inside the [2W] key window
    k_pos = jnp.arange(2 * band)[None, :]
    in_band = (k_pos <= q_pos) & (k_pos > q_pos - band)  # [W, 2W]
    same = (q_segments[..., :, None] == k_segments[..., None, :]) & (q_segments[..., :, None] != 0)
    mask = in_band & same & (k_segments[..., None, :] != 0)  # [B, C, W, 2W]

    logits = jnp.einsum("BCQMGH,BCKMH->BCMGQK", q.astype(dtype), k.astype(dtype)).astype(jnp.float32)
    logits = jnp.where(mask[:, :, None, None], logits, MASK_BIAS)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)  # [B, C, M, G, W, 2W]
    probs = _dropout(probs, dropout_rate, dropout_rng, deterministic)
    out = jnp.einsum("BCMGQK,BCKMH->BCQMGH", probs, v.astype(dtype))
    return out.reshape(batch, blocks * band, num_heads, head_dim)[:, :length]


class MultiHeadAttention(nn.Module):
    """q, k, v projections [embed, heads, kv], attention, output projection [heads, kv, embed].

    - `num_kv_heads` < `num_heads`: grouped-query attention (key/value kernels [embed, kv_heads, kv]).
    - `scale_logits`: multiply q by head_dim^-1/2 (all families but T5, whose init folds that factor into q).
    - `rotary_theta` > 0: rotary embedding of q and k at the given positions.
    - `band` > 0: causal, locally banded self-attention (needs the segment ids; no bias).
    Init (`Inits`, T5 scheme): q ~ N(0, (embed*head_dim)^-1/2); k, v ~ N(0, embed^-1/2);
    out ~ N(0, (heads*head_dim)^-1/2), scaled for the residual stream where the family asks (GPT-2).
    """

    num_heads: int
    head_dim: int
    dropout_rate: float
    num_kv_heads: int = 0  # 0: num_heads
    use_bias: bool = False
    scale_logits: bool = False
    rotary_theta: float = 0.0
    inits: Inits = Inits("t5", 0.02, 1.0)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        bias: Array | None,
        *,
        deterministic: bool,
        positions: Array | None = None,
        band: int = 0,
        segment_ids: Array | None = None,
        decode: bool = False,
        cache_index: Array | None = None,
    ) -> Array:
        # inputs_q: [B, Q, D]; inputs_kv: [B, K, D]; bias: broadcastable to [B, N, Q, K]; positions: [B, Q] (= K:
        # rotary is for self-attention); segment_ids: [B, Q] for banded attention.
        # decode (lmx.inference.decode): keys and values live in the "cache" collection. Self-attention
        # (inputs_kv is inputs_q) writes this call's Q keys/values at slots cache_index .. cache_index + Q - 1 of a
        # [B, C, M, H] cache and attends over all C slots; `bias` [B, 1|N, Q, C] masks the empty and future ones.
        # Cross-attention computes the encoder's keys/values once (the call that passes inputs_kv) and reads them
        # back when inputs_kv is None.
        embed_dim = inputs_q.shape[-1]
        kv_heads = self.num_kv_heads or self.num_heads
        self_attention = inputs_kv is inputs_q

        def projection(name, heads, t5_stddev=None):
            return DenseGeneral(
                (heads, self.head_dim),
                ("embed", "heads", "kv"),
                kernel_init=self.inits.kernel((embed_dim,), (heads, self.head_dim), t5_stddev=t5_stddev),
                use_bias=self.use_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        query = projection("query", self.num_heads, (embed_dim * self.head_dim) ** -0.5)(inputs_q)  # [B, Q, N, H]
        if decode and inputs_kv is None:  # cross-attention after the first decode call: the cached encoder keys
            key, value = self.variable("cache", "cached_key").value, self.variable("cache", "cached_value").value
        else:
            key = projection("key", kv_heads)(inputs_kv)  # [B, K, M, H]
            value = projection("value", kv_heads)(inputs_kv)  # [B, K, M, H]
        if self.rotary_theta > 0:
            query = apply_rotary(query, positions, self.rotary_theta)
            key = apply_rotary(key, positions, self.rotary_theta)
        if decode and inputs_kv is not None:
            key, value = self._cache(key, value, cache_index if self_attention else None)  # [B, C, M, H]
            if band:  # the band in cache slots: the query at slot i sees slots i - band + 1 .. i
                query_slot = cache_index + jnp.arange(query.shape[1])[:, None]  # [Q, 1]
                in_band = jnp.arange(key.shape[1])[None, :] > query_slot - band  # [Q, C]
                bias = bias + jnp.where(in_band, 0.0, MASK_BIAS)[None, None]
                band = 0  # attention over the cache is dense, masked
        if self.scale_logits:
            query = query * jnp.asarray(self.head_dim**-0.5, query.dtype)
        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))

        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        common = dict(
            dropout_rate=self.dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic, dtype=self.dtype
        )
        if band:
            x = banded_attention(query, key, value, segment_ids, band, **common)  # [B, Q, N, H]
        else:
            x = dot_product_attention(query, key, value, bias, **common)  # [B, Q, N, H]
        x = nn.with_logical_constraint(x, ("batch", "length", "heads", "kv"))
        out = DenseGeneral(
            embed_dim,
            ("heads", "kv", "embed"),
            axis=(-2, -1),
            kernel_init=self.inits.kernel((self.num_heads, self.head_dim), (embed_dim,), residual=True),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(x)  # [B, Q, D]
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))

    def _cache(self, key: Array, value: Array, index: Array | None) -> tuple[Array, Array]:
        """Writes key/value [B, Q, M, H] into the "cache" collection at slot `index` (self-attention) or replaces
        the whole cache (index None: the encoder's keys, computed once); returns the cache [B, C, M, H] after the write.

        The variables are created with this call's shape, so the first call (lmx.inference.decode.init_cache, on
        an input of the full cache length) fixes C."""
        cached = []
        for name, new in (("cached_key", key), ("cached_value", value)):
            variable = self.variable("cache", name, jnp.zeros, new.shape, new.dtype)
            if index is None or variable.value.shape == new.shape:
                variable.value = new
            else:
                start = (0, jnp.asarray(index, jnp.int32), 0, 0)
                variable.value = jax.lax.dynamic_update_slice(variable.value, new.astype(variable.value.dtype), start)
            cached.append(nn.with_logical_constraint(variable.value, ("batch", "length", "heads", "kv")))
        return cached[0], cached[1]
