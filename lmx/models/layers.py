"""Building blocks of the T5-family models: norms, embeddings, dense projections, (gated) MLPs, relative positions.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) and the main activations are constrained
to logical axes (`nn.with_logical_constraint`); `lmx.sharding` maps those names to mesh axes. Parameters are stored
in `param_dtype` (float32); computation runs in `dtype` (bfloat16 on accelerators) except where noted.

Initialisers follow Mesh TensorFlow's T5 (which T5.1.1 was trained with): every kernel is normal with stddev
fan_in**-0.5, the attention query additionally divided by sqrt(head_dim) because T5 does not scale logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]

# Activation name -> function. "gelu" is the tanh approximation, which is what T5.1.1 (Mesh TF) and HF's gelu_new use.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}


# Config dtype name -> jnp dtype of activations/compute (parameters are always float32).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_of(name: str) -> jnp.dtype:
    """Returns the jnp dtype called `name` ("float32" or "bfloat16"); an unknown name raises with the valid ones."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {sorted(DTYPES)}")
    return DTYPES[name]


def activation(name: str) -> Callable[[Array], Array]:
    """Returns the activation called `name`; an unknown name raises with the list of known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class RMSNorm(nn.Module):
    """Scale-only RMS norm of T5: x * rsqrt(mean(x^2) + eps) * scale, with no mean subtraction and no bias.

    The statistics are computed in float32 whatever `dtype` is: a bfloat16 mean of squares over 1k features loses
    enough precision to shift the loss.
    """

    epsilon: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        # x: [..., D]
        features = x.shape[-1]
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
            (features,),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(mean_square + self.epsilon)
        return y.astype(self.dtype) * scale.astype(self.dtype)


class Embed(nn.Module):
    """Token embedding table [vocab, embed]; `attend` reuses it as an output projection (tied logits)."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    # Mesh TF T5 draws embeddings from N(0, 1): the pre-norm stack does not care about the input scale.
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: Array) -> Array:
        # ids: [B, T] int -> [B, T, D]
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"Embed expects integer token ids, got {ids.dtype}")
        # jnp.take fills out-of-range ids with NaN: a vocabulary larger than vocab_size fails loudly.
        x = jnp.take(self.embedding.astype(self.dtype), ids, axis=0)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def attend(self, x: Array) -> Array:
        # x: [B, T, D] -> logits [B, T, V]
        # As in DenseGeneral: one [tokens, embed] x [embed, vocab] matmul, so the table's gradient is a single matmul.
        tokens = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        logits = jnp.dot(tokens, self.embedding.astype(self.dtype).T).reshape(x.shape[:-1] + (self.num_embeddings,))
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def _normalize_axes(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(a % ndim for a in axes)


class DenseGeneral(nn.Module):
    """A bias-free linear map contracting `axis` of the input with the leading kernel dims.

    kernel: in_shape[axis] + features, with logical names `kernel_axes` (one per kernel dim). For example the
    attention query is features=(heads, head_dim), axis=-1, kernel [embed, heads, kv]; the attention output is
    features=embed, axis=(-2, -1), kernel [heads, kv, embed].
    """

    features: int | tuple[int, ...]
    kernel_axes: tuple[str, ...]
    axis: int | tuple[int, ...] = -1
    kernel_init: Initializer = nn.initializers.lecun_normal()
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        axis = _normalize_axes((self.axis,) if isinstance(self.axis, int) else self.axis, x.ndim)
        kernel_shape = tuple(x.shape[a] for a in axis) + features
        if len(self.kernel_axes) != len(kernel_shape):
            raise ValueError(f"kernel_axes {self.kernel_axes} do not name every dim of kernel {kernel_shape}")
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes), kernel_shape, self.param_dtype
        )
        # Contracted dims move last, then every other input dim is merged into one token dim and the contracted dims
        # (and the feature dims) into one each: a plain [tokens, in] x [in, out] matmul. The backward pass then
        # computes the kernel gradient as one [in, tokens] x [tokens, out] matmul; left as a dot_general over
        # [batch, length] (two contracting dims), XLA:CPU materialises transposed copies of the activations and
        # their gradients for it and the t5_small train step runs ~1.3x slower (BENCHMARKS.md).
        kept = tuple(d for d in range(x.ndim) if d not in axis)
        if axis != tuple(range(x.ndim - len(axis), x.ndim)):
            x = jnp.transpose(x, kept + axis)
        token_shape = tuple(x.shape[: len(kept)])
        x2 = x.reshape(math.prod(token_shape), -1)  # [tokens, in]
        kernel2 = kernel.reshape(x2.shape[1], -1)  # [in, out]
        y = jnp.dot(x2.astype(self.dtype), kernel2.astype(self.dtype))  # [tokens, out]
        return y.reshape(token_shape + features)


class Mlp(nn.Module):
    """T5 feed-forward block: one activation -> wo(act(wi x)); several -> gated, wo(prod_i act_i(wi_i x)).

    T5.1.1 uses ("gelu", "linear"): GEGLU of Shazeer 2020, "GLU Variants Improve Transformer".
    """

    mlp_dim: int
    activations: tuple[str, ...]
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        # x: [B, T, D]
        embed_dim = x.shape[-1]
        wi_init = nn.initializers.normal(stddev=embed_dim**-0.5)
        wo_init = nn.initializers.normal(stddev=self.mlp_dim**-0.5)
        gated = len(self.activations) > 1
        h = None
        for i, name in enumerate(self.activations):
            wi = DenseGeneral(
                self.mlp_dim,
                ("embed", "mlp"),
                kernel_init=wi_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"wi_{i}" if gated else "wi",
            )
            branch = activation(name)(wi(x))  # [B, T, F]
            h = branch if h is None else h * branch
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        out = DenseGeneral(
            embed_dim,
            ("mlp", "embed"),
            kernel_init=wo_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="wo",
        )(h)
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))


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
    def __call__(self, q_len: int, k_len: int, *, bidirectional: bool) -> Array:
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(
                nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"), ("relpos_buckets", "heads")
            ),
            (self.num_buckets, self.num_heads),
            self.param_dtype,
        )
        query_position = jnp.arange(q_len)[:, None]  # [Q, 1]
        key_position = jnp.arange(k_len)[None, :]  # [1, K]
        buckets = relative_position_bucket(
            key_position - query_position, bidirectional, self.num_buckets, self.max_distance
        )
        # Gather rather than a one-hot matmul: the table is tiny and the [Q, K] bucket ids are computed once per step.
        bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [Q, K, H]
        return jnp.transpose(bias, (2, 0, 1))[None]  # [1, H, Q, K]
