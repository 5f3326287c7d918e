"""Building blocks shared by every family: norms, embeddings, dense projections, (gated) MLPs, activations.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) and the main activations are constrained
to logical axes (`nn.with_logical_constraint`); `lmx.sharding` maps those names to mesh axes. Parameters are stored
in `param_dtype` (float32); computation runs in `dtype` (bfloat16 on accelerators) except where noted.
Initialisers come from `lmx.models.init.Inits` (T5, BERT/GPT normal or Xavier); the defaults here are T5's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.models.init import Inits

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


NORMS = ("rms", "layer")


class Norm(nn.Module):
    """One norm for every family, over the last axis.

    kind "rms" (T5, modern decoders): x * rsqrt(mean(x^2) + eps) * scale; no mean subtraction, no bias.
    kind "layer" (GPT-2, BERT; Ba et al. 2016): (x - mean) * rsqrt(var + eps) * scale + bias.
    The statistics are computed in float32 whatever `dtype` is: a bfloat16 mean of squares over 1k features loses
    enough precision to shift the loss.
    """

    epsilon: float
    kind: str = "rms"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        # x: [..., D]
        if self.kind not in NORMS:
            raise ValueError(f"config.model.norm={self.kind!r} is unknown; choose one of {list(NORMS)}")
        features = x.shape[-1]
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
            (features,),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        if self.kind == "layer":
            x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        y = y.astype(self.dtype) * scale.astype(self.dtype)
        if self.kind == "layer":
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
                (features,),
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


class Embed(nn.Module):
    """An embedding table [num_embeddings, features]; `attend` reuses it as an output projection (tied logits).

    Token tables are [vocab, embed]; learned position and token-type tables name their rows None (never sharded).
    """

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    # Mesh TF T5 draws embeddings from N(0, 1): the pre-norm stack does not care about the input scale.
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)
    axes: tuple[str | None, str] = ("vocab", "embed")

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, self.axes),
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
    use_bias: bool = False  # a bias over the feature dims (GPT-2, BERT), named by the last kernel axes
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
        y = y.reshape(token_shape + features)
        if self.use_bias:
            bias_axes = self.kernel_axes[len(axis) :]
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), bias_axes),
                features,
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


class Mlp(nn.Module):
    """The feed-forward block of every family: one activation -> wo(act(wi x)); several -> gated,
    wo(prod_i act_i(wi_i x)).

    T5.1.0 ("relu",); GPT-2 ("gelu",) with biases; BERT ("gelu_exact",) with biases; T5.1.1 ("gelu", "linear"),
    GEGLU; the modern decoder ("silu", "linear"), SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer").
    """

    mlp_dim: int
    activations: tuple[str, ...]
    dropout_rate: float
    use_bias: bool = False
    inits: Inits = Inits("t5", 0.02, 1.0)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        # x: [B, T, D]
        embed_dim = x.shape[-1]
        gated = len(self.activations) > 1
        h = None
        for i, name in enumerate(self.activations):
            wi = DenseGeneral(
                self.mlp_dim,
                ("embed", "mlp"),
                kernel_init=self.inits.kernel((embed_dim,), (self.mlp_dim,)),
                use_bias=self.use_bias,
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
            kernel_init=self.inits.kernel((self.mlp_dim,), (embed_dim,), residual=True),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="wo",
        )(h)
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))
