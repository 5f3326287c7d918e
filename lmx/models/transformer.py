"""T5.1.1 encoder-decoder: pre-norm blocks, stacks (scanned or unrolled, optionally rematerialised), the model.

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
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.attention import (
    MultiHeadAttention,
    add_position_bias,
    combine_masks,
    make_attention_mask,
    make_causal_mask,
    mask_to_bias,
)
from lmx.models.layers import DenseGeneral, Embed, Mlp, RelativePositionBias, RMSNorm, dtype_of

Array = jax.Array

# remat_policy -> what the backward pass may keep from the forward pass (everything else is recomputed).
# "none" = no rematerialisation at all; "full" = keep only the block inputs.
REMAT_POLICIES = {
    "none": None,
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _check_remat_policy(name: str) -> None:
    if name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat_policy {name!r}; known: {sorted(REMAT_POLICIES)}")


class EncoderBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)); dropout on each residual branch."""

    config: ml_collections.ConfigDict
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, mask_bias: Array, position_bias: Array) -> tuple[Array, None]:
        # x: [B, S, D]; mask_bias: [B, 1, S, S]; position_bias: [1, N, S, S]. Returns (x, None) for nn.scan.
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        h = RMSNorm(cfg.norm_epsilon, dtype, name="pre_self_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dtype, name="self_attention")(
            h, h, add_position_bias(mask_bias, position_bias), deterministic=self.deterministic
        )
        x = x + nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
        h = RMSNorm(cfg.norm_epsilon, dtype, name="pre_mlp_layer_norm")(x)
        h = Mlp(cfg.mlp_dim, tuple(cfg.mlp_activations), cfg.dropout_rate, dtype, name="mlp")(
            h, deterministic=self.deterministic
        )
        x = x + nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder output (no position bias), MLP; all pre-norm."""

    config: ml_collections.ConfigDict
    deterministic: bool

    @nn.compact
    def __call__(
        self, y: Array, encoded: Array, self_mask_bias: Array, position_bias: Array, cross_mask_bias: Array
    ) -> tuple[Array, None]:
        # y: [B, T, D]; encoded: [B, S, D]; self_mask_bias: [B or 1, 1, T, T]; position_bias: [1, N, T, T];
        # cross_mask_bias: [B, 1, T, S]. Returns (y, None) for nn.scan.
        cfg, dtype = self.config, dtype_of(self.config.dtype)

        def attention(name):
            return MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dtype, name=name)

        def dropout(h):
            return nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)

        h = RMSNorm(cfg.norm_epsilon, dtype, name="pre_self_attention_layer_norm")(y)
        h = attention("self_attention")(
            h, h, add_position_bias(self_mask_bias, position_bias), deterministic=self.deterministic
        )
        y = y + dropout(h)
        h = RMSNorm(cfg.norm_epsilon, dtype, name="pre_cross_attention_layer_norm")(y)
        h = attention("encoder_decoder_attention")(h, encoded, cross_mask_bias, deterministic=self.deterministic)
        y = y + dropout(h)
        h = RMSNorm(cfg.norm_epsilon, dtype, name="pre_mlp_layer_norm")(y)
        h = Mlp(cfg.mlp_dim, tuple(cfg.mlp_activations), cfg.dropout_rate, dtype, name="mlp")(
            h, deterministic=self.deterministic
        )
        y = y + dropout(h)
        return nn.with_logical_constraint(y, ("batch", "length", "embed")), None


def _run_stack(block_cls, config, num_layers: int, deterministic: bool, x: Array, *broadcast: Array) -> Array:
    """Applies `num_layers` blocks to x; must be called inside a compact method (the blocks become its children).

    scan_layers: one block traced once and scanned (params stacked on a leading `layers` axis): compile time does
    not grow with depth. Otherwise the blocks are unrolled as layers_0, layers_1, ... Either way the `broadcast`
    inputs (masks, the position bias) are the same for every layer.
    """
    _check_remat_policy(config.remat_policy)
    if config.remat_policy != "none":
        # prevent_cse is only needed outside scan (scan already stops XLA from merging the recomputation away).
        block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[config.remat_policy], prevent_cse=not config.scan_layers)
    if config.scan_layers:
        stack = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * len(broadcast),
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(config, deterministic, name="layers")
        x, _ = stack(x, *broadcast)
        return x
    for i in range(num_layers):
        x, _ = block_cls(config, deterministic, name=f"layers_{i}")(x, *broadcast)
    return x


class Encoder(nn.Module):
    """Embed -> dropout -> blocks (sharing one bidirectional relative position bias) -> RMSNorm -> dropout."""

    config: ml_collections.ConfigDict
    embedder: Embed

    @nn.compact
    def __call__(self, tokens: Array, segment_ids: Array, *, deterministic: bool) -> Array:
        # tokens, segment_ids: [B, S] -> encoded [B, S, D]
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        length = tokens.shape[1]
        x = nn.Dropout(cfg.dropout_rate)(self.embedder(tokens), deterministic=deterministic)
        position_bias = RelativePositionBias(
            cfg.relpos_num_buckets, cfg.relpos_max_distance, cfg.num_heads, name="relpos_bias"
        )(length, length, bidirectional=True)  # [1, N, S, S]
        mask_bias = mask_to_bias(make_attention_mask(segment_ids, segment_ids))  # [B, 1, S, S]
        x = _run_stack(EncoderBlock, cfg, cfg.num_encoder_layers, deterministic, x, mask_bias, position_bias)
        x = RMSNorm(cfg.norm_epsilon, dtype, name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
    """Embed -> dropout -> blocks (one causal relative position bias) -> RMSNorm -> dropout -> logits."""

    config: ml_collections.ConfigDict
    embedder: Embed

    @nn.compact
    def __call__(
        self,
        encoded: Array,
        encoder_segment_ids: Array,
        tokens: Array,
        segment_ids: Array | None,
        *,
        deterministic: bool,
    ) -> Array:
        # encoded: [B, S, D]; encoder_segment_ids: [B, S]; tokens, segment_ids: [B, T] -> logits [B, T, V] float32
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        length = tokens.shape[1]
        y = nn.Dropout(cfg.dropout_rate)(self.embedder(tokens), deterministic=deterministic)
        position_bias = RelativePositionBias(
            cfg.relpos_num_buckets, cfg.relpos_max_distance, cfg.num_heads, name="relpos_bias"
        )(length, length, bidirectional=False)  # [1, N, T, T]
        # Decoder inputs start with 0 (the shifted-right start token), so padding cannot be read off the tokens.
        # Unpacked: causality alone suffices (trailing padding is never attended to by real positions).
        # Packed: segment ids also keep each example to itself.
        query_segments = jnp.ones_like(tokens, jnp.int32) if segment_ids is None else segment_ids
        self_mask = combine_masks(
            make_causal_mask(length), None if segment_ids is None else make_attention_mask(segment_ids, segment_ids)
        )
        self_mask_bias = mask_to_bias(self_mask)  # [B or 1, 1, T, T]
        cross_mask_bias = mask_to_bias(make_attention_mask(query_segments, encoder_segment_ids))  # [B, 1, T, S]
        broadcast = (encoded, self_mask_bias, position_bias, cross_mask_bias)
        y = _run_stack(DecoderBlock, cfg, cfg.num_decoder_layers, deterministic, y, *broadcast)
        y = RMSNorm(cfg.norm_epsilon, dtype, name="decoder_norm")(y)
        y = nn.Dropout(cfg.dropout_rate)(y, deterministic=deterministic)
        if cfg.tie_embeddings:
            # T5.1.0 ties the output layer to the embedding N(0, 1) and rescales by d_model^-1/2 to keep logits O(1).
            logits = self.embedder.attend(y) * cfg.embed_dim**-0.5
        else:
            logits = DenseGeneral(
                cfg.vocab_size,
                ("embed", "vocab"),
                kernel_init=nn.initializers.normal(stddev=cfg.embed_dim**-0.5),
                dtype=dtype,
                name="logits_dense",
            )(y)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return logits.astype(jnp.float32)


class EncoderDecoder(nn.Module):
    """T5.1.1 (Raffel et al. 2020; gated-GELU, untied output layer, no dropout in pretraining).

    Token id 0 is padding. Unpacked batches pass segment ids None (the encoder mask comes from tokens != 0);
    packed batches pass segment ids 1, 2, ... per example, 0 for padding, for both encoder and decoder.
    """

    config: ml_collections.ConfigDict  # the config.model section

    def setup(self):
        cfg = self.config
        _check_remat_policy(cfg.remat_policy)
        dtype = dtype_of(cfg.dtype)
        self.token_embedder = Embed(cfg.vocab_size, cfg.embed_dim, dtype=dtype)
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def _check_length(self, tokens: Array, what: str) -> None:
        if tokens.ndim != 2:
            raise ValueError(f"{what} must be [batch, length] token ids, got shape {tokens.shape}")
        if tokens.shape[1] > self.config.max_length:
            raise ValueError(f"{what} has length {tokens.shape[1]} > config.model.max_length={self.config.max_length}")

    @staticmethod
    def _encoder_segments(encoder_input_tokens: Array, encoder_segment_ids: Array | None) -> Array:
        if encoder_segment_ids is None:
            return (encoder_input_tokens != 0).astype(jnp.int32)
        return encoder_segment_ids

    def encode(
        self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None, *, enable_dropout: bool = False
    ) -> Array:
        """[B, S] tokens -> [B, S, D] encoder output (in config.model.dtype)."""
        self._check_length(encoder_input_tokens, "encoder_input_tokens")
        segments = self._encoder_segments(encoder_input_tokens, encoder_segment_ids)
        return self.encoder(encoder_input_tokens, segments, deterministic=not enable_dropout)

    def decode(
        self,
        encoded: Array,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        *,
        enable_dropout: bool = False,
    ) -> Array:
        """Encoder output [B, S, D] and decoder inputs [B, T] -> logits [B, T, vocab] float32.

        encoder_input_tokens are only read for the cross-attention padding mask when encoder_segment_ids is None.
        """
        self._check_length(decoder_input_tokens, "decoder_input_tokens")
        segments = self._encoder_segments(encoder_input_tokens, encoder_segment_ids)
        return self.decoder(
            encoded, segments, decoder_input_tokens, decoder_segment_ids, deterministic=not enable_dropout
        )

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        *,
        enable_dropout: bool = False,
    ) -> Array:
        """[B, S] inputs, [B, T] shifted-right targets -> logits [B, T, vocab] float32."""
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout=enable_dropout)
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            enable_dropout=enable_dropout,
        )


def unstack_scanned_params(params: Any) -> Any:
    """Converts a scan_layers=True param tree to the scan_layers=False layout: `layers` [L, ...] -> layers_0..L-1.

    Accepts boxed (nn.Partitioned) or plain trees and returns a plain tree. Used by tests and checkpoint conversion.
    """
    params = nn.unbox(params)

    def convert(tree):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for key, value in tree.items():
            if key == "layers" and isinstance(value, dict):
                num_layers = jax.tree.leaves(value)[0].shape[0]
                for i in range(num_layers):
                    out[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], value)
            else:
                out[key] = convert(value)
        return out

    return convert(dict(params))


def stack_unrolled_params(params: Any) -> Any:
    """Inverse of unstack_scanned_params: layers_0..L-1 -> `layers` with a leading [L] axis (plain tree)."""
    params = nn.unbox(params)

    def convert(tree):
        if not isinstance(tree, dict):
            return tree
        layer_keys = sorted((k for k in tree if k.startswith("layers_")), key=lambda k: int(k.split("_")[1]))
        out = {k: convert(v) for k, v in tree.items() if not k.startswith("layers_")}
        if layer_keys:
            out["layers"] = jax.tree.map(lambda *a: jnp.stack(a), *(tree[k] for k in layer_keys))
        return out

    return convert(dict(params))
