"""The config.json tables of each family the converter knows (rows as lmx.convert.hf_config describes them):
T5 1.0/1.1, Switch Transformers, GPT-2, BERT, ALBERT and XLNet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmx.convert import ConversionError
from lmx.convert.hf_config import ConfigTable, Row, derived, fixed, mapped, requires, same

# transformers' activation names (ACT2FN) -> lmx's: "gelu" is the exact erf GELU there, lmx's "gelu" the tanh one.
ACTIVATIONS = {
    "gelu_new": ("gelu",),
    "gelu_pytorch_tanh": ("gelu",),
    "gelu": ("gelu_exact",),
    "relu": ("relu",),
    "silu": ("silu",),
    "swish": ("silu",),
}
# T5's feed_forward_proj: "gated-<act>" is a gated MLP (T5.1.1's "gated-gelu" uses the tanh GELU, gelu_new).
T5_FEED_FORWARD = {
    "relu": ("relu",),
    "gated-gelu": ("gelu", "linear"),
    "gelu": ("gelu_exact",),
    "gelu_new": ("gelu",),
    "gated-gelu_new": ("gelu", "linear"),
    "gated-relu": ("relu", "linear"),
    "gated-silu": ("silu", "linear"),
    "silu": ("silu",),
}

# Fields every family here leaves off (its "off" value in lmx.models.options) and the dense MLP.
_DENSE = (
    fixed("num_kv_heads", 0, "one key/value head per query head"),
    fixed("moe.num_experts", 0, "dense MLPs"),
)


def _t5_tied(c: Mapping[str, Any]) -> bool:
    # T5.1.0 ties the output layer to the embedding and rescales the decoder output by d_model^-1/2; T5.1.1 unties.
    # transformers 4.x says so with tie_word_embeddings; 5.x always ties and keeps the rescaling in
    # scale_decoder_outputs (then an untied checkpoint carries its own lm_head.weight).
    scaled = c.get("scale_decoder_outputs")
    return bool(c["tie_word_embeddings"] if scaled is None else scaled)


# The shape rows T5 and Switch Transformers share (both T5Config-style config.json files).
_T5_SHAPE_ROWS = (
    same("vocab_size", "vocab_size"),
    same("embed_dim", "d_model"),
    same("head_dim", "d_kv"),
    same("num_heads", "num_heads"),
    same("mlp_dim", "d_ff"),
    same("num_encoder_layers", "num_layers"),
    Row("same", "num_decoder_layers", "num_decoder_layers", lambda v, c: v or c["num_layers"]),  # null: num_layers
    same("relpos_num_buckets", "relative_attention_num_buckets"),
    same("relpos_max_distance", "relative_attention_max_distance"),
    same("norm_epsilon", "layer_norm_epsilon"),
)


T5 = ConfigTable(
    "t5",
    defaults={
        "vocab_size": 32128,
        "d_model": 512,
        "d_kv": 64,
        "d_ff": 2048,
        "num_layers": 6,
        "num_decoder_layers": None,
        "num_heads": 8,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "relu",
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
    },
    rows=(
        fixed("name", "encoder_decoder", "T5 is an encoder-decoder"),
        *_T5_SHAPE_ROWS,
        mapped("mlp_activations", "feed_forward_proj", T5_FEED_FORWARD),
        Row(
            "derived",
            "tie_embeddings",
            "tie_word_embeddings",
            lambda _, c: _t5_tied(c),
            why="tie_word_embeddings, or scale_decoder_outputs when transformers 5 wrote it",
        ),
        fixed("norm", "rms", "T5's norm has a scale only"),
        fixed("norm_position", "pre", "pre-norm"),
        fixed("use_bias", False, "no biases"),
        fixed("position_embedding", "relative", "relative position buckets"),
        fixed("scale_attention_logits", False, "T5 folds 1/sqrt(d_kv) into the query weights"),
        *_DENSE,
        requires("is_encoder_decoder", True, "a decoder-only T5"),
    ),
    dropout_keys=("dropout_rate",),
)

GPT2 = ConfigTable(
    "gpt2",
    defaults={
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
    },
    rows=(
        fixed("name", "decoder_only", "GPT-2 is decoder-only"),
        same("vocab_size", "vocab_size"),
        same("embed_dim", "n_embd"),
        same("num_heads", "n_head"),
        derived("head_dim", lambda c: c["n_embd"] // c["n_head"], "n_embd / n_head"),
        Row("same", "mlp_dim", "n_inner", lambda v, c: v or 4 * c["n_embd"]),  # null: 4 n_embd
        same("num_decoder_layers", "n_layer"),
        fixed("num_encoder_layers", 0, "no encoder"),
        same("max_length", "n_positions"),
        same("norm_epsilon", "layer_norm_epsilon"),
        mapped("mlp_activations", "activation_function", ACTIVATIONS),
        same("tie_embeddings", "tie_word_embeddings"),
        same("scale_attention_logits", "scale_attn_weights"),
        fixed("norm", "layer", "LayerNorm"),
        fixed("norm_position", "pre", "pre-norm"),
        fixed("use_bias", True, "biases in every projection"),
        fixed("position_embedding", "learned", "learned absolute positions"),
        fixed("attention_pattern", "dense", "dense attention in every layer"),
        *_DENSE,
        requires("scale_attn_by_inverse_layer_idx", False, "attention logits scaled per layer"),
        requires("add_cross_attention", False, "a GPT-2 with cross-attention"),
    ),
    dropout_keys=("resid_pdrop", "embd_pdrop", "attn_pdrop"),
)

_BERT_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "tie_word_embeddings": True,
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
}
_BERT_ROWS = (
    fixed("name", "encoder_only", "an encoder-only model"),
    same("vocab_size", "vocab_size"),
    same("embed_dim", "hidden_size"),
    same("num_heads", "num_attention_heads"),
    derived("head_dim", lambda c: c["hidden_size"] // c["num_attention_heads"], "hidden_size / num_attention_heads"),
    same("mlp_dim", "intermediate_size"),
    same("num_encoder_layers", "num_hidden_layers"),
    fixed("num_decoder_layers", 0, "no decoder"),
    same("max_length", "max_position_embeddings"),
    same("type_vocab_size", "type_vocab_size"),
    same("norm_epsilon", "layer_norm_eps"),
    mapped("mlp_activations", "hidden_act", ACTIVATIONS),
    same("tie_embeddings", "tie_word_embeddings"),
    fixed("norm", "layer", "LayerNorm"),
    fixed("norm_position", "post", "post-norm"),
    fixed("use_bias", True, "biases in every projection"),
    fixed("position_embedding", "learned", "learned absolute positions"),
    fixed("scale_attention_logits", True, "logits scaled by 1/sqrt(head size)"),
    *_DENSE,
    requires("position_embedding_type", "absolute", "relative position embeddings"),
    requires("is_decoder", False, "a causal BERT"),
    requires("add_cross_attention", False, "a BERT with cross-attention"),
)
BERT = ConfigTable(
    "bert",
    defaults=_BERT_DEFAULTS,
    rows=(
        *_BERT_ROWS,
        fixed("embed_proj_dim", 0, "embeddings as wide as the hidden states"),
        fixed("share_layers", False, "a block of its own in every layer"),
    ),
    dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
)

ALBERT = ConfigTable(
    "albert",
    defaults={
        **_BERT_DEFAULTS,
        "vocab_size": 30000,
        "embedding_size": 128,
        "hidden_size": 4096,
        "num_attention_heads": 64,
        "intermediate_size": 16384,
        "hidden_act": "gelu_new",
        "num_hidden_groups": 1,
        "inner_group_num": 1,
    },
    rows=(
        *(r for r in _BERT_ROWS if r.hf not in ("is_decoder", "add_cross_attention")),
        same("embed_proj_dim", "embedding_size"),
        fixed("share_layers", True, "one block shared by every layer"),
        requires("num_hidden_groups", 1, "several groups of shared layers"),
        requires("inner_group_num", 1, "several layers per shared group"),
    ),
    dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
)


def _sparse_step(c: Mapping[str, Any], stack: str) -> int:
    """moe_every of a Switch stack. HF puts experts in the layers i with i % step == 1 (all layers when step is 1),
    step = layers // num_sparse_<stack>_layers; lmx in the layers i % moe_every == moe_every - 1: the same layers
    for steps 1 and 2 (every layer, every other layer: all released checkpoints), different for larger steps."""
    layers = c["num_layers"] if stack == "encoder" else c["num_decoder_layers"] or c["num_layers"]
    sparse = c[f"num_sparse_{stack}_layers"]
    if sparse < 1 or layers % sparse or layers // sparse not in (1, 2):
        raise ConversionError(
            f"config.json has num_sparse_{stack}_layers={sparse} of {layers} layers; lmx converts Switch models "
            f"with experts in every layer or every other layer ({layers} or {layers // 2})"
        )
    return layers // sparse


# Switch Transformers (Fedus et al. 2021; lmx.models.moe): T5.1.0-style blocks whose MLP is, in every moe_every-th
# layer, a top-1 mixture of experts with a float32 bias-free router. HF's expert_capacity (slots per expert and
# sequence), router_jitter_noise and the loss coefficients are runtime settings (lmx: config.model.moe.capacity_factor_*
# with group_size 0, jitter_eps, aux_loss_weight, z_loss_weight): not checked, and not written on export.
SWITCH = ConfigTable(
    "switch_transformers",
    defaults={
        "vocab_size": 32128,
        "d_model": 768,
        "d_kv": 64,
        "d_ff": 2048,
        "num_layers": 12,
        "num_decoder_layers": 12,
        "num_heads": 12,
        "num_experts": 8,
        "num_sparse_encoder_layers": 3,
        "num_sparse_decoder_layers": 3,
        "router_bias": False,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
        "dense_act_fn": "relu",
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
    },
    rows=(
        fixed("name", "encoder_decoder", "Switch Transformers are encoder-decoders"),
        *_T5_SHAPE_ROWS,
        mapped("mlp_activations", "dense_act_fn", ACTIVATIONS),  # dense and expert MLPs: wi, activation, wo
        same("tie_embeddings", "tie_word_embeddings"),  # tied: logits rescaled by d_model^-1/2, as T5.1.0
        same("moe.num_experts", "num_experts"),
        Row(
            "derived",
            "moe.moe_every",
            "num_sparse_encoder_layers",
            lambda _, c: _sparse_step(c, "encoder"),
            None,
            "num_layers / num_sparse_encoder_layers",
        ),
        Row(
            "derived",
            "moe.moe_every",
            "num_sparse_decoder_layers",
            lambda _, c: _sparse_step(c, "decoder"),
            None,
            "num_decoder_layers / num_sparse_decoder_layers",
        ),
        fixed("moe.router", "top1", "each token goes to its top expert"),
        fixed("norm", "rms", "T5's norm has a scale only"),
        fixed("norm_position", "pre", "pre-norm"),
        fixed("use_bias", False, "no biases"),
        fixed("position_embedding", "relative", "relative position buckets"),
        fixed("scale_attention_logits", False, "T5 folds 1/sqrt(d_kv) into the query weights"),
        fixed("num_kv_heads", 0, "one key/value head per query head"),
        requires("router_bias", False, "a router with a bias"),
        requires("is_encoder_decoder", True, "a decoder-only Switch Transformer"),
    ),
    dropout_keys=("dropout_rate",),
    written=lambda m: {
        "num_sparse_encoder_layers": m.num_encoder_layers // m.moe.moe_every,
        "num_sparse_decoder_layers": m.num_decoder_layers // m.moe.moe_every,
    },
)

# XLNet (Yang et al. 2019; lmx.models.xlnet). mem_len is how many states HF's forward pass caches (a runtime setting
# there, use_mems_train defaults to off): not checked on import; export writes lmx's. bi_data (half the batch read
# backwards), clamp_len, same_length and the causal "uni" attention are options lmx does not have.
XLNET = ConfigTable(
    "xlnet",
    defaults={
        "vocab_size": 32000,
        "d_model": 1024,
        "n_layer": 24,
        "n_head": 16,
        "d_inner": 4096,
        "d_head": None,
        "ff_activation": "gelu",
        "attn_type": "bi",
        "layer_norm_eps": 1e-12,
        "reuse_len": None,
        "bi_data": False,
        "clamp_len": -1,
        "same_length": False,
        "tie_word_embeddings": True,
    },
    rows=(
        fixed("name", "xlnet", "XLNet is its own family"),
        same("vocab_size", "vocab_size"),
        same("embed_dim", "d_model"),
        same("num_heads", "n_head"),
        Row("same", "head_dim", "d_head", lambda v, c: v or c["d_model"] // c["n_head"]),  # null: d_model / n_head
        same("mlp_dim", "d_inner"),
        same("num_encoder_layers", "n_layer"),
        fixed("num_decoder_layers", 0, "no decoder"),
        same("norm_epsilon", "layer_norm_eps"),
        mapped("mlp_activations", "ff_activation", ACTIVATIONS),
        same("tie_embeddings", "tie_word_embeddings"),
        fixed("norm", "layer", "LayerNorm"),
        fixed("norm_position", "post", "post-norm"),
        fixed("use_bias", True, "biases in the feed-forward layers"),
        fixed("position_embedding", "relative_sinusoidal", "Transformer-XL relative positions"),
        fixed("scale_attention_logits", True, "scores scaled by 1/sqrt(d_head)"),
        fixed("type_vocab_size", 0, "relative segment encodings, no token-type embeddings"),
        fixed("embed_proj_dim", 0, "embeddings as wide as the hidden states"),
        fixed("share_layers", False, "a layer of its own at every depth"),
        *_DENSE,
        requires("attn_type", "bi", "the causal attention of attn_type='uni'"),
        requires("bi_data", False, "the bidirectional data pipeline"),
        requires("clamp_len", -1, "relative distances clamped at clamp_len"),
        requires("same_length", False, "every query seeing the same number of keys"),
        requires("reuse_len", None, "only the first reuse_len states cached"),
    ),
    dropout_keys=("dropout",),
    written=lambda m: {"mem_len": m.mem_len or None},
)
