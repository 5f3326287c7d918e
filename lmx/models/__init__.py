"""Model registry: `config.model.name` -> Flax module class, built from the `config.model` section."""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from lmx.models.layers import dtype_of
from lmx.models.transformer import EncoderDecoder

MODELS: dict[str, type[nn.Module]] = {
    "encoder_decoder": EncoderDecoder,
}

__all__ = ["MODELS", "EncoderDecoder", "build_model", "dtype_of"]


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
    """Returns the (unbound) model named by model_config.name; an unknown name raises with the known ones."""
    if model_config.name not in MODELS:
        raise ValueError(f"unknown model {model_config.name!r}; known: {sorted(MODELS)}")
    return MODELS[model_config.name](config=model_config)
