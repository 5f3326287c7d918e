"""Input embeddings of the decoder-only and encoder-only families, and the inputs every stack reads.

`Embedder`: token embedding (+ learned absolute positions, GPT-2/BERT) (+ token types, BERT) (-> LayerNorm for
post-norm families, BERT) (-> dropout) (-> a projection to the hidden size when `embed_proj_dim` factorises the
embedding, ALBERT section 3.1). T5 has only the token table (its positions are a relative bias in attention).
Parameters: token_embedder/embedding [vocab, E], position_embedder/embedding [max_length, E],
token_type_embedder/embedding [types, E], embedding_norm/{scale, bias}, embedding_projection/{kernel, bias} [E, D].
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.init import Inits
from lmx.models.layers import DenseGeneral, Embed, Norm, dtype_of

Array = jax.Array


def stream_inputs(batch: Mapping[str, Array], prefix: str) -> tuple[Array, Array, Array]:
    """(tokens, segment_ids, positions) [B, L] of one stream ("encoder" or "decoder") of a feature dict.

    Packed batches carry `<prefix>_segment_ids` (1, 2, ... per example, 0 = padding) and `<prefix>_positions`
    (restarting at 0 per example). Unpacked ones do not: then every non-pad token is segment 1 (token 0 is padding;
    decoder inputs start with 0, the shifted-in start token, so decoders mark every position as segment 1 and rely
    on causality) and positions count from 0.
    """
    tokens = batch[f"{prefix}_input_tokens"]
    if tokens.ndim != 2:
        raise ValueError(f"{prefix}_input_tokens must be [batch, length] token ids, got shape {tokens.shape}")
    segment_ids = batch.get(f"{prefix}_segment_ids")
    if segment_ids is None:
        segment_ids = jnp.ones_like(tokens, jnp.int32) if prefix == "decoder" else (tokens != 0).astype(jnp.int32)
    positions = batch.get(f"{prefix}_positions")
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    return tokens, segment_ids, positions


class Embedder(nn.Module):
    """tokens [B, L] (+ positions, token types [B, L]) -> [B, L, D]; `attend` gives tied output logits."""

    config: ml_collections.ConfigDict

    def setup(self):
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        inits = Inits.of(cfg)
        width = cfg.embed_proj_dim or cfg.embed_dim  # E: the embedding width (ALBERT: smaller than D)
        self.token_embedder = Embed(cfg.vocab_size, width, dtype=dtype, embedding_init=inits.embedding())
        if cfg.position_embedding == "learned":
            self.position_embedder = Embed(
                cfg.max_length, width, dtype=dtype, embedding_init=inits.embedding(), axes=(None, "embed")
            )
        if cfg.type_vocab_size:
            self.token_type_embedder = Embed(
                cfg.type_vocab_size, width, dtype=dtype, embedding_init=inits.embedding(), axes=(None, "embed")
            )
        if cfg.norm_position == "post":  # BERT normalises the summed embeddings (pre-norm stacks do not need it)
            self.embedding_norm = Norm(cfg.norm_epsilon, cfg.norm, dtype)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        if cfg.embed_proj_dim:
            self.embedding_projection = DenseGeneral(
                cfg.embed_dim,
                (None, "embed"),  # [E, D]: E is small (ALBERT: 128), D is sharded like every hidden state
                kernel_init=inits.kernel((width,), (cfg.embed_dim,)),
                use_bias=cfg.use_bias,
                dtype=dtype,
            )

    def __call__(
        self, tokens: Array, positions: Array, token_types: Array | None = None, *, deterministic: bool
    ) -> Array:
        # tokens, positions, token_types: [B, L] -> [B, L, D]
        x = self.embed(tokens, positions, token_types, deterministic=deterministic)  # [B, L, E]
        if self.config.embed_proj_dim:
            x = self.embedding_projection(x)  # [B, L, D]
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def embed(self, tokens: Array, positions: Array, token_types: Array | None = None, *, deterministic: bool) -> Array:
        """[B, L, E]: the summed (normalised, dropped-out) embeddings before ALBERT's projection; ELECTRA's generator
        shares them and projects them to its own width."""
        x = self.token_embedder(tokens)  # [B, L, E]
        if self.config.position_embedding == "learned":
            x = x + self.position_embedder(positions)
        if self.config.type_vocab_size:
            x = x + self.token_type_embedder(jnp.zeros_like(tokens) if token_types is None else token_types)
        if self.config.norm_position == "post":
            x = self.embedding_norm(x)
        return self.dropout(x, deterministic=deterministic)

    def attend(self, x: Array) -> Array:
        # x: [B, L, E] -> logits [B, L, V] through the token table
        return self.token_embedder.attend(x)
