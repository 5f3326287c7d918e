"""XLNet (Yang et al. 2019): a Transformer-XL encoder trained by permutation language modelling (objective "plm").

The forward pass of a batch (the plm features of `lmx.data.plm`):
  1. Content stream h = the token embeddings; query stream g = the learned `mask_embedding` w at each of the P
     predicted positions (section 2.3: g starts from a trainable vector, h from the embedding of the token).
  2. Masks from the factorization order (section 2.3, partial prediction): `encoder_perm_rank` is 0 for the
     context (the first tokens of the order, never predicted) and 1, 2, .. for the targets in the order they are
     predicted. Content stream: i sees j iff rank_j <= rank_i (the context sees the context; a target sees the
     context, the targets before it and itself). Query stream: the same minus i itself, so g at a target position
     never sees its own token. Both only within a packed segment, never padding; every query sees the memory.
  3. The layers (`lmx.models.two_stream.XLNetLayer`), relative positions over [memory; segment].
  4. Logits of the query stream at the targets through the tied token table plus an output bias (HF's `lm_loss`).
Segment-level recurrence (section 2.5, Transformer-XL): with mem_len M > 0 the model takes `carry` [B, layers, M,
D] (each layer's input hidden states of the row's previous segment, as the train state carries them from step to
step) and returns the next one as outputs["carry"]. Without a carry it attends to the current segment only.

Parameter tree (scan_layers=True):
  token_embedder/embedding [vocab, embed]; mask_embedding [embed]; output_bias [vocab]
  encoder/layers/self_attention/{query, key, value, position}/kernel [layers, embed, heads, kv], out/kernel
      [layers, heads, kv, embed], {content, position, segment}_bias [layers, heads, kv], segment_embedding
      [layers, 2, heads, kv]
  encoder/layers/{post_self_attention_layer_norm, mlp/{wi, wo}, post_mlp_layer_norm}

Features read: encoder_input_tokens; and when present encoder_segment_ids (packing), encoder_perm_rank,
encoder_target_positions [B, P] (the query stream runs only there; without them the logits are the content stream's
at every position, as Hugging Face's XLNetLMHeadModel without target_mapping), encoder_token_types (the relative
segment encoding; XLNet's memory counts as type 0). Outputs: logits [B, P, V] float32, aux (empty), carry.

Fine-tuning heads use `encode` (content stream, hidden [B, L, D]) and `summary` (XLNet's last-token summary).
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.config_lib import ConfigError
from lmx.models.attention import make_attention_mask, mask_to_bias
from lmx.models.embeddings import stream_inputs
from lmx.models.init import Inits
from lmx.models.layers import Embed, dtype_of
from lmx.models.transformer import REMAT_POLICIES, check_remat_policy
from lmx.models.two_stream import XLNetLayer, distances, query_index, sinusoid

Array = jax.Array


def check_xlnet_config(m: ml_collections.ConfigDict) -> None:
    """ConfigError naming the field for settings this XLNet does not have."""
    if m.num_kv_heads:
        raise ConfigError(
            f"config.model.num_kv_heads={m.num_kv_heads}: XLNet has one key/value head per query head; set 0"
        )
    if m.moe.num_experts:
        raise ConfigError(f"config.model.moe.num_experts={m.moe.num_experts}: XLNet's MLPs are dense here; set 0")
    if m.embed_dim % 2:
        raise ConfigError(f"config.model.embed_dim={m.embed_dim} must be even (sinusoid encodings pair sin and cos)")


def attention_masks(
    segments: Array, ranks: Array, target_positions: Array | None, memory_len: int
) -> tuple[Array, Array | None]:
    """The boolean masks of both streams (module docstring, step 2) over the keys [memory; segment].

    segments, ranks: [B, L]; target_positions: [B, P] or None. Returns content [B, L, M + L] and query [B, P, M + L]
    (None without target positions): True where the query may attend to the key.
    """
    batch, length = segments.shape
    same = make_attention_mask(segments, segments)[:, 0]  # [B, L, L] same segment, neither padding
    content = same & (ranks[:, None, :] <= ranks[:, :, None])  # key rank <= query rank
    if memory_len:
        real = jnp.broadcast_to((segments != 0)[:, :, None], (batch, length, memory_len))
        content = jnp.concatenate([real, content], axis=-1)  # [B, L, M + L]
    if target_positions is None:
        return content, None
    rows = jnp.take_along_axis(content, target_positions[:, :, None], axis=1)  # [B, P, K]
    itself = (memory_len + target_positions)[:, :, None] == jnp.arange(memory_len + length)[None, None, :]
    return content, rows & ~itself


def last_token_summary(hidden: Array, segments: Array) -> Array:
    """[B, L, D] -> [B, D]: the hidden state of each row's last real token (XLNet's "last" summary: its inputs end
    with <sep> <cls>; lmx pads on the right, so the last token is the last with a nonzero segment id)."""
    length = segments.shape[1]
    last = length - 1 - jnp.argmax((segments != 0)[:, ::-1], axis=1)  # [B]
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


class XLNetStack(nn.Module):
    """The layers, scanned (parameters stacked on `layers`; the memory of each layer a scanned input and output)
    or unrolled (layers_0, layers_1, ...), rematerialised by config.model.remat_policy."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(
        self, h: Array, g: Array | None, memory: Array | None, context: dict, *, deterministic: bool
    ) -> tuple[Array, Array | None, Array | None]:
        # h [B, L, D]; g [B, P, D] or None; memory [layers, B, M, D] or None -> (h, g, next memory like memory)
        cfg = self.config
        layer = XLNetLayer
        if cfg.remat_policy != "none":
            layer = nn.remat(layer, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            stack = nn.scan(
                layer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(0, nn.broadcast),
                length=cfg.num_encoder_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, deterministic, name="layers")
            (h, g), next_memory = stack((h, g), memory, context)
            return h, g, next_memory
        memories = []
        for i in range(cfg.num_encoder_layers):
            layer_memory = None if memory is None else memory[i]
            (h, g), m = layer(cfg, deterministic, name=f"layers_{i}")((h, g), layer_memory, context)
            memories.append(m)
        return h, g, None if memories[0] is None else jnp.stack(memories)


class XLNet(nn.Module):
    """The model contract: `__call__(batch, carry=None) -> {"logits", "aux", "carry"}`; `encode` and `summary` for
    heads of other tasks; `initial_carry(rows)` for the train state."""

    config: ml_collections.ConfigDict  # the config.model section

    def setup(self):
        cfg = self.config
        check_remat_policy(cfg.remat_policy)
        check_xlnet_config(cfg)
        self.token_embedder = Embed(
            cfg.vocab_size, cfg.embed_dim, dtype=dtype_of(cfg.dtype), embedding_init=Inits.of(cfg).embedding()
        )
        self.mask_embedding = self.param(
            "mask_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(cfg.init_stddev), ("embed",)),
            (cfg.embed_dim,),
        )
        self.output_bias = self.param(
            "output_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)), (cfg.vocab_size,)
        )
        self.encoder = XLNetStack(cfg)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def initial_carry(self, rows: int) -> Array | None:
        """The memory before the first segment of each of `rows` streams: zeros [rows, layers, M, D] (the released
        code also starts from zeros), or None without recurrence (mem_len 0)."""
        cfg = self.config
        if not cfg.mem_len:
            return None
        return jnp.zeros((rows, cfg.num_encoder_layers, cfg.mem_len, cfg.embed_dim), dtype_of(cfg.dtype))

    def streams(
        self, batch: Mapping[str, Array], *, deterministic: bool, carry: Array | None = None
    ) -> tuple[Array, Array | None, Array | None]:
        """(content stream h [B, L, D], query stream g [B, P, D] or None, next carry or None) after the last layer."""
        cfg = self.config
        tokens, segments, _ = stream_inputs(batch, "encoder")
        batch_size, length = tokens.shape
        if length > cfg.max_length:
            raise ValueError(f"encoder_input_tokens has length {length} > config.model.max_length={cfg.max_length}")
        memory_len = 0 if carry is None else carry.shape[2]
        ranks = batch.get("encoder_perm_rank")
        ranks = jnp.zeros_like(tokens) if ranks is None else ranks
        targets = batch.get("encoder_target_positions")  # [B, P] or None
        content, query = attention_masks(segments, ranks, targets, memory_len)
        key_len = memory_len + length
        # Relative positions: the sinusoids of every distance, dropped out once for all layers (as the released code).
        positions = sinusoid(distances(memory_len, length), cfg.embed_dim)  # [R, D]
        context = {
            "content_bias": mask_to_bias(content)[:, None],  # [B, 1, L, K]
            "positions": self.dropout(positions, deterministic=deterministic).astype(dtype_of(cfg.dtype)),
            "content_types": None,
            "query_types": None,
        }
        types = batch.get("encoder_token_types")
        if types is not None:  # relative segment encoding: same or different token type; the memory is type 0
            key_types = jnp.concatenate([jnp.zeros((batch_size, memory_len), types.dtype), types], axis=1)
            context["content_types"] = types[:, :, None] != key_types[:, None, :]  # [B, L, K]
        h = self.dropout(self.token_embedder(tokens), deterministic=deterministic)  # [B, L, D]
        g = None
        if targets is not None:
            context["query_bias"] = mask_to_bias(query)[:, None]  # [B, 1, P, K]
            context["query_index"] = query_index(targets, length, key_len)  # [B, P, K]
            if types is not None:
                context["query_types"] = jnp.take_along_axis(context["content_types"], targets[:, :, None], axis=1)
            w = self.mask_embedding.astype(h.dtype)
            g = self.dropout(
                jnp.broadcast_to(w, (batch_size, targets.shape[1], cfg.embed_dim)), deterministic=deterministic
            )
            g = nn.with_logical_constraint(g, ("batch", "length", "embed"))
        # The memory is kept in the compute dtype (initial_carry's), whatever dtype a caller's carry came in.
        memory = None if carry is None else jnp.swapaxes(carry, 0, 1).astype(dtype_of(cfg.dtype))  # [layers, B, M, D]
        h, g, next_memory = self.encoder(h, g, memory, context, deterministic=deterministic)
        next_carry = None if next_memory is None else jnp.swapaxes(next_memory, 0, 1)  # [B, layers, M, D]
        return h, g, next_carry

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False, carry: Array | None = None) -> dict:
        deterministic = not enable_dropout
        h, g, next_carry = self.streams(batch, deterministic=deterministic, carry=carry)
        out = self.dropout(h if g is None else g, deterministic=deterministic)  # [B, P or L, D]
        logits = self.token_embedder.attend(out) + self.output_bias.astype(out.dtype)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        outputs = {"logits": logits.astype(jnp.float32), "aux": {}}
        if next_carry is not None:
            outputs["carry"] = next_carry
        return outputs

    def encode(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> tuple[Array, dict]:
        """Features -> (content-stream hidden states [B, L, D], aux): bidirectional over each segment (no query
        stream, no memory), the representation XLNet fine-tunes."""
        plain = {k: v for k, v in batch.items() if k not in ("encoder_perm_rank", "encoder_target_positions")}
        h, _, _ = self.streams(plain, deterministic=not enable_dropout)
        return h, {}

    def summary(self, hidden: Array, batch: Mapping[str, Array]) -> Array:
        """[B, L, D] hidden states of `encode` -> [B, D] at each row's last real token (`last_token_summary`)."""
        _, segments, _ = stream_inputs(batch, "encoder")
        return last_token_summary(hidden, segments)
