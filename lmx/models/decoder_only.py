"""Decoder-only language models: GPT-2 (Radford et al. 2019), GPT-3's alternating dense and locally banded layers
(Brown et al. 2020), and a modern decoder (rotary positions, RMS norm, SwiGLU, no biases, grouped-query attention,
untied output) — configs of this one model (configs/gpt2_*.py, gpt3_small.py, decoder_1b.py).

Parameter tree (scan_layers=True):
  embedder/token_embedder/embedding         [vocab, embed]
  embedder/position_embedder/embedding      [max_length, embed]   learned positions (GPT-2/3) only
  decoder/layers/{pre_self_attention_layer_norm, self_attention, pre_mlp_layer_norm, mlp}   leading [layers]
  decoder/decoder_norm/{scale, bias}
  logits_dense/kernel                       [embed, vocab]        absent when tie_embeddings (GPT-2 ties)

Features read (seqio's DecoderFeatureConverter / PrefixLMFeatureConverter): decoder_input_tokens, and when packed
decoder_segment_ids and decoder_positions; decoder_causal_attention marks a bidirectional prefix (prefix LM).
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.attention import cached_self_attention_mask, mask_to_bias, self_attention_mask
from lmx.models.embeddings import Embedder, stream_inputs
from lmx.models.init import Inits
from lmx.models.layers import DenseGeneral, Norm, dtype_of
from lmx.models.transformer import check_remat_policy, run_stack

Array = jax.Array


class DecoderStack(nn.Module):
    """Causal blocks -> final norm (every decoder-only family is pre-norm)."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x: Array, context: dict, *, deterministic: bool, decode: bool = False) -> tuple[Array, dict]:
        cfg = self.config
        x, aux = run_stack(
            cfg, cfg.num_decoder_layers, x, context, deterministic=deterministic, causal=True, decode=decode
        )
        return Norm(cfg.norm_epsilon, cfg.norm, dtype_of(cfg.dtype), name="decoder_norm")(x), aux


class DecoderOnly(nn.Module):
    """The model contract: `__call__(batch) -> {"logits" [B, L, V] float32, "aux"}`; `decode_step` for decoding."""

    config: ml_collections.ConfigDict  # the config.model section

    def setup(self):
        cfg = self.config
        check_remat_policy(cfg.remat_policy)
        self.embedder = Embedder(cfg)
        self.decoder = DecoderStack(cfg)
        if not cfg.tie_embeddings:
            self.logits_dense = DenseGeneral(
                cfg.vocab_size,
                ("embed", "vocab"),
                kernel_init=Inits.of(cfg).kernel((cfg.embed_dim,), (cfg.vocab_size,)),
                dtype=dtype_of(cfg.dtype),
            )

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        cfg, deterministic = self.config, not enable_dropout
        tokens, segments, positions = stream_inputs(batch, "decoder")
        if tokens.shape[1] > cfg.max_length:
            raise ValueError(
                f"decoder_input_tokens has length {tokens.shape[1]} > config.model.max_length={cfg.max_length}"
            )
        prefix = batch.get("decoder_causal_attention")  # [B, L] or None
        if prefix is not None and cfg.attention_pattern != "dense":
            # Banded layers are causal by construction: they would silently ignore the bidirectional prefix.
            raise ValueError(
                f"config.model.attention_pattern={cfg.attention_pattern!r} cannot train a prefix LM "
                "(decoder_causal_attention): its banded layers are causal only; set attention_pattern='dense'"
            )
        x = self.embedder(tokens, positions, deterministic=deterministic)  # [B, L, D]
        mask = self_attention_mask(segments, causal=True, prefix=prefix)
        context = {"self_bias": mask_to_bias(mask), "positions": positions, "segment_ids": segments}
        x, aux = self.decoder(x, context, deterministic=deterministic)  # GPT-2: no dropout after the final norm
        logits = self.embedder.attend(x) if cfg.tie_embeddings else self.logits_dense(x)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return {"logits": logits.astype(jnp.float32), "aux": aux}

    def decode_step(
        self, tokens: Array, positions: Array, key_mask: Array, cache_index: Array, prefix: Array | None = None
    ) -> Array:
        """Q new tokens of each row through the KV cache (the "cache" collection, mutable) -> logits [B, Q, V].

        tokens, positions: [B, Q] (positions of the tokens in their own row: left padding does not count);
        key_mask: [B, C] the cache slots holding real tokens, these included; cache_index: the slot of tokens[:, 0];
        prefix: [B, C] a prefix LM's prompt slots (bidirectional among themselves), or None. lmx.inference.decode.
        """
        cfg = self.config
        x = self.embedder(tokens, positions, deterministic=True)  # [B, Q, D]
        mask = cached_self_attention_mask(key_mask, cache_index, tokens.shape[1], prefix)  # [B, 1, Q, C]
        context = {"self_bias": mask_to_bias(mask), "positions": positions, "segment_ids": None}
        context["cache_index"] = cache_index
        x, _ = self.decoder(x, context, deterministic=True, decode=True)
        logits = self.embedder.attend(x) if cfg.tie_embeddings else self.logits_dense(x)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab")).astype(jnp.float32)
