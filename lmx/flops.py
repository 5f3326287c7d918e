"""Model FLOPs of a train step and parameter counts, from config dimensions alone (nothing is traced).

Model FLOPs follow PaLM (Chowdhery et al. 2022, appendix B): the matmul work a step *must* do, whatever the
implementation, so rematerialisation, padding waste and non-matmul ops (norms, softmax, the optimizer) are not
counted. MFU = model FLOPs per second / peak FLOPs per second.

For every weight matrix W [m, n] applied to a token: the forward pass costs 2 m n FLOPs (a multiply and an add
per multiply-accumulate), the backward pass twice that (gradients of the input and of W), so 6 m n per token
per step. Summed over the weights a token touches:

    dense FLOPs = 6 x (matmul parameters touched per token) x tokens

Attention adds two activation-activation matmuls per layer, QK^T ([Q, H] x [H, K] per head) and AV ([Q, K] x
[K, H] per head): 2 x N x H x Q x K multiply-accumulates per row, forward 4 N H Q K FLOPs, with backward

    attention FLOPs = 12 x layers x N x H x Q x K per row

(PaLM's 12 L H Q T per token with Q = K = T). For T5 (N heads of size H, batch B, S encoder and T decoder
tokens per row):
    encoder self-attention      Q = S, K = S
    decoder self-attention      Q = T, K = T   (the causal mask hides half, but the matmuls compute all of it)
    decoder cross-attention     Q = T, K = S

Each stack counts its own tokens: encoder weights S x B per step, decoder weights T x B. The cross-attention key
and value projections read the encoder output, so they run on S x B tokens. Embedding lookups are gathers (no
FLOPs); the output projection [embed, vocab] runs on every decoder token, tied or not.

Mixture-of-experts (not built yet) enters in `_mlp_params`: total parameters count every expert plus the router,
the per-token (active) count top-k experts plus the router; the FLOPs use the active count.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections


def _attention_params(config: ml_collections.ConfigDict) -> int:
    """One of the q, k, v, o projections: [embed, heads, kv] (or its transpose)."""
    return config.embed_dim * config.num_heads * config.head_dim


def _mlp_params(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(total, active per token) of one MLP block: one [embed, mlp] input kernel per activation, one output kernel.

    A MoE block would return (experts x dense + router, top_k x dense + router) here.
    """
    dense = (len(config.mlp_activations) + 1) * config.embed_dim * config.mlp_dim
    return dense, dense


def _encoder_decoder(model: ml_collections.ConfigDict, batch: int, inputs: int, targets: int) -> dict[str, float]:
    """Train-step FLOPs and parameter counts of lmx.models.transformer.EncoderDecoder (T5.1.1)."""
    d, n, h, v = model.embed_dim, model.num_heads, model.head_dim, model.vocab_size
    enc_layers, dec_layers = model.num_encoder_layers, model.num_decoder_layers
    attn = _attention_params(model)
    mlp_total, mlp_active = _mlp_params(model)
    enc_tokens, dec_tokens = batch * inputs, batch * targets

    # Matmul parameters touched per token of each stream.
    encoder_per_token = enc_layers * (4 * attn + mlp_active)  # self q, k, v, o + MLP
    decoder_per_token = dec_layers * (4 * attn + 2 * attn + mlp_active)  # self q, k, v, o + cross q, o + MLP
    cross_kv_per_encoder_token = dec_layers * 2 * attn  # cross-attention k, v read the encoder output
    logits_per_token = d * v

    attention_per_row = (
        enc_layers * n * h * inputs * inputs  # encoder self-attention
        + dec_layers * n * h * targets * targets  # decoder self-attention (full T x T, masked)
        + dec_layers * n * h * targets * inputs  # cross-attention
    )
    breakdown = {
        "encoder": 6 * encoder_per_token * enc_tokens,
        "decoder": 6 * (decoder_per_token * dec_tokens + cross_kv_per_encoder_token * enc_tokens),
        "logits": 6 * logits_per_token * dec_tokens,
        "attention": 12 * attention_per_row * batch,
    }

    # Parameter counts (what the model's init creates): matmul kernels plus embedding, norms, relative positions.
    norms = enc_layers * 2 * d + d + dec_layers * 3 * d + d  # pre-attn/pre-mlp (+ pre-cross), final norms
    relpos = 2 * model.relpos_num_buckets * n  # one table per stack
    embedding = v * d
    output = 0 if model.tie_embeddings else d * v
    kernels_total = enc_layers * (4 * attn + mlp_total) + dec_layers * (8 * attn + mlp_total)
    kernels_active = enc_layers * (4 * attn + mlp_active) + dec_layers * (8 * attn + mlp_active)
    rest = norms + relpos + embedding + output
    return {
        **breakdown,
        "total": sum(breakdown.values()),
        "params": kernels_total + rest,
        "active_params": kernels_active + rest,
        "tokens": enc_tokens + dec_tokens,
    }


# config.model.name -> counter(model_config, batch rows, inputs_length, targets_length).
COUNTERS: dict[str, Callable[..., dict[str, float]]] = {"encoder_decoder": _encoder_decoder}


def train_flops_per_step(config: ml_collections.ConfigDict) -> dict[str, float]:
    """Model FLOPs of one train step of `config` (the global batch, forward + backward) and parameter counts.

    Returns {"encoder", "decoder", "logits", "attention"}: FLOPs of each part; "total": their sum;
    "params": parameters of the model; "active_params": parameters a token touches (= params for a dense model);
    "tokens": (inputs + targets) x batch, the tokens of a step as lmx.train counts them.
    """
    name = config.model.name
    if name not in COUNTERS:
        raise ValueError(f"no FLOP counter for config.model.name={name!r}; known: {sorted(COUNTERS)}")
    return COUNTERS[name](config.model, config.train.batch_size, config.data.inputs_length, config.data.targets_length)
