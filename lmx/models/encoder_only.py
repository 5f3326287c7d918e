"""Encoder-only models: BERT (Devlin et al. 2019) and ALBERT (Lan et al. 2020: factorised embedding
`embed_proj_dim` and cross-layer parameter sharing `share_layers`) — configs of this one model.

Parameter tree (scan_layers=True; ALBERT's shared block lives under encoder/shared_layer without a layers axis):
  embedder/{token_embedder, position_embedder, token_type_embedder}/embedding, embedder/embedding_norm,
  embedder/embedding_projection                                        (ALBERT: [E, D])
  encoder/layers/{self_attention, post_self_attention_layer_norm, mlp, post_mlp_layer_norm}
  mlm_transform/{kernel, bias} [embed, E], mlm_norm/{scale, bias}     BERT's MLM head transform
  mlm_bias [vocab]                                                     output bias (the output matrix is the embedding)
  pooler/{kernel, bias} [embed, embed]                                  dense + tanh on the first ([CLS]) token
  pair_classifier/{kernel, bias} [embed, 2]                            NSP (BERT) / SOP (ALBERT) on the pooled output

Features read (lmx.data encoder-only converters): encoder_input_tokens, and when present encoder_segment_ids,
encoder_positions, encoder_token_types. Outputs: logits (MLM) [B, L, V] float32, pooled [B, D], pair_logits
[B, 2] float32 (next-sentence prediction, BERT section 3.1 task 2, or sentence-order prediction, ALBERT section 3.2:
the same head, trained on whichever pairs the objective makes), aux.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.attention import mask_to_bias, self_attention_mask
from lmx.models.embeddings import Embedder, stream_inputs
from lmx.models.init import Inits
from lmx.models.layers import DenseGeneral, Norm, activation, dtype_of
from lmx.models.transformer import check_remat_policy, run_stack

Array = jax.Array


class EncoderStack(nn.Module):
    """Bidirectional blocks (post-norm for BERT/ALBERT, so no final norm; a pre-norm encoder ends with one)."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x: Array, context: dict, *, deterministic: bool) -> tuple[Array, dict]:
        cfg = self.config
        x, aux = run_stack(cfg, cfg.num_encoder_layers, x, context, deterministic=deterministic, causal=False)
        if cfg.norm_position == "pre":
            x = Norm(cfg.norm_epsilon, cfg.norm, dtype_of(cfg.dtype), name="encoder_norm")(x)
        return x, aux


class EncoderOnly(nn.Module):
    """The model contract: `__call__(batch) -> {"logits", "pooled", "pair_logits", "aux"}`; `encode` for heads of
    other tasks."""

    config: ml_collections.ConfigDict  # the config.model section

    def setup(self):
        cfg = self.config
        check_remat_policy(cfg.remat_policy)
        dtype, inits = dtype_of(cfg.dtype), Inits.of(cfg)
        width = cfg.embed_proj_dim or cfg.embed_dim
        self.embedder = Embedder(cfg)
        self.encoder = EncoderStack(cfg)
        # MLM head (BERT appendix A / the released code): dense -> activation -> norm -> tied output + bias.
        self.mlm_transform = DenseGeneral(
            width,
            ("embed", None),
            kernel_init=inits.kernel((cfg.embed_dim,), (width,)),
            use_bias=True,
            dtype=dtype,
        )
        self.mlm_norm = Norm(cfg.norm_epsilon, cfg.norm, dtype)
        self.mlm_bias = self.param(
            "mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)), (cfg.vocab_size,)
        )
        self.pooler = DenseGeneral(
            cfg.embed_dim,
            ("embed", None),
            kernel_init=inits.kernel((cfg.embed_dim,), (cfg.embed_dim,)),
            use_bias=True,
            dtype=dtype,
        )
        # BERT's NSP / ALBERT's SOP classifier (two classes) on the pooled output; objectives without sentence pairs
        # leave it untrained (it gets no gradient).
        self.pair_classifier = DenseGeneral(
            2, ("embed", None), kernel_init=inits.kernel((cfg.embed_dim,), (2,)), use_bias=True, dtype=dtype
        )

    def encode(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> tuple[Array, dict]:
        """Features -> (hidden states [B, L, D], aux)."""
        cfg, deterministic = self.config, not enable_dropout
        tokens, segments, positions = stream_inputs(batch, "encoder")
        if tokens.shape[1] > cfg.max_length:
            raise ValueError(
                f"encoder_input_tokens has length {tokens.shape[1]} > config.model.max_length={cfg.max_length}"
            )
        x = self.embedder(tokens, positions, batch.get("encoder_token_types"), deterministic=deterministic)
        context = {
            "self_bias": mask_to_bias(self_attention_mask(segments, causal=False)),  # [B, 1, L, L]
            "positions": positions,
            "segment_ids": segments,
        }
        return self.encoder(x, context, deterministic=deterministic)

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        x, aux = self.encode(batch, enable_dropout=enable_dropout)  # [B, L, D]
        h = activation(self.config.mlp_activations[0])(self.mlm_transform(x))
        logits = self.embedder.attend(self.mlm_norm(h)) + self.mlm_bias
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        # The pooler reads the first token of each row ([CLS]; packed rows are for MLM only, which ignores it).
        pooled = jnp.tanh(self.pooler(x[:, 0]))  # [B, D]
        pair_logits = self.pair_classifier(pooled).astype(jnp.float32)  # [B, 2]
        return {"logits": logits.astype(jnp.float32), "pooled": pooled, "pair_logits": pair_logits, "aux": aux}
