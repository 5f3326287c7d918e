"""KV-cached decoding against uncached recomputation, for every family with a decoder.

The reference recomputes the whole (unpadded) sequence with the model's ordinary training forward pass at every
step and takes the last position's logits: no cache, no left padding, no slot arithmetic. Cached decoding must
choose the same tokens and give the same logits (to float32 rounding) at every step, for rows of different prompt
lengths in one batch.
"""

import functools
import pathlib

import flax.linen as nn
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
# unrolled stacks, tied and untied outputs, and MoE layers (Switch's; a decoder-only MoE takes the same path) with
# capacity = the whole group: nothing is dropped, so a one-token decode step and the full recomputation route every
# token the same way.
FAMILIES = {
    "gpt2": ("gpt2_tiny", dict(scan_layers=True)),
    "gpt3_banded": ("gpt2_tiny", dict(scan_layers=False, attention_pattern="alternating_banded", attention_band=3)),
    "modern_gqa_rope": ("decoder_tiny", dict(scan_layers=True, num_kv_heads=2)),
    "t5_1_1": ("t5_tiny", dict(scan_layers=True)),
    # T5.1.0 (tied, rescaled logits) decodes in tests/convert/generate_test.py against Hugging Face's generate.
    "switch": ("switch_tiny", dict(scan_layers=False, moe=dict(num_experts=4, capacity_factor_eval=4.0))),
}


@functools.cache
def model_and_params(family: str, **sizes):
    name, overrides = FAMILIES[family]
    model = build_model(tiny_model_config(name, **{**overrides, **sizes}))
    if decode.is_encoder_decoder(model):
        init = {
            "encoder_input_tokens": jnp.ones((1, 8), jnp.int32),
            "decoder_input_tokens": jnp.ones((1, 8), jnp.int32),
        }
    else:
        init = {"decoder_input_tokens": jnp.ones((1, 8), jnp.int32)}
    params = nn.unbox(jax.jit(lambda k: model.init({"params": k}, init))(jax.random.key(0))["params"])
    # Noise on every parameter: a freshly initialised tiny model repeats one token forever, which would leave the
    # position handling, EOS and beam search untested.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    return model, jax.tree.unflatten(tree, noisy)


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


# ----------------------------------------------------------------------------- sampling


def test_filter_logits_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 40)).astype(np.float32)
    top_k = np.array([0, 1, 5, 0, 3, 40], np.int32)
    top_p = np.array([1.0, 1.0, 1.0, 0.5, 0.9, 0.05], np.float32)
    got = np.asarray(decode.filter_logits(jnp.asarray(logits), jnp.asarray(top_k), jnp.asarray(top_p)))
    for row in range(len(logits)):
        order = np.argsort(-logits[row], kind="stable")
        keep = set(order[: top_k[row]] if top_k[row] else order)
        probs = np.exp(logits[row] - logits[row].max())
        probs /= probs.sum()
        mass, nucleus = 0.0, set()
        for token in order:  # the fewest most-likely tokens whose mass reaches p
            nucleus.add(token)
            mass += probs[token]
            if mass >= top_p[row]:
                break
        expected = sorted(keep & nucleus)
        assert sorted(np.flatnonzero(np.isfinite(got[row]))) == expected, row
        np.testing.assert_array_equal(got[row][expected], logits[row][expected])


def test_sampled_frequencies_follow_softmax_over_temperature():
    """4,000 rows with the same logits and different seeds: the token frequencies are softmax(logits / T) (and the
    top-k restriction holds), within 5 standard errors."""
    logits = jnp.asarray([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    rows = 4000
    for temperature, top_k in ((0.7, 0), (1.5, 3)):
        sampling = decode.Sampling.make(rows, 1, temperature=temperature, top_k=top_k, seed=jnp.arange(rows))
        tokens = np.asarray(decode.choose_tokens(jnp.broadcast_to(logits, (rows, 6)), sampling, jnp.int32(0)))
        expected = np.asarray(
            jax.nn.softmax(
                decode.filter_logits(logits[None] / temperature, jnp.asarray([top_k]), jnp.asarray([1.0]))[0]
            )
        )
        freq = np.bincount(tokens, minlength=6) / rows
        stderr = np.sqrt(expected * (1 - expected) / rows) + 1e-9
        assert np.all(np.abs(freq - expected) <= 5 * stderr + 1e-12), (temperature, freq, expected)
        if top_k:
            assert set(np.unique(tokens)) <= {0, 1, 2}


def test_sampling_is_per_row_seeded_and_temperature_zero_is_greedy():
    model, params = model_and_params("modern_gqa_rope")
    lengths = [3, 6, 4, 5]
    prompt = prompts(2, lengths, 6)
    inputs = {"prompt_tokens": jnp.asarray(prompt), "prompt_lengths": jnp.asarray(lengths)}
    run = jax.jit(lambda p, i, s: decode.generate(model, p, i, max_new_tokens=MAX_NEW, eos_id=-1, sampling=s))
    greedy = np.asarray(run(params, inputs, decode.Sampling.make(4, MAX_NEW)).tokens)
    cold = np.asarray(run(params, inputs, decode.Sampling.make(4, MAX_NEW, temperature=0.0, top_k=3, seed=7)).tokens)
    np.testing.assert_array_equal(cold, greedy)
    top1 = np.asarray(run(params, inputs, decode.Sampling.make(4, MAX_NEW, temperature=1.0, top_k=1, seed=7)).tokens)
    np.testing.assert_array_equal(top1, greedy)

    seeds = jnp.asarray([11, 12, 13, 14])
    hot = decode.Sampling.make(4, MAX_NEW, temperature=2.0, top_p=0.95, seed=seeds)
    first = np.asarray(run(params, inputs, hot).tokens)
    np.testing.assert_array_equal(np.asarray(run(params, inputs, hot).tokens), first)  # a fixed seed repeats
    assert not np.array_equal(first, greedy)
    other = np.asarray(run(params, inputs, hot.replace(seed=seeds + 100)).tokens)
    assert not np.array_equal(other, first)
    # A row's sample depends on its own prompt and seed only, not on the rest of the batch.
    mixed = hot.replace(seed=jnp.asarray([11, 99, 13, 98]), temperature=jnp.asarray([2.0, 0.0, 2.0, 1.0]))
    again = np.asarray(run(params, inputs, mixed).tokens)
    np.testing.assert_array_equal(again[[0, 2]], first[[0, 2]])
    np.testing.assert_array_equal(again[1], greedy[1])
    # max_new per row: a row stops after its own budget.
    short = np.asarray(run(params, inputs, hot.replace(max_new=jnp.asarray([2, 6, 1, 6]))).lengths)
    np.testing.assert_array_equal(short, [2, 6, 1, 6])


# ----------------------------------------------------------------------------- beam search


def reference_beam_search(next_logprobs, beams: int, steps: int, eos: int, alpha: float):
    """The beam search of lmx.inference.beam_search's docstring, written plainly over Python lists:
    next_logprobs(tokens) -> [V] log p of the next token."""

    def penalty(n):
        return ((5.0 + n) / 6.0) ** alpha

    alive, finished = [((), 0.0)], []  # (tokens, log p), (tokens, score)
    for t in range(steps):
        candidates = []
        for tokens, logp in alive:
            lp = next_logprobs(list(tokens))
            candidates += [(tokens, logp + float(lp[v]), v) for v in range(len(lp))]
        candidates.sort(key=lambda c: -c[1])
        candidates = candidates[: 2 * beams]
        finished += [(tokens, logp / penalty(t + 1)) for tokens, logp, v in candidates[:beams] if v == eos]
        finished = sorted(finished, key=lambda f: -f[1])[:beams]
        alive = [(tokens + (v,), logp) for tokens, logp, v in candidates if v != eos][:beams]
        if len(finished) == beams and min(f[1] for f in finished) >= alive[0][1] / penalty(steps):
            break
    return list(finished[0][0]) if finished else list(alive[0][0])


@pytest.mark.parametrize("family", ["gpt2", "t5_1_1"])
def test_beam_search_matches_a_plain_reference_and_beam_1_is_greedy(family):
    from lmx.inference.beam_search import beam_search

    model, params = model_and_params(family)
    lengths, steps = [4, 6], 5
    prompt = prompts(3, lengths, 6)
    if decode.is_encoder_decoder(model):
        inputs = {"encoder_input_tokens": jnp.asarray(prompt)}
    else:
        inputs = {"prompt_tokens": jnp.asarray(prompt), "prompt_lengths": jnp.asarray(lengths)}
    greedy_fn = jax.jit(lambda p, i, eos: decode.generate(model, p, i, max_new_tokens=steps, eos_id=eos))
    free = np.asarray(greedy_fn(params, inputs, -1).tokens)
    # EOS = a token greedy emits first at step k >= 1 of some row r: it then ends hypotheses mid-search.
    r, k = next((r, k) for r in range(len(lengths)) for k in range(1, steps) if free[r, k] not in free[r, :k])
    eos = int(free[r, k])

    def search(beams, alpha):
        fn = jax.jit(
            lambda p, i: beam_search(model, p, i, num_beams=beams, max_new_tokens=steps, eos_id=eos, alpha=alpha)
        )
        return fn(params, inputs)

    greedy = greedy_fn(params, inputs, eos)
    assert int(greedy.lengths[r]) == k and bool(greedy.finished[r])  # EOS really ends a row
    one = search(1, 0.0)
    np.testing.assert_array_equal(np.asarray(one.tokens), np.asarray(greedy.tokens))
    np.testing.assert_array_equal(np.asarray(one.lengths), np.asarray(greedy.lengths))

    forward = jax.jit(model.apply)

    def next_logprobs(row, tokens):
        if decode.is_encoder_decoder(model):
            features = {
                "encoder_input_tokens": jnp.asarray(prompt[row : row + 1]),
                "decoder_input_tokens": jnp.asarray([[0, *tokens, *[0] * (steps - len(tokens))]], jnp.int32),
            }
            index = len(tokens)
        else:
            sequence = [*prompt[row, : lengths[row]], *tokens]
            features = {"decoder_input_tokens": jnp.asarray([sequence + [0] * (16 - len(sequence))], jnp.int32)}
            index = len(sequence) - 1
        return np.asarray(jax.nn.log_softmax(forward({"params": params}, features)["logits"][0, index]))

    wide = search(3, 0.6)
    for row in range(len(lengths)):
        expected = reference_beam_search(lambda t, row=row: next_logprobs(row, t), 3, steps, eos, 0.6)
        n = int(wide.lengths[row])
        assert list(np.asarray(wide.tokens[row, :n])) == expected, row
        # Per-token log-probabilities are the model's (the EOS that ended a hypothesis is not recorded).
        expected_logprob = sum(next_logprobs(row, expected[:i])[v] for i, v in enumerate(expected))
        np.testing.assert_allclose(float(np.sum(wide.logprobs[row])), expected_logprob, rtol=1e-4)


def test_decode_bench_reports_throughput_and_the_cache_size():
    from lmx.inference.decode_bench import bench_decode

    config = config_lib.base_config()
    config.model = tiny_model_config("gpt2_tiny", scan_layers=True)
    result = bench_decode(config, batch_sizes=[2], prompt_length=5, new_tokens=4, uncached_tokens=2, repeats=1)
    # keys and values of 4 layers, [B=2, C=5+4, 4 heads, 8] float32 each
    assert result["batch2/kv_cache_bytes"] == 2 * 4 * 2 * 9 * 4 * 8 * 4
    for name in ("prefill_tokens_per_s", "decode_tokens_per_s", "uncached_tokens_per_s", "cached_speedup"):
        assert result[f"batch2/{name}"] > 0
