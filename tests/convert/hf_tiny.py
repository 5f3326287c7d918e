"""Tiny random Hugging Face models of every family the converter knows, and the lmx configs that describe them.

The HF configs are written out here key by key (not made by lmx.convert.hf_config), so the converter's config table
is checked against an independent statement of the same models. Every parameter gets noise on top of HF's init
(LayerNorm scales of 1 and zero biases would hide a swapped or dropped tensor).
"""

from __future__ import annotations

import pathlib

import numpy as np

from lmx import config_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
NAMES = ("t5.1.0", "t5.1.1", "gpt2", "bert", "albert")

VOCAB, EMBED, HEADS, HEAD_DIM, MLP, LAYERS, MAX_LENGTH, ALBERT_E = 128, 32, 4, 8, 64, 2, 32, 16
CONFIG_FILES = {
    "t5.1.0": "t5_1_0_tiny.py",
    "t5.1.1": "t5_tiny.py",
    "gpt2": "gpt2_tiny.py",
    "bert": "bert_tiny.py",
    "albert": "albert_tiny.py",
}


def config_flags(name: str, *, scan_layers: bool = True) -> list[str]:
    """The command line of the lmx config of family `name`: its configs/ file, shrunk to the tiny test sizes."""
    model = dict(
        vocab_size=VOCAB,
        embed_dim=EMBED,
        num_heads=HEADS,
        head_dim=HEAD_DIM,
        mlp_dim=MLP,
        max_length=MAX_LENGTH,
        dropout_rate=0.0,
        dtype="float32",
        scan_layers=scan_layers,
        remat_policy="none",
    )
    if name.startswith("t5"):
        model.update(num_encoder_layers=LAYERS, num_decoder_layers=LAYERS)
    elif name == "gpt2":
        model.update(num_decoder_layers=LAYERS)
    else:
        model.update(num_encoder_layers=3 if name == "albert" else LAYERS)
    if name == "albert":
        model.update(embed_proj_dim=ALBERT_E)
    return [f"--config={REPO / 'configs' / CONFIG_FILES[name]}", *(f"--config.model.{k}={v}" for k, v in model.items())]


def lmx_config(name: str, *, scan_layers: bool = True):
    """The full lmx config the command line `config_flags(name)` makes."""
    return config_lib.check_overrides(config_flags(name, scan_layers=scan_layers))


def hf_model(name: str, transformers, torch, seed: int = 0):
    """A random HF model of family `name` (eval mode), the one `lmx_config(name)` describes."""
    torch.manual_seed(seed)
    if name.startswith("t5"):
        t5_1_1 = name == "t5.1.1"
        config = transformers.T5Config(
            vocab_size=VOCAB,
            d_model=EMBED,
            d_kv=HEAD_DIM,
            d_ff=MLP,
            num_layers=LAYERS,
            num_decoder_layers=LAYERS,
            num_heads=HEADS,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            dropout_rate=0.0,
            layer_norm_epsilon=1e-6,
            feed_forward_proj="gated-gelu" if t5_1_1 else "relu",
            tie_word_embeddings=not t5_1_1,
        )
        model = transformers.T5ForConditionalGeneration(config)
        if t5_1_1:  # transformers 5 always ties lm_head; T5.1.1 has an output layer of its own (noised below)
            model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    elif name == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=VOCAB,
            n_positions=MAX_LENGTH,
            n_embd=EMBED,
            n_layer=LAYERS,
            n_head=HEADS,
            n_inner=MLP,
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        common = dict(
            vocab_size=VOCAB,
            hidden_size=EMBED,
            num_attention_heads=HEADS,
            intermediate_size=MLP,
            max_position_embeddings=MAX_LENGTH,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        if name == "bert":
            config = transformers.BertConfig(num_hidden_layers=LAYERS, hidden_act="gelu", **common)
            model = transformers.BertForPreTraining(config)
        else:
            config = transformers.AlbertConfig(
                num_hidden_layers=3,
                embedding_size=ALBERT_E,
                hidden_act="gelu_new",
                classifier_dropout_prob=0.0,
                **common,
            )
            model = transformers.AlbertForPreTraining(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def padded_rows(lengths, length: int, seed: int = 1, low: int = 3) -> np.ndarray:
    """[len(lengths), length] random token ids >= `low`, each row padded (0) after its length."""
    ids = np.random.default_rng(seed).integers(low, VOCAB, (len(lengths), length))
    return np.where(np.arange(length)[None] < np.asarray(lengths)[:, None], ids, 0)
