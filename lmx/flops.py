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

(PaLM's 12 L H Q T per token with Q = K = T). A causal layer counts the whole Q x K square (the matmuls compute
it); a locally banded layer (GPT-3) counts K = the band per query. Per family (S encoder, T decoder tokens per row):
    encoder self-attention      Q = S, K = S
    decoder self-attention      Q = T, K = T
    decoder cross-attention     Q = T, K = S   (its key and value projections run on the S encoder tokens)
Embedding lookups are gathers (no FLOPs); output projections run on every token that has a loss-bearing output
(decoder tokens; all encoder tokens for MLM), tied or not.

Mixture-of-experts layers (every moe_every-th layer of a stack, `_mlp`): total parameters count every expert plus
the router [D, E]; a token touches the router and the experts it is routed to: k x one dense MLP for top-k routing,
E x C / S for expert choice (each of the E experts takes C of a group's S tokens). The FLOPs use this active count.
Capacity padding (empty expert slots), dropped tokens and the dispatch/combine einsums (data movement written as
one-hot matmuls) are not model FLOPs: they depend on the implementation, not on the model.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from lmx.data import tasks
from lmx.models.electra import generator_config
from lmx.models.moe import ROUTERS
from lmx.models.routing import expert_capacity
from lmx.models.transformer import layer_pattern


def _attention_params(m: ml_collections.ConfigDict) -> tuple[int, int]:
    """(query + output, key + value) kernel and bias parameters of one attention layer (GQA: fewer kv heads)."""
    d, n, h = m.embed_dim, m.num_heads, m.head_dim
    kv = m.num_kv_heads or n
    q_and_o = 2 * d * n * h + (n * h + d if m.use_bias else 0)
    k_and_v = 2 * d * kv * h + (2 * kv * h if m.use_bias else 0)
    return q_and_o, k_and_v


def _dense_mlp_params(m: ml_collections.ConfigDict) -> int:
    """One dense MLP: one [embed, mlp] input kernel per activation, one output kernel (+ biases)."""
    acts = len(m.mlp_activations)
    return (acts + 1) * m.embed_dim * m.mlp_dim + ((acts * m.mlp_dim + m.embed_dim) if m.use_bias else 0)


def _experts_per_token(m: ml_collections.ConfigDict, length: int) -> float:
    """How many experts process a token on average: k of top-k routing; E x C / S for expert choice, with the
    training capacity C of a routing group of S tokens (one sequence of `length` unless moe.group_size is set)."""
    moe = m.moe
    if moe.router != "expert_choice":
        return ROUTERS[moe.router]
    group = moe.group_size or length
    capacity = expert_capacity(group, moe.num_experts, 1, moe.capacity_factor_train, moe.min_capacity)
    return moe.num_experts * capacity / group


def _mlp(m: ml_collections.ConfigDict, layers: int, length: int) -> tuple[int, float]:
    """(total parameters, parameters a token touches) of the MLPs of `layers` consecutive layers of a stack whose
    rows have `length` tokens: dense ones and, every moe_every-th layer (lmx.models.transformer.layer_pattern),
    mixture-of-experts ones (module docstring)."""
    dense = _dense_mlp_params(m)
    moe_layers = layers // m.moe.moe_every if m.moe.num_experts else 0
    router = m.embed_dim * m.moe.num_experts
    total = (layers - moe_layers) * dense + moe_layers * (m.moe.num_experts * dense + router)
    active = (layers - moe_layers) * dense + moe_layers * (_experts_per_token(m, length) * dense + router)
    return total, active


def _norm_params(m: ml_collections.ConfigDict, width: int | None = None) -> int:
    return (2 if m.norm == "layer" else 1) * (width or m.embed_dim)


def _stack(m, layers: int, *, cross: bool, length: int) -> dict[str, float]:
    """Per-stack parameter counts: kernels a token touches (active), all of them, and norms. `length`: tokens per
    row of the stack (expert choice's experts per token depend on it)."""
    q_and_o, k_and_v = _attention_params(m)
    attention = (q_and_o + k_and_v) * (2 if cross else 1)
    norms = (3 if cross else 2) * _norm_params(m)
    _, mlp_active = _mlp(m, layers, length)
    # ALBERT shares one block's (one period's, with experts) parameters among all layers.
    stored = len(layer_pattern(m, layers, causal=cross)) if m.share_layers else layers
    mlp_stored, mlp_stored_active = _mlp(m, stored, length)
    return {
        "per_token": layers * (attention - (k_and_v if cross else 0)) + mlp_active,  # cross k, v: encoder tokens
        "cross_kv_per_encoder_token": layers * k_and_v if cross else 0,
        "params": stored * (attention + norms) + mlp_stored,
        "active_params": stored * (attention + norms) + mlp_stored_active,
    }


def _attention_flops(m, layers: int, rows: int, queries: int, keys: int) -> int:
    return 12 * layers * m.num_heads * m.head_dim * queries * keys * rows


def _banded_layers(m, layers: int) -> int:
    return layers // 2 if m.attention_pattern == "alternating_banded" else 0


def _encoder_decoder(m, batch: int, lengths: dict[str, int]) -> dict[str, float]:
    """T5 (lmx.models.encoder_decoder): encoder, decoder with cross-attention, (un)tied logits."""
    d, v = m.embed_dim, m.vocab_size
    s, t = lengths["encoder_input_tokens"], lengths["decoder_input_tokens"]
    enc = _stack(m, m.num_encoder_layers, cross=False, length=s)
    dec = _stack(m, m.num_decoder_layers, cross=True, length=t)
    relpos = 2 * m.relpos_num_buckets * m.num_heads  # one table per stack
    rest = v * d + (0 if m.tie_embeddings else d * v) + 2 * _norm_params(m) + relpos
    return {
        "encoder": 6 * enc["per_token"] * batch * s,
        "decoder": 6 * (dec["per_token"] * batch * t + dec["cross_kv_per_encoder_token"] * batch * s),
        "logits": 6 * d * v * batch * t,
        "attention": _attention_flops(m, m.num_encoder_layers, batch, s, s)
        + _attention_flops(m, m.num_decoder_layers, batch, t, t)
        + _attention_flops(m, m.num_decoder_layers, batch, t, s),
        "params": enc["params"] + dec["params"] + rest,
        "active_params": enc["active_params"] + dec["active_params"] + rest,
    }


def _embedder_params(m) -> int:
    """lmx.models.embeddings.Embedder: token, position and token-type tables, norm, ALBERT projection."""
    width = m.embed_proj_dim or m.embed_dim
    count = m.vocab_size * width + m.type_vocab_size * width
    count += m.max_length * width if m.position_embedding == "learned" else 0
    count += _norm_params(m, width) if m.norm_position == "post" else 0
    if m.embed_proj_dim:
        count += width * m.embed_dim + (m.embed_dim if m.use_bias else 0)
    return count


def _decoder_only(m, batch: int, lengths: dict[str, int]) -> dict[str, float]:
    """GPT-2/3 and the modern decoder (lmx.models.decoder_only)."""
    d, v, layers = m.embed_dim, m.vocab_size, m.num_decoder_layers
    t = lengths["decoder_input_tokens"]
    dec = _stack(m, layers, cross=False, length=t)
    banded = _banded_layers(m, layers)
    rest = _embedder_params(m) + _norm_params(m) + (0 if m.tie_embeddings else d * v)
    return {
        "decoder": 6 * dec["per_token"] * batch * t,
        "logits": 6 * d * v * batch * t,
        "attention": _attention_flops(m, layers - banded, batch, t, t)
        + _attention_flops(m, banded, batch, t, min(m.attention_band, t)),
        "params": dec["params"] + rest,
        "active_params": dec["active_params"] + rest,
    }


def _encoder_only(m, batch: int, lengths: dict[str, int]) -> dict[str, float]:
    """BERT/ALBERT (lmx.models.encoder_only): encoder, MLM head on every token, pooler and NSP/SOP classifier on
    the first."""
    d, v, layers = m.embed_dim, m.vocab_size, m.num_encoder_layers
    width = m.embed_proj_dim or d
    s = lengths["encoder_input_tokens"]
    enc = _stack(m, layers, cross=False, length=s)
    head = d * width + width + _norm_params(m, width) + v  # MLM transform (+ bias), norm, output bias
    pooler = d * d + d + 2 * d + 2  # pooler dense (+ bias), the two-class pair classifier (+ bias)
    rest = _embedder_params(m) + head + pooler + (_norm_params(m) if m.norm_position == "pre" else 0)
    embedding_projection = width * m.embed_dim if m.embed_proj_dim else 0
    return {
        "encoder": 6 * (enc["per_token"] + embedding_projection) * batch * s + 6 * pooler * batch,
        "logits": 6 * (d * width + width * v) * batch * s,
        "attention": _attention_flops(m, layers, batch, s, s),
        "params": enc["params"] + rest,
        "active_params": enc["active_params"] + rest,
    }


def _electra(m, batch: int, lengths: dict[str, int]) -> dict[str, float]:
    """ELECTRA (lmx.models.electra): the discriminator (encoder + replaced-token head on every token) and the
    generator (its own width, the same depth, its projection from the shared embeddings, BERT's MLM head over the
    shared token table on every token), sharing the embeddings. Both encoders count as "encoder"; the generator's
    output layer is "logits"."""
    g = generator_config(m)
    d, v, layers = m.embed_dim, m.vocab_size, m.num_encoder_layers
    width = m.embed_proj_dim or d  # E, the shared embeddings
    s = lengths["encoder_input_tokens"]
    disc, gen = _stack(m, layers, cross=False, length=s), _stack(g, layers, cross=False, length=s)
    disc_projection = width * d if m.embed_proj_dim else 0  # counted in _embedder_params with its bias
    gen_projection = width * g.embed_dim if g.embed_dim != width else 0
    disc_head = d * d + d * 1  # rtd_transform, rtd_output kernels
    gen_head = g.embed_dim * width  # mlm_transform kernel; the output matrix is the token table
    gen_rest = (g.embed_dim if gen_projection and m.use_bias else 0) + width + _norm_params(g, width) + v
    final_norms = _norm_params(m) + _norm_params(g) if m.norm_position == "pre" else 0  # pre-norm stacks end in one
    # shared embeddings, head kernels and biases, generator projection bias, mlm_transform bias, mlm_norm, output bias
    rest = _embedder_params(m) + disc_head + d + 1 + gen_projection + gen_head + gen_rest + final_norms
    per_token = disc["per_token"] + disc_projection + disc_head + gen["per_token"] + gen_projection
    return {
        "encoder": 6 * per_token * batch * s,
        "logits": 6 * (gen_head + width * v) * batch * s,
        "attention": _attention_flops(m, layers, batch, s, s) + _attention_flops(g, layers, batch, s, s),
        "params": disc["params"] + gen["params"] + rest,
        "active_params": disc["active_params"] + gen["active_params"] + rest,
    }


def _xlnet(m, batch: int, lengths: dict[str, int]) -> dict[str, float]:
    """XLNet (lmx.models.xlnet): the content stream on all S tokens, the query stream on the P predicted slots with
    the same weights (its query and output projections and the MLP; keys and values are the content stream's), the
    key and value projections of the M memory states, the position keys W_r R once per layer for the R = M + 2S - 1
    distances, and the tied output layer on the P predictions. Attention: scores against the M + S keys, their
    weighted values, and the position scores against the R distances (one more [Q, H] x [H, R] product per head)."""
    d, v, layers, memory = m.embed_dim, m.vocab_size, m.num_encoder_layers, m.mem_len
    nh = m.num_heads * m.head_dim
    s, p = lengths["encoder_input_tokens"], lengths["encoder_target_positions"]
    keys, distances = memory + s, memory + 2 * s - 1
    mlp_params, mlp_active = _mlp(m, layers, s)
    layer = 5 * d * nh + 5 * nh + 2 * _norm_params(m)  # q, k, v, r, o; u, v, s and the 2 segment embeddings; norms
    per_token = layers * 4 * d * nh + mlp_active  # content stream: q, k, v, o and the MLP
    per_prediction = layers * 2 * d * nh + mlp_active  # query stream: q, o and the MLP
    dense = batch * (s * per_token + p * per_prediction + memory * layers * 2 * d * nh) + layers * distances * d * nh
    params = layers * layer + mlp_params + v * d + d + v  # + token table, mask embedding w, output bias
    return {
        "encoder": 6 * dense,
        "logits": 6 * d * v * batch * p,
        "attention": _attention_flops(m, layers, batch, s + p, keys) + 6 * layers * nh * (s + p) * distances * batch,
        "params": params,
        "active_params": params,
    }


# config.model.name -> counter(model_config, batch rows, model feature lengths).
COUNTERS: dict[str, Callable[..., dict[str, float]]] = {
    "encoder_decoder": _encoder_decoder,
    "decoder_only": _decoder_only,
    "encoder_only": _encoder_only,
    "electra": _electra,
    "xlnet": _xlnet,
}

PARTS = ("encoder", "decoder", "logits", "attention")


def train_flops_per_step(config: ml_collections.ConfigDict) -> dict[str, float]:
    """Model FLOPs of one train step of `config` (the global batch, forward + backward) and parameter counts.

    Returns PARTS (FLOPs of each part; 0 where a family has none); "total": their sum; "params": parameters of the
    model; "active_params": parameters a token touches (= params for a dense model); "tokens": the input tokens of
    a step (every `*_input_tokens` position, as lmx.train counts them).
    """
    name = config.model.name
    if name not in COUNTERS:
        raise ValueError(f"no FLOP counter for config.model.name={name!r}; known: {sorted(COUNTERS)}")
    lengths = tasks.model_feature_lengths(config.data)
    count = {part: 0 for part in PARTS}
    count.update(COUNTERS[name](config.model, config.train.batch_size, lengths))
    count["total"] = sum(count[part] for part in PARTS)
    count["tokens"] = config.train.batch_size * tasks.input_tokens_per_row(config.data)
    return count
