"""T5 encoder-decoder (Raffel et al. 2020): T5.1.1 (gated-GELU, untied output layer) and T5.1.0 (ReLU, tied
embeddings with logits rescaled by d_model^-1/2) are configs of this one model.

Parameter tree (scan_layers=True; unrolled stacks name their blocks layers_0, layers_1, ... instead of `layers`):
  token_embedder/embedding                         [vocab, embed]    shared by encoder and decoder inputs
  encoder/relpos_bias/rel_embedding                [relpos_buckets, heads]
  encoder/layers/{pre_self_attention_layer_norm, self_attention, pre_mlp_layer_norm, mlp}   leading [layers]
  encoder/encoder_norm/scale
  decoder/relpos_bias/rel_embedding
  decoder/layers/{pre_self_attention_layer_norm, self_attention, pre_cross_attention_layer_norm,
                  encoder_decoder_attention, pre_mlp_layer_norm, mlp}
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                      [embed, vocab]    absent when tie_embeddings

Features read (seqio's EncDecFeatureConverter): encoder_input_tokens, decoder_input_tokens, and when packed
encoder_segment_ids, decoder_segment_ids (1, 2, ... per example, 0 for padding). Token id 0 is padding.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.attention import (
    cached_self_attention_mask,
    make_attention_mask,
    mask_to_bias,
    self_attention_mask,
)
from lmx.models.embeddings import stream_inputs
from lmx.models.init import Inits
from lmx.models.layers import DenseGeneral, Embed, Norm, dtype_of
from lmx.models.positions import RelativePositionBias
from lmx.models.transformer import check_remat_policy, run_stack

Array = jax.Array


def _merge_aux(*auxes: dict[str, Array]) -> dict[str, Array]:
    """Encoder and decoder aux values of one name, encoder layers first."""
    names = sorted({name for aux in auxes for name in aux})
    return {name: jnp.concatenate([aux[name] for aux in auxes if name in aux]) for name in names}


class Encoder(nn.Module):
    """Embed -> dropout -> blocks (sharing one bidirectional relative position bias) -> norm -> dropout."""

    config: ml_collections.ConfigDict
    embedder: Embed

    @nn.compact
    def __call__(self, tokens: Array, segment_ids: Array, *, deterministic: bool) -> tuple[Array, dict]:
        # tokens, segment_ids: [B, S] -> encoded [B, S, D], aux
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        length = tokens.shape[1]
        x = nn.Dropout(cfg.dropout_rate)(self.embedder(tokens), deterministic=deterministic)
        context = {
            "self_bias": mask_to_bias(self_attention_mask(segment_ids, causal=False)),  # [B, 1, S, S]
            "position_bias": RelativePositionBias(
                cfg.relpos_num_buckets, cfg.relpos_max_distance, cfg.num_heads, name="relpos_bias"
            )(length, length, bidirectional=True),  # [1, N, S, S]
            "positions": None,
            "segment_ids": segment_ids,
        }
        x, aux = run_stack(cfg, cfg.num_encoder_layers, x, context, deterministic=deterministic, causal=False)
        x = Norm(cfg.norm_epsilon, cfg.norm, dtype, name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic), aux


class Decoder(nn.Module):
    """Embed -> dropout -> blocks (one causal relative position bias) -> norm -> dropout -> logits."""

    config: ml_collections.ConfigDict
    embedder: Embed

    @nn.compact
    def __call__(
        self,
        encoded: Array | None,
        encoder_segment_ids: Array,
        tokens: Array,
        segment_ids: Array,
        *,
        deterministic: bool,
        key_mask: Array | None = None,
        cache_index: Array | None = None,
    ) -> tuple[Array, dict]:
        # encoded: [B, S, D]; encoder_segment_ids: [B, S]; tokens, segment_ids: [B, T] -> logits [B, T, V] float32.
        # Decoding (key_mask [B, C] given): tokens sit at cache slots cache_index.. and attend over the C slots;
        # encoded is None after the first call (its keys and values are cached).
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        length = tokens.shape[1]
        decode = key_mask is not None
        y = nn.Dropout(cfg.dropout_rate)(self.embedder(tokens), deterministic=deterministic)
        relpos = RelativePositionBias(
            cfg.relpos_num_buckets, cfg.relpos_max_distance, cfg.num_heads, name="relpos_bias"
        )
        if decode:
            self_mask = cached_self_attention_mask(key_mask, cache_index, length)  # [B, 1, T, C]
            position_bias = relpos(length, key_mask.shape[1], bidirectional=False, query_offset=cache_index)
        else:
            # Causality keeps real positions off trailing padding; packed segment ids keep examples apart.
            self_mask = self_attention_mask(segment_ids, causal=True)  # [B, 1, T, T]
            position_bias = relpos(length, length, bidirectional=False)  # [1, N, T, T]
        context = {
            "self_bias": mask_to_bias(self_mask),
            "position_bias": position_bias,
            "positions": None,
            "segment_ids": segment_ids,
            "encoded": encoded,
            "cross_bias": mask_to_bias(make_attention_mask(segment_ids, encoder_segment_ids)),  # [B, 1, T, S]
        }
        if decode:
            context["cache_index"] = cache_index
        y, aux = run_stack(
            cfg,
            cfg.num_decoder_layers,
            y,
            context,
            deterministic=deterministic,
            causal=True,
            cross_attention=True,
            decode=decode,
        )
        y = Norm(cfg.norm_epsilon, cfg.norm, dtype, name="decoder_norm")(y)
        y = nn.Dropout(cfg.dropout_rate)(y, deterministic=deterministic)
        if cfg.tie_embeddings:
            # T5.1.0 ties the output layer to the embedding N(0, 1) and rescales by d_model^-1/2 to keep logits O(1).
            logits = self.embedder.attend(y) * cfg.embed_dim**-0.5
        else:
            logits = DenseGeneral(
                cfg.vocab_size,
                ("embed", "vocab"),
                kernel_init=Inits.of(cfg).kernel((cfg.embed_dim,), (cfg.vocab_size,)),
                dtype=dtype,
                name="logits_dense",
            )(y)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return logits.astype(jnp.float32), aux


class EncoderDecoder(nn.Module):
    """T5: `__call__(batch)` is the model contract (lmx.models); `encode` and `decode` serve decoding."""

    config: ml_collections.ConfigDict  # the config.model section

    def setup(self):
        cfg = self.config
        check_remat_policy(cfg.remat_policy)
        self.token_embedder = Embed(
            cfg.vocab_size, cfg.embed_dim, dtype=dtype_of(cfg.dtype), embedding_init=Inits.of(cfg).embedding()
        )
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def _check_length(self, tokens: Array, what: str) -> None:
        if tokens.shape[1] > self.config.max_length:
            raise ValueError(f"{what} has length {tokens.shape[1]} > config.model.max_length={self.config.max_length}")

    def encode(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> tuple[Array, dict]:
        """encoder_input_tokens [B, S] (+ encoder_segment_ids) -> ([B, S, D] encoder output, aux)."""
        tokens, segments, _ = stream_inputs(batch, "encoder")
        self._check_length(tokens, "encoder_input_tokens")
        return self.encoder(tokens, segments, deterministic=not enable_dropout)

    def decode(self, encoded: Array, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> tuple[Array, dict]:
        """Encoder output [B, S, D] and decoder_input_tokens [B, T] -> (logits [B, T, vocab] float32, aux).

        encoder_input_tokens are only read for the cross-attention padding mask when encoder_segment_ids is absent.
        """
        _, encoder_segments, _ = stream_inputs(batch, "encoder")
        tokens, segments, _ = stream_inputs(batch, "decoder")
        self._check_length(tokens, "decoder_input_tokens")
        return self.decoder(encoded, encoder_segments, tokens, segments, deterministic=not enable_dropout)

    def decode_step(
        self,
        encoded: Array | None,
        encoder_segment_ids: Array,
        tokens: Array,
        key_mask: Array,
        cache_index: Array,
    ) -> Array:
        """Q decoder tokens through the KV cache (the "cache" collection, mutable) -> logits [B, Q, V] float32.

        encoded [B, S, D] on the first call (its cross-attention keys/values are cached), None afterwards;
        encoder_segment_ids [B, S] (0 = padding); tokens [B, Q] at cache slots cache_index ..; key_mask [B, C]: the
        slots holding real tokens, these included. lmx.inference.decode.
        """
        segments = jnp.ones_like(tokens, jnp.int32)
        logits, _ = self.decoder(
            encoded,
            encoder_segment_ids,
            tokens,
            segments,
            deterministic=True,
            key_mask=key_mask,
            cache_index=cache_index,
        )
        return logits

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        """{"encoder_input_tokens" [B, S], "decoder_input_tokens" [B, T], ...} -> {"logits" [B, T, V], "aux"}."""
        encoded, encoder_aux = self.encode(batch, enable_dropout=enable_dropout)
        logits, decoder_aux = self.decode(encoded, batch, enable_dropout=enable_dropout)
        return {"logits": logits, "aux": _merge_aux(encoder_aux, decoder_aux)}
