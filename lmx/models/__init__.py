"""Model registry and the model contract.

Every model in MODELS is a Flax module built from the `config.model` section and called as

    outputs = model.apply({"params": params}, batch, enable_dropout=train, rngs={"dropout": ..., "jitter": ...})

batch: the feature dict of a seqio feature converter ({name: [B, L] int32}; positions and segment ids are inputs,
so packing works with absolute and rotary positions). outputs: a dict with at least "logits" (float32) and "aux"
({name: [layers] float32}: auxiliary losses and metrics of the layers that make them, e.g. MoE routers, collected
also under scan and remat); families add their own outputs ("pooled" for encoder-only heads).
A model that carries state from one step to the next (XLNet's memory) defines `initial_carry(rows)`, takes
`carry=` and returns the next one as outputs["carry"]; lmx.step.TrainState.carry holds it between steps.
Fine-tuning (config.finetune.format="classify") builds, instead of the family's model, its classifier
(lmx.models.heads.CLASSIFIERS: the same parameters plus a `classifier_head`; outputs "logits" [B, classes]).
"""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from lmx.models.decoder_only import DecoderOnly
from lmx.models.electra import Electra
from lmx.models.encoder_decoder import EncoderDecoder
from lmx.models.encoder_only import EncoderOnly
from lmx.models.layers import dtype_of
from lmx.models.xlnet import XLNet

MODELS: dict[str, type[nn.Module]] = {
    "encoder_decoder": EncoderDecoder,  # T5.1.0, T5.1.1
    "decoder_only": DecoderOnly,  # GPT-2, GPT-3, the modern RoPE/SwiGLU/GQA decoder
    "encoder_only": EncoderOnly,  # BERT, ALBERT
    "electra": Electra,  # ELECTRA's generator and discriminator (replaced-token detection)
    "xlnet": XLNet,  # XLNet: two-stream attention, Transformer-XL memory (permutation language modelling)
}

__all__ = ["MODELS", "DecoderOnly", "Electra", "EncoderDecoder", "EncoderOnly", "XLNet", "build_model", "dtype_of"]


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
    """Returns the (unbound) model named by model_config.name; an unknown name raises with the known ones."""
    if model_config.name not in MODELS:
        raise ValueError(f"config.model.name={model_config.name!r} is unknown; choose one of {sorted(MODELS)}")
    return MODELS[model_config.name](config=model_config)
