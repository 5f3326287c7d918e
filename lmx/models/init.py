"""Parameter initialisers of each family, chosen by `config.model.init` and named by the role of the weight.

- `t5` (Mesh TF T5, T5X): kernels normal with stddev fan_in^-1/2 (the attention query also / sqrt(head_dim),
  because T5 does not scale its logits); embeddings N(0, 1).
- `normal` (BERT, GPT-2): every kernel and embedding N(0, init_stddev^2).
- `xavier` (Glorot & Bengio 2010): kernels uniform with variance 2 / (fan_in + fan_out); embeddings N(0, init_stddev^2).

`scale_residual_init` (GPT-2, Radford et al. 2019 section 2.3): the projections that write into the residual stream
(attention output, MLP output) are scaled by 1/sqrt(2 x layers), the number of residual additions.
Biases start at zero and norm scales at one in every scheme.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

Initializer = Callable[..., jax.Array]

INIT_SCHEMES = ("t5", "normal", "xavier")


@dataclasses.dataclass(frozen=True)
class Inits:
    """The initialisers of one model; built once from config.model by `Inits.of(config)`."""

    scheme: str  # one of INIT_SCHEMES
    stddev: float  # of the `normal` scheme (and of `xavier` embeddings)
    residual_scale: float  # multiplies the output projections that add into the residual stream

    @classmethod
    def of(cls, config) -> Inits:
        if config.init not in INIT_SCHEMES:
            raise ValueError(f"config.model.init={config.init!r} is unknown; choose one of {list(INIT_SCHEMES)}")
        layers = config.num_encoder_layers + config.num_decoder_layers
        residual_scale = (2 * layers) ** -0.5 if config.scale_residual_init else 1.0
        return cls(config.init, config.init_stddev, residual_scale)

    def kernel(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        *,
        t5_stddev: float | None = None,
        residual: bool = False,
    ) -> Initializer:
        """A DenseGeneral kernel [*in_shape, *out_shape]; t5_stddev overrides T5's fan_in^-1/2."""
        fan_in = math.prod(in_shape)
        scale = self.residual_scale if residual else 1.0
        if self.scheme == "t5":
            return nn.initializers.normal(stddev=scale * (fan_in**-0.5 if t5_stddev is None else t5_stddev))
        if self.scheme == "normal":
            return nn.initializers.normal(stddev=scale * self.stddev)
        in_axes = tuple(range(len(in_shape)))
        out_axes = tuple(range(len(in_shape), len(in_shape) + len(out_shape)))
        return nn.initializers.variance_scaling(
            scale**2, "fan_avg", "uniform", in_axis=in_axes, out_axis=out_axes
        )  # fan_avg: 2 / (fan_in + fan_out)

    def embedding(self) -> Initializer:
        # Mesh TF T5 draws embeddings from N(0, 1): its pre-norm stack does not care about the input scale.
        return nn.initializers.normal(stddev=1.0 if self.scheme == "t5" else self.stddev)
