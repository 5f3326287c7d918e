"""KV-cached decoding against uncached recomputation, for every family with a decoder.

The reference recomputes the whole (unpadded) sequence with the model's ordinary training forward pass at every
step and takes the last position's logits: no cache, no left padding, no slot arithmetic. Cached decoding must
choose the same tokens and give the same logits (to float32 rounding) at every step, for rows of different prompt
lengths in one batch.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import config_lib
from lmx.inference import decode
from lmx.models import build_model

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
VOCAB, EOS = 64, 1
MAX_NEW = 6


def tiny_model_config(name: str, **overrides):
    """config.model of configs/<name>.py shrunk to milliseconds (2-4 layers, width 32, vocabulary 64)."""
    m = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py")).model
    m.update(dict(vocab_size=VOCAB, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64, max_length=32))
    m.update(dict(dropout_rate=0.0, remat_policy="none"))
    if m.name == "encoder_decoder":
        m.update(dict(num_encoder_layers=2, num_decoder_layers=2))
    else:
        m.update(dict(num_decoder_layers=4))
    m.update(overrides)
    return config_lib.lock(m)


# name -> (config file, overrides). Covers learned / rotary / relative positions, GQA, banded layers, scan and
# unrolled stacks, tied and untied outputs, and MoE layers (capacity = the whole group: nothing is dropped, so a
# one-token decode step and the full recomputation route every token the same way).
FAMILIES = {
    "gpt2": ("gpt2_tiny", dict(scan_layers=True)),
    "gpt3_banded": ("gpt2_tiny", dict(scan_layers=False, attention_pattern="alternating_banded", attention_band=3)),
    "modern_gqa_rope": ("decoder_tiny", dict(scan_layers=True, num_kv_heads=2)),
    "gpt2_moe": ("gpt2_moe_tiny", dict(scan_layers=True, moe=dict(num_experts=4, capacity_factor_eval=4.0))),
    "t5_1_1": ("t5_tiny", dict(scan_layers=True)),
    "t5_1_0": ("t5_1_0_tiny", dict(scan_layers=False)),
    "switch": ("switch_tiny", dict(scan_layers=True, moe=dict(num_experts=4, capacity_factor_eval=4.0))),
}


@functools.cache
def model_and_params(family: str):
    name, overrides = FAMILIES[family]
    model = build_model(tiny_model_config(name, **overrides))
    if decode.is_encoder_decoder(model):
        init = {
            "encoder_input_tokens": jnp.ones((1, 8), jnp.int32),
            "decoder_input_tokens": jnp.ones((1, 8), jnp.int32),
        }
    else:
        init = {"decoder_input_tokens": jnp.ones((1, 8), jnp.int32)}
    params = jax.jit(lambda k: model.init({"params": k}, init))(jax.random.key(0))["params"]
    return model, jax.tree.map(
        lambda x: x.unbox() if hasattr(x, "unbox") else x, params, is_leaf=lambda x: hasattr(x, "unbox")
    )


def prompts(seed: int, lengths: list[int], width: int):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(2, VOCAB, n)  # no EOS, no padding id inside a prompt
    return tokens


def uncached_logits(model, params, prompt: np.ndarray, lengths: list[int], generated: np.ndarray) -> np.ndarray:
    """[B, T, V]: the logits that chose each generated token, recomputed without a cache by the training forward
    pass over prompt + generated (right-padded rows; causality makes position i's logits those of a recomputation
    of the first i + 1 tokens alone)."""
    batch, steps = generated.shape
    if decode.is_encoder_decoder(model):
        features = {
            "encoder_input_tokens": jnp.asarray(prompt),
            "decoder_input_tokens": jnp.asarray(np.concatenate([np.zeros((batch, 1), np.int32), generated], 1)),
        }
        logits = jax.jit(model.apply)({"params": params}, features)["logits"]
        return np.asarray(logits[:, :steps])
    rows = np.zeros((batch, prompt.shape[1] + steps), np.int32)
    for row, n in enumerate(lengths):
        rows[row, : n + steps] = np.concatenate([prompt[row, :n], generated[row]])
    logits = np.asarray(jax.jit(model.apply)({"params": params}, {"decoder_input_tokens": jnp.asarray(rows)})["logits"])
    return np.stack([logits[row, n - 1 : n - 1 + steps] for row, n in enumerate(lengths)])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cached_greedy_equals_uncached_recomputation(family):
    model, params = model_and_params(family)
    lengths = [5, 2, 7]
    prompt = prompts(1, lengths, 7)
    if decode.is_encoder_decoder(model):
        inputs = {"encoder_input_tokens": jnp.asarray(prompt)}
    else:
        inputs = {"prompt_tokens": jnp.asarray(prompt), "prompt_lengths": jnp.asarray(lengths)}

    # Greedy one token at a time, keeping the logits each token was chosen from.
    state = jax.jit(lambda p, i: decode.start(model, p, i, MAX_NEW))(params, inputs)
    sampling = decode.Sampling.make(len(lengths), MAX_NEW)
    # eos -1: never stop early, so every step is compared
    step = jax.jit(lambda p, s, smp: decode.advance(model, p, s, smp, -1, 1))
    cached = []
    for _ in range(MAX_NEW):
        cached.append(np.asarray(state.logits))
        state = step(params, state, sampling)
    cached = np.stack(cached, axis=1)  # [B, T, V]
    generated = np.asarray(state.tokens)
    assert int(state.step) == MAX_NEW and np.all(np.asarray(state.lengths) == MAX_NEW)
    np.testing.assert_array_equal(generated, np.argmax(cached, axis=-1))

    expected = uncached_logits(model, params, prompt, lengths, generated)
    np.testing.assert_allclose(cached, expected, atol=2e-5, rtol=1e-4)
    # The whole loop in one call (generate) chooses the same tokens.
    whole = jax.jit(lambda p, i: decode.generate(model, p, i, max_new_tokens=MAX_NEW, eos_id=-1))(params, inputs)
    np.testing.assert_array_equal(np.asarray(whole.tokens), generated)
