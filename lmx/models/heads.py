"""Sequence classification and regression heads on a pretrained body, for fine-tuning (`config.finetune.format =
"classify"`).

Each classifier is its pretraining family's model class with one more subtree: the parameters it shares with
pretraining keep their pretraining names, so `config.checkpoint.init_from` reads the body unchanged from a pretraining
checkpoint (lmx.checkpoint.restore_init_from) and only `classifier_head` (HEAD) starts fresh. The checkpoint's
pretraining heads that a classifier never calls (the MLM head, ELECTRA's generator and replaced-token head, T5's
decoder, XLNet's query stream) are not among its parameters and are not read.

| config.model.name | representation [B, D]                                  | head (`classifier_head`)             |
|-------------------|--------------------------------------------------------|---------------------------------------|
| encoder_only      | BERT's pretrained pooler: tanh(dense(h[CLS]))          | dropout -> dense(C) (BERT 4.1)        |
| electra           | the discriminator's first token h[CLS] (its encoder)   | dense(D), GELU, dropout, dense(C) (1) |
| encoder_decoder   | T5's encoder output averaged over the non-pad tokens   | dropout -> dense(C)                   |
| xlnet             | XLNet's last-token summary (content stream, no memory) | dense(D), tanh, dropout, dense(C) (2) |
(1) Hugging Face's ElectraClassificationHead (without its dropout on the input); (2) XLNet's sequence summary
("last", projected, tanh) and its logits layer.

C = the task's classes, or 1 for a regression (STS-B: the score itself, trained by mean squared error). The head has
its own initialisation, whatever `config.model.init` says: kernels N(0, 0.02^2), biases zero (BERT's, ELECTRA's and
XLNet's fine-tuning heads all use it), and its own dropout rate (`config.finetune.head_dropout`); the body keeps
`config.model.dropout_rate`. Outputs: {"logits": [B, C] float32, "aux": the body's}.

Parameter trees (scan_layers=False shown; each is the pretraining tree's subset plus the head):
  encoder_only     embedder/..., encoder/layers_i/..., pooler/{kernel, bias}, mlm_bias, classifier_head/output
  electra          discriminator/embedder/..., discriminator/encoder/layers_i/...,
                   classifier_head/{hidden, output}
  encoder_decoder  token_embedder/embedding, encoder/{relpos_bias, layers_i, encoder_norm}, classifier_head/output
  xlnet            token_embedder/embedding, mask_embedding, output_bias, encoder/layers_i/...,
                   classifier_head/{hidden, output}
(`mlm_bias`, `mask_embedding` and `output_bias` are parameters the families create in setup; they are read from the
checkpoint and get no gradient.)
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.attention import mask_to_bias, self_attention_mask
from lmx.models.electra import Electra
from lmx.models.embeddings import stream_inputs
from lmx.models.encoder_decoder import EncoderDecoder
from lmx.models.encoder_only import EncoderOnly
from lmx.models.layers import DenseGeneral, activation, dtype_of
from lmx.models.xlnet import XLNet

Array = jax.Array

HEAD = "classifier_head"  # the one top-level subtree a classifier adds to its body's parameters
HEAD_INIT_STDDEV = 0.02


class ClassificationHead(nn.Module):
    """[B, D] -> [B, C]: optionally dense(D) + activation (`hidden_activation`), then dropout, then dense(C)."""

    num_outputs: int  # C: classes, or 1 for regression
    dropout_rate: float
    hidden_activation: str | None = None  # "gelu" (ELECTRA) | "tanh" (XLNet) | None (BERT, T5: no hidden layer)
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        dtype, width = dtype_of(self.dtype), x.shape[-1]
        kernel_init = nn.initializers.normal(HEAD_INIT_STDDEV)
        if self.hidden_activation is not None:
            x = DenseGeneral(
                width, ("embed", None), kernel_init=kernel_init, use_bias=True, dtype=dtype, name="hidden"
            )(x)
            x = jnp.tanh(x) if self.hidden_activation == "tanh" else activation(self.hidden_activation)(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        logits = DenseGeneral(
            self.num_outputs, ("embed", None), kernel_init=kernel_init, use_bias=True, dtype=dtype, name="output"
        )(x)
        return logits.astype(jnp.float32)  # [B, C]


def _check_rows(tokens: Array, max_length: int) -> None:
    if tokens.shape[1] > max_length:
        raise ValueError(f"encoder_input_tokens has length {tokens.shape[1]} > config.model.max_length={max_length}")


class EncoderOnlyClassifier(EncoderOnly):
    """BERT / ALBERT (Devlin et al. 2019, section 4.1): the pooled [CLS] output -> dropout -> dense."""

    num_outputs: int = 2
    head_dropout: float = 0.1

    def setup(self):
        super().setup()
        self.classifier_head = ClassificationHead(self.num_outputs, self.head_dropout, None, self.config.dtype)

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        x, aux = self.encode(batch, enable_dropout=enable_dropout)  # [B, L, D]
        pooled = jnp.tanh(self.pooler(x[:, 0]))  # [B, D] the pretrained pooler on [CLS]
        return {"logits": self.classifier_head(pooled, deterministic=not enable_dropout), "aux": aux}


class ElectraClassifier(Electra):
    """ELECTRA (Clark et al. 2020, section 3.1: "we throw out the generator and only fine-tune the discriminator"):
    the discriminator's embeddings and encoder on the unmasked input, its first token -> a classification head
    (dense, GELU, dropout, dense: Hugging Face's ElectraClassificationHead). The generator and the replaced-token
    head are never called, so they have no parameters here."""

    num_outputs: int = 2
    head_dropout: float = 0.1

    def setup(self):
        super().setup()
        self.classifier_head = ClassificationHead(self.num_outputs, self.head_dropout, "gelu", self.config.dtype)

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        deterministic = not enable_dropout
        tokens, segments, positions = stream_inputs(batch, "encoder")  # [B, L] each
        _check_rows(tokens, self.config.max_length)
        context = {
            "self_bias": mask_to_bias(self_attention_mask(segments, causal=False)),  # [B, 1, L, L]
            "positions": positions,
            "segment_ids": segments,
        }
        discriminator = self.discriminator
        x = discriminator.embedder(
            tokens, positions, batch.get("encoder_token_types"), deterministic=deterministic
        )  # [B, L, D]
        x, aux = discriminator.encoder(x, context, deterministic=deterministic)
        return {"logits": self.classifier_head(x[:, 0], deterministic=deterministic), "aux": aux}


class EncoderDecoderClassifier(EncoderDecoder):
    """A T5 encoder as a classifier: its output averaged over each row's non-pad tokens -> dropout -> dense (the
    decoder is not used; T5 itself classifies text-to-text, `config.finetune.format = "text_to_text"`)."""

    num_outputs: int = 2
    head_dropout: float = 0.1

    def setup(self):
        super().setup()
        self.classifier_head = ClassificationHead(self.num_outputs, self.head_dropout, None, self.config.dtype)

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        encoded, aux = self.encode(batch, enable_dropout=enable_dropout)  # [B, S, D]
        _, segments, _ = stream_inputs(batch, "encoder")
        real = (segments != 0).astype(jnp.float32)[..., None]  # [B, S, 1]
        pooled = jnp.sum(encoded.astype(jnp.float32) * real, axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1.0)
        return {"logits": self.classifier_head(pooled, deterministic=not enable_dropout), "aux": aux}


class XLNetClassifier(XLNet):
    """XLNet (Yang et al. 2019): the content stream without memory or permutation, summarised at the last real
    token (`XLNet.summary`), -> dense -> tanh -> dropout -> dense (Hugging Face's SequenceSummary "last" with a
    projection, then the logits layer)."""

    num_outputs: int = 2
    head_dropout: float = 0.1

    def setup(self):
        super().setup()
        self.classifier_head = ClassificationHead(self.num_outputs, self.head_dropout, "tanh", self.config.dtype)

    def initial_carry(self, rows: int) -> None:
        """No memory: fine-tuning examples are independent (XLNet fine-tunes without recurrence across examples)."""
        del rows
        return None

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        hidden, aux = self.encode(batch, enable_dropout=enable_dropout)  # [B, L, D]
        summary = self.summary(hidden, batch)  # [B, D]
        return {"logits": self.classifier_head(summary, deterministic=not enable_dropout), "aux": aux}


# config.model.name -> the classifier of that body.
CLASSIFIERS: dict[str, type[nn.Module]] = {
    "encoder_only": EncoderOnlyClassifier,
    "electra": ElectraClassifier,
    "encoder_decoder": EncoderDecoderClassifier,
    "xlnet": XLNetClassifier,
}


def build_classifier(model_config: ml_collections.ConfigDict, *, num_outputs: int, head_dropout: float) -> nn.Module:
    """The classifier of the body `model_config.name` with `num_outputs` logits (1: regression)."""
    if model_config.name not in CLASSIFIERS:
        raise ValueError(
            f"config.model.name={model_config.name!r} has no classification head; classify fine-tunes "
            f"{sorted(CLASSIFIERS)} (decoder-only models fine-tune with config.finetune.format='text_to_text')"
        )
    if num_outputs < 1:
        raise ValueError(f"a classifier needs at least one output, not {num_outputs}")
    return CLASSIFIERS[model_config.name](config=model_config, num_outputs=num_outputs, head_dropout=head_dropout)
