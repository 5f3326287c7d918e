"""XLNet's layer (Yang et al. 2019): two-stream self-attention with Transformer-XL relative positions and segment
encodings, over the hidden states of the current segment and of the memory.

Every layer runs two streams with one set of weights (section 2.3, "Two-Stream Self-Attention"):
  content stream h [B, L, D]: queries at every position; the usual Transformer representation (a token sees itself);
  query stream   g [B, P, D]: queries only at the P predicted positions; it knows its position but never its own
                 token, so it can predict it. Both read keys and values of the *content* stream (and the memory).
Attention score of query i and key j (Transformer-XL, Dai et al. 2019 section 3.3; XLNet section 2.5):
    ( (q_i + u) . k_j                     content:  u = `content_bias`   (r_w_bias in the released code)
    + (q_i + v) . W_r R(i - j)            position: v = `position_bias`  (r_r_bias), R = sinusoid of the distance
    + (q_i + s) . e_{s_ij} ) / sqrt(H)    segment:  s = `segment_bias`   (r_s_bias), e_0 / e_1 = `segment_embedding`
                                                    of "same" / "different" token type, only when types are given.
then the mask (a bias), softmax, the weighted sum of values and the output projection; post-LayerNorm residuals
around the attention and the MLP, as in BERT.

Positions: the queries of the current segment sit at absolute positions M .. M + L - 1 after the M memory slots, so
the distance i - j of a query and a key takes the R = M + 2L - 1 values M + L - 1, ..., -(L - 1). The position keys
W_r R(d) are computed once per layer for those R distances ([R, N, H], shared by all rows), their scores against all
queries ([B, N, Q, R]) and each query's K = M + L entries picked out: by `skew` (a reshape, for the content stream's
consecutive queries) or a gather (the query stream's scattered target positions).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.init import Inits
from lmx.models.layers import DenseGeneral, Mlp, Norm, dtype_of

Array = jax.Array


def distances(memory_len: int, length: int) -> Array:
    """[M + 2L - 1] the query-key distances i - j of a segment of `length` after `memory_len` memory slots,
    descending: row r holds distance M + L - 1 - r (the order `skew` and `query_index` assume)."""
    return memory_len + length - 1 - jnp.arange(memory_len + 2 * length - 1)


def sinusoid(distance: Array, dim: int) -> Array:
    """[R] distances -> [R, dim] float32: [sin(d f_0), .., sin(d f_{dim/2-1}), cos(d f_0), ..], f_k = 10000^(-2k/dim)
    (Vaswani et al. 2017's encoding, sines then cosines as Transformer-XL and XLNet lay them out)."""
    inverse_frequency = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))  # [dim / 2]
    angle = distance.astype(jnp.float32)[:, None] * inverse_frequency[None, :]  # [R, dim / 2]
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def skew(scores: Array, key_len: int) -> Array:
    """[..., Q, R] scores of Q consecutive queries against the R descending distances -> [..., Q, K] by key.

    Query i (at absolute position M + i) and key j are at distance M + i - j, row L - 1 - i + j of `distances`
    (Q = L, R = K + L - 1), so out[i, j] = scores[i, L - 1 - i + j]. With one zero column appended, that entry sits
    at flat index (L - 1) + i R + j of the scores: dropping the first L - 1 flat entries and reading rows of R gives
    it at [i, j]. A reshape and a slice, no gather (Transformer-XL's "relative shift").
    """
    *lead, q_len, r_len = scores.shape
    padded = jnp.pad(scores, [(0, 0)] * len(lead) + [(0, 0), (0, 1)])  # [..., Q, R + 1]
    flat = padded.reshape(*lead, q_len * (r_len + 1))[..., q_len - 1 : q_len - 1 + q_len * r_len]
    return flat.reshape(*lead, q_len, r_len)[..., :key_len]


def query_index(target_positions: Array, length: int, key_len: int) -> Array:
    """[B, P, K] the row of `distances` for a query at each target position t and each key j: L - 1 - t + j."""
    return (length - 1 - target_positions)[:, :, None] + jnp.arange(key_len)[None, None, :]


class TwoStreamAttention(nn.Module):
    """Relative multi-head attention of both streams (module docstring): projections query/key/value/position
    [embed, heads, kv] and out [heads, kv, embed] without biases, the biases u, v, s [heads, kv] and the segment
    embedding [2, heads, kv]."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(
        self, h: Array, g: Array | None, memory: Array | None, context: dict, *, deterministic: bool
    ) -> tuple[Array, Array | None]:
        # h: [B, L, D]; g: [B, P, D] or None; memory: [B, M, D] or None -> attention outputs [B, L, D], [B, P, D]
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        inits = Inits.of(cfg)
        embed_dim, heads, head_dim = h.shape[-1], cfg.num_heads, cfg.head_dim

        def projection(name):
            return DenseGeneral(
                (heads, head_dim),
                ("embed", "heads", "kv"),
                kernel_init=inits.kernel((embed_dim,), (heads, head_dim)),
                dtype=dtype,
                name=name,
            )

        def vector(name, shape, axes):  # XLNet draws these from N(0, init_stddev^2) like its kernels
            init = nn.with_logical_partitioning(nn.initializers.normal(cfg.init_stddev), axes)
            return self.param(name, init, shape, jnp.float32).astype(dtype)

        biases = {
            "content": vector("content_bias", (heads, head_dim), ("heads", "kv")),  # u
            "position": vector("position_bias", (heads, head_dim), ("heads", "kv")),  # v
            "segment": vector("segment_bias", (heads, head_dim), ("heads", "kv")),  # s
        }
        segment_embedding = vector("segment_embedding", (2, heads, head_dim), (None, "heads", "kv"))

        keys_in = h if memory is None else jnp.concatenate([memory.astype(h.dtype), h], axis=1)  # [B, K, D]
        key = projection("key")(keys_in)  # [B, K, N, H]
        value = projection("value")(keys_in)  # [B, K, N, H]
        key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))
        position_key = projection("position")(context["positions"])  # [R, N, H]
        query = projection("query")
        attend = dict(
            key=key,
            value=value,
            position_key=position_key,
            biases=biases,
            segment_embedding=segment_embedding,
            deterministic=deterministic,
        )
        out_h = self._attend(query(h), context["content_bias"], None, context["content_types"], **attend)
        out_g = None
        if g is not None:
            index = context["query_index"]
            out_g = self._attend(query(g), context["query_bias"], index, context["query_types"], **attend)
        out = DenseGeneral(
            embed_dim,
            ("heads", "kv", "embed"),
            axis=(-2, -1),
            kernel_init=inits.kernel((heads, head_dim), (embed_dim,), residual=True),
            dtype=dtype,
            name="out",
        )
        out_h = nn.with_logical_constraint(out(out_h), ("batch", "length", "embed"))
        if out_g is not None:
            out_g = nn.with_logical_constraint(out(out_g), ("batch", "length", "embed"))
        return out_h, out_g

    def _attend(
        self,
        query: Array,
        bias: Array,
        index: Array | None,
        different_types: Array | None,
        *,
        key: Array,
        value: Array,
        position_key: Array,
        biases: dict,
        segment_embedding: Array,
        deterministic: bool,
    ) -> Array:
        """query [B, Q, N, H]; bias [B, 1, Q, K] (the mask); index [B, Q, K] rows of `distances` (None: consecutive
        queries, `skew`); different_types [B, Q, K] bool or None -> [B, Q, N, H]."""
        cfg = self.config
        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        f32 = jnp.float32
        scores = jnp.einsum("BQNH,BKNH->BNQK", query + biases["content"], key).astype(f32)
        by_distance = jnp.einsum("BQNH,RNH->BNQR", query + biases["position"], position_key).astype(f32)
        if index is None:
            scores = scores + skew(by_distance, key.shape[1])
        else:
            scores = scores + jnp.take_along_axis(by_distance, index[:, None], axis=-1)
        if different_types is not None:
            by_type = jnp.einsum("BQNH,SNH->BNQS", query + biases["segment"], segment_embedding).astype(f32)
            scores = scores + jnp.where(different_types[:, None], by_type[..., 1:], by_type[..., :1])
        if cfg.scale_attention_logits:
            scores = scores * cfg.head_dim**-0.5
        probs = jax.nn.softmax(scores + bias, axis=-1).astype(query.dtype)  # [B, N, Q, K]
        probs = nn.Dropout(cfg.dropout_rate)(probs, deterministic=deterministic)
        return jnp.einsum("BNQK,BKNH->BQNH", probs, value)


class XLNetLayer(nn.Module):
    """One layer of both streams: attention -> post-LayerNorm residual -> MLP -> post-LayerNorm residual, the same
    weights for h and g. Returns ((h, g), the memory of this layer for the next segment).

    The next memory is the last mem_len positions of [this memory; this layer's input h] (Transformer-XL section
    3.2: the cached states of the previous segment, with the gradient stopped), as XLNet caches each layer's input.
    """

    config: ml_collections.ConfigDict
    deterministic: bool

    @nn.compact
    def __call__(
        self, streams: tuple[Array, Array | None], memory: Array | None, context: dict
    ) -> tuple[tuple[Array, Array | None], Array | None]:
        # streams: h [B, L, D], g [B, P, D] or None; memory: [B, M, D] or None
        h, g = streams
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        next_memory = None
        if cfg.mem_len:
            previous = jnp.zeros((h.shape[0], cfg.mem_len, h.shape[2]), h.dtype) if memory is None else memory
            cached = jnp.concatenate([previous, h.astype(previous.dtype)], axis=1)[:, -cfg.mem_len :]
            next_memory = jax.lax.stop_gradient(cached)  # [B, M, D]
        dropout = nn.Dropout(cfg.dropout_rate)
        attention_norm = Norm(cfg.norm_epsilon, cfg.norm, dtype, name="post_self_attention_layer_norm")
        mlp = Mlp(
            cfg.mlp_dim,
            tuple(cfg.mlp_activations),
            cfg.dropout_rate,
            use_bias=cfg.use_bias,
            inits=Inits.of(cfg),
            dtype=dtype,
            name="mlp",
        )
        mlp_norm = Norm(cfg.norm_epsilon, cfg.norm, dtype, name="post_mlp_layer_norm")

        def feed_forward(x):
            out = mlp(x, deterministic=self.deterministic)
            return mlp_norm(x + dropout(out, deterministic=self.deterministic))

        out_h, out_g = TwoStreamAttention(cfg, name="self_attention")(
            h, g, memory, context, deterministic=self.deterministic
        )
        h = feed_forward(attention_norm(h + dropout(out_h, deterministic=self.deterministic)))
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        if g is not None:
            g = feed_forward(attention_norm(g + dropout(out_g, deterministic=self.deterministic)))
            g = nn.with_logical_constraint(g, ("batch", "length", "embed"))
        return (h, g), next_memory
