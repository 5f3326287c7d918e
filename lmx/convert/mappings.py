"""Hugging Face tensor names <-> lmx parameter paths, with the transform between their layouts: one table per family.

An entry names one tensor of the HF state dict and the lmx parameter(s) it holds, in the *unrolled* lmx layout
(`layers_{i}`; lmx.models.transformer.stack_unrolled_params / unstack_scanned_params convert to and from the scanned
one). "{i}" in both names runs over the layers of the stack the entry names. Layouts:
  torch nn.Linear weight          [out, in]        lmx kernels are [in, out]
  attention q/k/v (Linear)        [heads * kv, D]  lmx [embed, heads, kv]; biases [heads * kv] -> [heads, kv]
  attention output (Linear)       [D, heads * kv]  lmx [heads, kv, embed]
  GPT-2's Conv1D weight           [in, out]        already lmx's order; c_attn holds q, k and v side by side
Each table also lists HF's tied weights (alias -> the tensor it repeats; checkpoints may or may not store the alias)
and the buffers older checkpoints store that are not parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import ml_collections

Array = jnp.ndarray


@dataclasses.dataclass(frozen=True)
class Transform:
    """to_lmx(hf_tensor, head_dim) -> one array per lmx path; to_hf(*lmx_arrays, head_dim) -> the HF tensor.

    Written with array methods (.T, .reshape, slicing), so numpy arrays stay numpy (no device round trip) and
    jax.eval_shape can trace them to compute shapes without data."""

    name: str
    to_lmx: Callable[..., tuple[Array, ...]]
    to_hf: Callable[..., Array]


SAME = Transform("same", lambda x, h: (x,), lambda x, h: x)
# torch Linear [out, in] <-> kernel [in, out]
LINEAR = Transform("linear", lambda x, h: (x.T,), lambda k, h: k.T)
# Linear [heads * kv, D] <-> [D, heads, kv]
QKV = Transform("qkv", lambda x, h: (x.T.reshape(x.shape[1], -1, h),), lambda k, h: k.reshape(k.shape[0], -1).T)
# [heads * kv] <-> [heads, kv]
QKV_BIAS = Transform("qkv_bias", lambda x, h: (x.reshape(-1, h),), lambda b, h: b.reshape(-1))
# Linear [D, heads * kv] <-> [heads, kv, D]
OUT = Transform("out", lambda x, h: (x.T.reshape(-1, h, x.shape[0]),), lambda k, h: k.reshape(-1, k.shape[-1]).T)


def _thirds(x):
    """q, k, v side by side on the last axis -> the three parts (slicing: numpy arrays stay numpy)."""
    n = x.shape[-1] // 3
    return x[..., :n], x[..., n : 2 * n], x[..., 2 * n :]


# GPT-2 Conv1D c_attn [D, 3 heads kv] <-> query, key, value [D, heads, kv]
CONV_QKV = Transform(
    "conv1d_qkv",
    lambda x, h: tuple(p.reshape(x.shape[0], -1, h) for p in _thirds(x)),
    lambda q, k, v, h: jnp.concatenate([a.reshape(a.shape[0], -1) for a in (q, k, v)], axis=1),
)
# c_attn bias [3 heads kv] <-> 3 x [heads, kv]
CONV_QKV_BIAS = Transform(
    "conv1d_qkv_bias",
    lambda x, h: tuple(p.reshape(-1, h) for p in _thirds(x)),
    lambda q, k, v, h: jnp.concatenate([a.reshape(-1) for a in (q, k, v)]),
)
# GPT-2 Conv1D attention c_proj [heads kv, D] <-> [heads, kv, D]
CONV_OUT = Transform(
    "conv1d_out", lambda x, h: (x.reshape(-1, h, x.shape[1]),), lambda k, h: k.reshape(-1, k.shape[-1])
)


def _untied(c: ml_collections.ConfigDict) -> bool:
    return not c.tie_embeddings


def _gated(c: ml_collections.ConfigDict) -> bool:
    return len(c.mlp_activations) > 1


def _dense_mlp(c: ml_collections.ConfigDict) -> bool:
    return len(c.mlp_activations) == 1


@dataclasses.dataclass(frozen=True)
class Entry:
    hf: str  # HF tensor name ("{i}": layer index)
    lmx: tuple[str, ...]  # lmx parameter path(s), "/"-separated, unrolled layout
    transform: Transform = SAME
    layers: str | None = None  # config.model field with the number of layers "{i}" runs over
    when: Callable[[ml_collections.ConfigDict], bool] | None = None  # only for configs where this holds
    # Layers "{i}" runs over: all (None), only the mixture-of-experts ones (True) or only the dense ones (False).
    moe_layers: bool | None = None


def entry(hf, lmx, transform=SAME, layers=None, when=None, moe_layers=None) -> Entry:
    return Entry(hf, (lmx,) if isinstance(lmx, str) else tuple(lmx), transform, layers, when, moe_layers)


@dataclasses.dataclass(frozen=True)
class TensorTable:
    entries: tuple[Entry, ...]
    tied: Mapping[str, str]  # HF alias -> the tensor it repeats (transformers' _tied_weights_keys)
    ignored: tuple[str, ...] = ()  # regexes of HF buffers that are not parameters (older checkpoints store them)
    base_prefix: str = ""  # transformers' base_model_prefix + "."; base-model checkpoints leave it out


def _attention(hf: str, lmx: str, layers: str) -> tuple[Entry, ...]:
    """T5's attention: the four bias-free torch Linear projections {hf}.q/k/v/o.weight."""
    rows = []
    for proj, name in (("q", "query"), ("k", "key"), ("v", "value")):
        rows.append(entry(f"{hf}.{proj}.weight", f"{lmx}/{name}/kernel", QKV, layers))
    rows.append(entry(f"{hf}.o.weight", f"{lmx}/out/kernel", OUT, layers))
    return tuple(rows)


def _t5_stack(stack: str, layers: str, cross: bool) -> tuple[Entry, ...]:
    block, lmx = f"{stack}.block.{{i}}.layer", f"{stack}/layers_{{i}}"
    mlp_index = 2 if cross else 1
    rows = [
        # HF keeps the stack's one relative position bias in block 0's self-attention.
        entry(
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            f"{stack}/relpos_bias/rel_embedding",
        ),
        entry(f"{stack}.final_layer_norm.weight", f"{stack}/{stack}_norm/scale"),
        entry(f"{block}.0.layer_norm.weight", f"{lmx}/pre_self_attention_layer_norm/scale", layers=layers),
        *_attention(f"{block}.0.SelfAttention", f"{lmx}/self_attention", layers),
        entry(f"{block}.{mlp_index}.layer_norm.weight", f"{lmx}/pre_mlp_layer_norm/scale", layers=layers),
        entry(f"{block}.{mlp_index}.DenseReluDense.wi.weight", f"{lmx}/mlp/wi/kernel", LINEAR, layers, _dense_mlp),
        entry(f"{block}.{mlp_index}.DenseReluDense.wi_0.weight", f"{lmx}/mlp/wi_0/kernel", LINEAR, layers, _gated),
        entry(f"{block}.{mlp_index}.DenseReluDense.wi_1.weight", f"{lmx}/mlp/wi_1/kernel", LINEAR, layers, _gated),
        entry(f"{block}.{mlp_index}.DenseReluDense.wo.weight", f"{lmx}/mlp/wo/kernel", LINEAR, layers),
    ]
    if cross:
        rows += [
            entry(f"{block}.1.layer_norm.weight", f"{lmx}/pre_cross_attention_layer_norm/scale", layers=layers),
            *_attention(f"{block}.1.EncDecAttention", f"{lmx}/encoder_decoder_attention", layers),
        ]
    return tuple(rows)


T5 = TensorTable(
    entries=(
        entry("shared.weight", "token_embedder/embedding"),
        *_t5_stack("encoder", "num_encoder_layers", cross=False),
        *_t5_stack("decoder", "num_decoder_layers", cross=True),
        entry("lm_head.weight", "decoder/logits_dense/kernel", LINEAR, when=_untied),  # T5.1.1
    ),
    tied={
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
        "lm_head.weight": "shared.weight",
    },
    # Some checkpoints store a relative bias for the first cross-attention, which T5 never uses.
    ignored=(r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",),
)


def _layer_norm(hf: str, lmx: str, layers: str | None = None) -> tuple[Entry, ...]:
    return (entry(f"{hf}.weight", f"{lmx}/scale", layers=layers), entry(f"{hf}.bias", f"{lmx}/bias", layers=layers))


def _linear(hf: str, lmx: str, layers: str | None = None, kernel=LINEAR, bias=SAME) -> tuple[Entry, ...]:
    return (entry(f"{hf}.weight", f"{lmx}/kernel", kernel, layers), entry(f"{hf}.bias", f"{lmx}/bias", bias, layers))


_GPT2_LAYER = "transformer.h.{i}"
_GPT2_LMX = "decoder/layers_{i}"
_N = "num_decoder_layers"
GPT2 = TensorTable(
    entries=(
        entry("transformer.wte.weight", "embedder/token_embedder/embedding"),
        entry("transformer.wpe.weight", "embedder/position_embedder/embedding"),
        *_layer_norm(f"{_GPT2_LAYER}.ln_1", f"{_GPT2_LMX}/pre_self_attention_layer_norm", _N),
        entry(
            f"{_GPT2_LAYER}.attn.c_attn.weight",
            [f"{_GPT2_LMX}/self_attention/{p}/kernel" for p in ("query", "key", "value")],
            CONV_QKV,
            _N,
        ),
        entry(
            f"{_GPT2_LAYER}.attn.c_attn.bias",
            [f"{_GPT2_LMX}/self_attention/{p}/bias" for p in ("query", "key", "value")],
            CONV_QKV_BIAS,
            _N,
        ),
        *_linear(f"{_GPT2_LAYER}.attn.c_proj", f"{_GPT2_LMX}/self_attention/out", _N, kernel=CONV_OUT),
        *_layer_norm(f"{_GPT2_LAYER}.ln_2", f"{_GPT2_LMX}/pre_mlp_layer_norm", _N),
        *_linear(f"{_GPT2_LAYER}.mlp.c_fc", f"{_GPT2_LMX}/mlp/wi", _N, kernel=SAME),
        *_linear(f"{_GPT2_LAYER}.mlp.c_proj", f"{_GPT2_LMX}/mlp/wo", _N, kernel=SAME),
        *_layer_norm("transformer.ln_f", "decoder/decoder_norm"),
        entry("lm_head.weight", "logits_dense/kernel", LINEAR, when=_untied),
    ),
    tied={"lm_head.weight": "transformer.wte.weight"},
    # The causal mask buffers of checkpoints written before transformers 4.x made them non-persistent.
    ignored=(r"transformer\.h\.\d+\.attn\.(masked_)?bias",),
    base_prefix="transformer.",
)


def _bert_layer(hf: str, parts: Mapping[str, str], lmx: str, layers: str | None) -> tuple[Entry, ...]:
    """One BERT-style post-norm layer: hf + "." + parts[role] names each tensor (BERT's and ALBERT's differ)."""

    def name(role):
        return f"{hf}.{parts[role]}"

    return (
        *_linear(name("query"), f"{lmx}/self_attention/query", layers, QKV, QKV_BIAS),
        *_linear(name("key"), f"{lmx}/self_attention/key", layers, QKV, QKV_BIAS),
        *_linear(name("value"), f"{lmx}/self_attention/value", layers, QKV, QKV_BIAS),
        *_linear(name("attention_out"), f"{lmx}/self_attention/out", layers, OUT),
        *_layer_norm(name("attention_norm"), f"{lmx}/post_self_attention_layer_norm", layers),
        *_linear(name("mlp_in"), f"{lmx}/mlp/wi", layers),
        *_linear(name("mlp_out"), f"{lmx}/mlp/wo", layers),
        *_layer_norm(name("mlp_norm"), f"{lmx}/post_mlp_layer_norm", layers),
    )


def _embeddings(prefix: str) -> tuple[Entry, ...]:
    return (
        entry(f"{prefix}.embeddings.word_embeddings.weight", "embedder/token_embedder/embedding"),
        entry(f"{prefix}.embeddings.position_embeddings.weight", "embedder/position_embedder/embedding"),
        entry(f"{prefix}.embeddings.token_type_embeddings.weight", "embedder/token_type_embedder/embedding"),
        *_layer_norm(f"{prefix}.embeddings.LayerNorm", "embedder/embedding_norm"),
    )


_BERT_PARTS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "mlp_in": "intermediate.dense",
    "mlp_out": "output.dense",
    "mlp_norm": "output.LayerNorm",
}
BERT = TensorTable(
    entries=(
        *_embeddings("bert"),
        *_bert_layer("bert.encoder.layer.{i}", _BERT_PARTS, "encoder/layers_{i}", "num_encoder_layers"),
        *_linear("cls.predictions.transform.dense", "mlm_transform"),
        *_layer_norm("cls.predictions.transform.LayerNorm", "mlm_norm"),
        entry("cls.predictions.bias", "mlm_bias"),
        *_linear("bert.pooler.dense", "pooler"),
        *_linear("cls.seq_relationship", "pair_classifier"),
    ),
    tied={
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    },
    ignored=(r"bert\.embeddings\.position_ids",),  # a buffer of arange(max_position_embeddings)
    base_prefix="bert.",
)

_ALBERT_LAYER = "albert.encoder.albert_layer_groups.0.albert_layers.0"
_ALBERT_PARTS = {
    "query": "attention.query",
    "key": "attention.key",
    "value": "attention.value",
    "attention_out": "attention.dense",
    "attention_norm": "attention.LayerNorm",
    "mlp_in": "ffn",
    "mlp_out": "ffn_output",
    "mlp_norm": "full_layer_layer_norm",
}
ALBERT = TensorTable(
    entries=(
        *_embeddings("albert"),
        *_linear("albert.encoder.embedding_hidden_mapping_in", "embedder/embedding_projection"),
        *_bert_layer(_ALBERT_LAYER, _ALBERT_PARTS, "encoder/shared_layer", None),  # one block for every layer
        *_linear("predictions.dense", "mlm_transform"),
        *_layer_norm("predictions.LayerNorm", "mlm_norm"),
        entry("predictions.bias", "mlm_bias"),
        *_linear("albert.pooler", "pooler"),
        *_linear("sop_classifier.classifier", "pair_classifier"),
    ),
    tied={
        "predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
        "predictions.decoder.bias": "predictions.bias",
    },
    ignored=(r"albert\.embeddings\.position_ids",),
    base_prefix="albert.",
)


# Switch Transformers: T5.1.0's stacks with, in the MoE layers, a router and one MLP per expert. HF stores each expert
# as its own Linear layers (expert_0, expert_1, ...; "{e}" below), lmx stacks them: kernels [experts, in, out].
EXPERT_LINEAR = Transform("expert_linear", lambda x, h: (x.swapaxes(1, 2),), lambda k, h: k.swapaxes(1, 2))


def _switch_stack(stack: str, layers: str, cross: bool) -> tuple[Entry, ...]:
    block, lmx = f"{stack}.block.{{i}}.layer", f"{stack}/layers_{{i}}"
    mlp = f"{block}.{2 if cross else 1}.mlp"
    experts = f"{mlp}.experts.expert_{{e}}"
    return (
        *(e for e in _t5_stack(stack, layers, cross) if ".DenseReluDense." not in e.hf),
        entry(f"{mlp}.wi.weight", f"{lmx}/mlp/wi/kernel", LINEAR, layers, moe_layers=False),
        entry(f"{mlp}.wo.weight", f"{lmx}/mlp/wo/kernel", LINEAR, layers, moe_layers=False),
        entry(f"{mlp}.router.classifier.weight", f"{lmx}/mlp/router/kernel", LINEAR, layers, moe_layers=True),
        entry(f"{experts}.wi.weight", f"{lmx}/mlp/experts/wi/kernel", EXPERT_LINEAR, layers, moe_layers=True),
        entry(f"{experts}.wo.weight", f"{lmx}/mlp/experts/wo/kernel", EXPERT_LINEAR, layers, moe_layers=True),
    )


SWITCH = TensorTable(
    entries=(
        entry("shared.weight", "token_embedder/embedding"),
        *_switch_stack("encoder", "num_encoder_layers", cross=False),
        *_switch_stack("decoder", "num_decoder_layers", cross=True),
        entry("lm_head.weight", "decoder/logits_dense/kernel", LINEAR, when=_untied),
    ),
    tied=T5.tied,
    ignored=T5.ignored,
)


# XLNet (lmx.models.xlnet): HF keeps the q, k, v and r projections as [D, heads, kv] parameters (lmx's layout), the
# output projection o as [D, heads, kv] too (lmx: [heads, kv, D]) and the query stream's start w as [1, 1, D].
XLNET_OUT = Transform("xlnet_out", lambda x, h: (x.transpose(1, 2, 0),), lambda k, h: k.transpose(2, 0, 1))
MASK_EMBEDDING = Transform("mask_embedding", lambda x, h: (x.reshape(-1),), lambda w, h: w.reshape(1, 1, -1))
_XLNET_LAYER, _XLNET_LMX, _L = "transformer.layer.{i}", "encoder/layers_{i}", "num_encoder_layers"
_XLNET_ATTENTION = {  # rel_attn parameter -> lmx self_attention parameter
    "q": "query/kernel",
    "k": "key/kernel",
    "v": "value/kernel",
    "r": "position/kernel",
    "r_w_bias": "content_bias",  # u
    "r_r_bias": "position_bias",  # v
    "r_s_bias": "segment_bias",  # s
    "seg_embed": "segment_embedding",
}
XLNET = TensorTable(
    entries=(
        entry("transformer.word_embedding.weight", "token_embedder/embedding"),
        entry("transformer.mask_emb", "mask_embedding", MASK_EMBEDDING),
        *(
            entry(f"{_XLNET_LAYER}.rel_attn.{hf}", f"{_XLNET_LMX}/self_attention/{lmx}", layers=_L)
            for hf, lmx in _XLNET_ATTENTION.items()
        ),
        entry(f"{_XLNET_LAYER}.rel_attn.o", f"{_XLNET_LMX}/self_attention/out/kernel", XLNET_OUT, _L),
        *_layer_norm(f"{_XLNET_LAYER}.rel_attn.layer_norm", f"{_XLNET_LMX}/post_self_attention_layer_norm", _L),
        *_linear(f"{_XLNET_LAYER}.ff.layer_1", f"{_XLNET_LMX}/mlp/wi", _L),
        *_linear(f"{_XLNET_LAYER}.ff.layer_2", f"{_XLNET_LMX}/mlp/wo", _L),
        *_layer_norm(f"{_XLNET_LAYER}.ff.layer_norm", f"{_XLNET_LMX}/post_mlp_layer_norm", _L),
        entry("lm_loss.bias", "output_bias"),
    ),
    tied={"lm_loss.weight": "transformer.word_embedding.weight"},
    base_prefix="transformer.",
)
