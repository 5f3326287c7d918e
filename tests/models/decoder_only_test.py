"""The decoder-only family: GPT-2, GPT-3's alternating dense/banded layers, the modern RoPE/SwiGLU/GQA decoder.

Each piece against an independent reference: banded attention and rotary positions against float64 numpy,
grouped-query attention against multi-head attention with repeated key/value heads, the GPT-3 and modern variants
against Hugging Face's GPT-Neo and Llama on the same random weights; causality, packing, scan/remat equivalence,
GPT-2's init, bfloat16; every config's parameter tree against its architecture and the published count; a sharded
train step against the single-device one.
"""

import functools
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
from lmx_steps import run_steps

from lmx import config_lib, flops, optim, sharding, step
from lmx.models import build_model
from lmx.models.attention import (
    MultiHeadAttention,
    banded_attention,
    dot_product_attention,
    mask_to_bias,
    self_attention_mask,
)
from lmx.models.init import Inits
from lmx.models.positions import apply_rotary
from lmx.models.transformer import unstack_scanned_params

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
VOCAB, LENGTH, BAND = 96, 13, 4  # a row length that is not a multiple of the band

# ----------------------------------------------------------------------------- the three variants, tiny


def _tiny(variant: str, **overrides):
    """config.model of a variant, taken from its tiny config file and shrunk to run in milliseconds.

    gpt2 = configs/gpt2_tiny.py's architecture, gpt3 = that with alternating banded layers (band 4),
    modern = configs/decoder_tiny.py's (rotary, RMSNorm, SwiGLU, 4 query heads on 2 key/value heads, untied).
    """
    path = {"gpt2": "gpt2_tiny", "gpt3": "gpt2_tiny", "modern": "decoder_tiny"}[variant]
    m = config_lib.load_config_file(str(CONFIG_DIR / f"{path}.py")).model
    m.update(
        dict(vocab_size=VOCAB, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64, num_decoder_layers=4, max_length=32)
    )
    m.update(dict(dropout_rate=0.0, scan_layers=True, remat_policy="none"))
    if variant == "gpt3":
        m.update(dict(attention_pattern="alternating_banded", attention_band=BAND))
    m.update(overrides)
    return config_lib.lock(m)


@functools.cache
def _model(variant: str, **overrides):
    """(model, jitted apply) of a tiny variant; compiled once per distinct call."""
    model = build_model(_tiny(variant, **overrides))
    return model, jax.jit(model.apply, static_argnames=("enable_dropout",))


@functools.cache
def _params(variant: str, **overrides):
    model, _ = _model(variant, **overrides)
    tokens = jnp.ones((1, LENGTH), jnp.int32)
    return nn.unbox(jax.jit(model.init)(jax.random.key(0), {"decoder_input_tokens": tokens})["params"])


def _logits(variant, params, tokens, overrides=(), **features):
    _, apply = _model(variant, **dict(overrides))
    batch = {"decoder_input_tokens": jnp.asarray(tokens, jnp.int32), **{k: jnp.asarray(v) for k, v in features.items()}}
    return np.asarray(apply({"params": params}, batch)["logits"])


def _tokens(rows=2, length=LENGTH, seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, (rows, length)).astype(np.int32)


VARIANTS = ("gpt2", "gpt3", "modern")

# ----------------------------------------------------------------------------- float64 references


def reference_attention(q, k, v, mask):
    """float64 softmax(q.k) v over allowed keys; q [B, L, N, H], k, v [B, L, M, H] (query head n reads key/value
    head n // (N / M)), mask [B, L, L]. Rows without an allowed key give NaN (callers compare real queries)."""
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("bqnh,bknh->bnqk", q, k)
    logits = np.where(mask[:, None], logits, -np.inf)
    with np.errstate(invalid="ignore"):  # rows without an allowed key: -inf - -inf
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknh->bqnh", weights, v)


def reference_band_mask(segments, band):
    """[B, L, L]: key s visible from query t iff t - band < s <= t, same segment, not padding (0)."""
    t = np.arange(segments.shape[1])[:, None]
    s = np.arange(segments.shape[1])[None, :]
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] != 0)
    return same & (s <= t) & (s > t - band)


def reference_rotary(x, positions, theta):
    """float64: feature pair (i, i + H/2) of x [B, L, N, H] turned by the angle position * theta^(-2i/H)."""
    half = x.shape[-1] // 2
    out = np.empty_like(x, dtype=np.float64)
    for i in range(half):
        angle = positions[:, :, None] * theta ** (-2.0 * i / x.shape[-1])  # [B, L, 1]
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * np.cos(angle) - b * np.sin(angle)
        out[..., i + half] = a * np.sin(angle) + b * np.cos(angle)
    return out


# ----------------------------------------------------------------------------- banded attention

# Two rows: packed examples of 6 and 5 tokens then padding; one example over the whole row.
SEGMENTS = np.array([[1] * 6 + [2] * 5 + [0] * 2, [1] * LENGTH])


@pytest.mark.parametrize(
    "band,heads,kv_heads",
    [(4, 4, 4), (4, 4, 2), (1, 2, 1), (5, 2, 2), (32, 2, 2)],
    ids=["band4", "band4-gqa", "band1-mqa", "band5", "band-longer-than-row"],
)
def test_banded_attention_matches_reference(band, heads, kv_heads):
    rng = np.random.default_rng(band)
    q = rng.normal(size=(2, LENGTH, heads, 8))
    k, v = (rng.normal(size=(2, LENGTH, kv_heads, 8)) for _ in range(2))
    got = jax.jit(banded_attention, static_argnums=4)(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), SEGMENTS, band)
    want = reference_attention(q, k, v, reference_band_mask(SEGMENTS, band))
    real = SEGMENTS != 0
    assert got.shape == q.shape and np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(np.asarray(got)[real], want[real], rtol=1e-5, atol=1e-5)


def test_banded_attention_gradient_equals_dense_with_a_band_mask():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, LENGTH, 4, 8)), jnp.float32) for _ in range(3))
    k, v = k[:, :, :2], v[:, :, :2]  # GQA: 2 key/value heads
    weights = jnp.asarray(rng.normal(size=q.shape) * (SEGMENTS != 0)[..., None, None], jnp.float32)
    band_bias = mask_to_bias(jnp.asarray(reference_band_mask(SEGMENTS, BAND))[:, None])  # [B, 1, L, L]

    def banded(q, k, v):
        return jnp.sum(banded_attention(q, k, v, jnp.asarray(SEGMENTS), BAND) * weights)

    def dense(q, k, v):
        return jnp.sum(dot_product_attention(q, k, v, band_bias) * weights)

    got = jax.jit(jax.value_and_grad(banded, argnums=(0, 1, 2)))(q, k, v)
    want = jax.jit(jax.value_and_grad(dense, argnums=(0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(got[1], want[1], strict=True):
        assert float(jnp.abs(b).max()) > 0.1  # the gradient is not trivially zero
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_banded_layers_see_only_the_band():
    """Same weights as the dense GPT-2: equal logits where the band covers the whole causal past, different after."""
    params, tokens = _params("gpt2"), _tokens()
    period_params = {**params, "decoder": {**params["decoder"]}}
    scanned = params["decoder"]["layers"]  # [4, ...] -> the period-2 layout [2, ...] per sub-block
    period_params["decoder"]["layers"] = {f"sub_{j}": jax.tree.map(lambda a, j=j: a[j::2], scanned) for j in range(2)}
    dense, banded = _logits("gpt2", params, tokens), _logits("gpt3", period_params, tokens)
    np.testing.assert_allclose(banded[:, :BAND], dense[:, :BAND], rtol=1e-5, atol=1e-5)
    assert np.abs(banded[:, BAND:] - dense[:, BAND:]).min(axis=-1).max() > 1e-4


# ----------------------------------------------------------------------------- rotary positions, GQA


def test_rotary_matches_reference_rotation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 16))
    positions = np.array([[0, 1, 2, 3, 4], [7, 100, 2047, 0, 1]])
    got = apply_rotary(jnp.asarray(x, jnp.float32), jnp.asarray(positions), 10000.0)
    np.testing.assert_allclose(got, reference_rotary(x, positions, 10000.0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[0, 0], x[0, 0], rtol=1e-6)  # position 0 is no rotation


def test_rotary_dot_product_depends_only_on_the_position_difference():
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 64)), jnp.float32) for _ in range(2))

    def score(query_position, key_position):
        rq = apply_rotary(q, jnp.array([[query_position]]), 10000.0)
        rk = apply_rotary(k, jnp.array([[key_position]]), 10000.0)
        return float(jnp.sum(rq * rk))

    base = score(5, 2)
    for shift in (1, 17, 300):
        assert score(5 + shift, 2 + shift) == pytest.approx(base, rel=1e-4, abs=1e-4)
    assert abs(score(5, 3) - base) > 1e-2  # a different distance gives a different score


@pytest.mark.parametrize("band,rotary", [(0, False), (BAND, True)], ids=["dense", "banded-rotary"])
def test_grouped_query_attention_equals_multi_head_with_repeated_kv_heads(band, rotary):
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, LENGTH, 32)), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(LENGTH), (2, LENGTH))
    bias = mask_to_bias(self_attention_mask(jnp.asarray(SEGMENTS), causal=True))
    kwargs = dict(
        use_bias=True, scale_logits=True, rotary_theta=10000.0 if rotary else 0.0, inits=Inits("normal", 0.5, 1)
    )

    def run(module, params):
        apply = functools.partial(module.apply, deterministic=True, band=band)
        return jax.jit(apply)({"params": params}, x, x, bias, positions=positions, segment_ids=SEGMENTS)

    gqa = MultiHeadAttention(4, 8, 0.0, num_kv_heads=2, **kwargs)
    init = jax.jit(functools.partial(gqa.init, deterministic=True))
    params = nn.unbox(init(jax.random.key(0), x, x, bias, positions=positions))["params"]
    assert params["key"]["kernel"].shape == (32, 2, 8)
    repeated = {**params}  # head n of the multi-head model = key/value head n // 2
    for name in ("key", "value"):
        repeated[name] = {p: jnp.repeat(a, 2, axis=1 if p == "kernel" else 0) for p, a in params[name].items()}
    got, want = run(gqa, params), run(MultiHeadAttention(4, 8, 0.0, **kwargs), repeated)
    real = SEGMENTS != 0
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the model: causality, packing


@pytest.mark.parametrize("variant", VARIANTS)
def test_future_tokens_never_change_earlier_logits(variant):
    params, tokens = _params(variant), _tokens()
    before = _logits(variant, params, tokens)
    for t in (3, LENGTH - 1):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % (VOCAB - 1) + 1
        after = _logits(variant, params, changed)
        np.testing.assert_array_equal(after[:, :t], before[:, :t])
        assert np.abs(after[:, t] - before[:, t]).max() > 1e-4  # the change is visible where it is allowed


def _pack(examples, length):
    """One packed row: tokens, segment ids (1, 2, ...), positions restarting at 0 per example, padding after."""
    tokens, segments, positions = np.zeros((3, 1, length), np.int32)
    start = 0
    for i, example in enumerate(examples):
        end = start + len(example)
        tokens[0, start:end], segments[0, start:end], positions[0, start:end] = example, i + 1, np.arange(len(example))
        start = end
    return tokens, segments, positions


@pytest.mark.parametrize("variant", VARIANTS)
def test_packed_row_equals_examples_run_alone(variant):
    """Segment ids keep the examples apart and positions restart: learned (gpt2, gpt3) and rotary (modern)."""
    params = _params(variant)
    examples = [_tokens(1, 6, seed=1)[0], _tokens(1, 5, seed=2)[0]]  # the second starts mid-block of the band
    tokens, segments, positions = _pack(examples, LENGTH)
    packed = _logits(variant, params, tokens, decoder_segment_ids=segments, decoder_positions=positions)
    alone = _logits(variant, params, np.stack([np.pad(e, (0, LENGTH - len(e))) for e in examples]))
    np.testing.assert_allclose(packed[0, :6], alone[0, :6], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed[0, 6:11], alone[1, :5], rtol=1e-5, atol=1e-5)


def test_prefix_lm_mask_is_bidirectional_on_the_prefix_and_causal_after():
    segments = np.array([[1, 1, 1, 1, 2, 2, 2, 0]])
    prefix = np.array([[1, 1, 0, 0, 1, 0, 0, 0]])  # 2 prefix tokens in example 1, 1 in example 2
    got = np.asarray(self_attention_mask(jnp.asarray(segments), causal=True, prefix=jnp.asarray(prefix)))[:, 0]
    t, s = np.arange(8)[:, None], np.arange(8)[None, :]
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] != 0)
    want = same & ((s <= t) | (prefix[:, :, None].astype(bool) & prefix[:, None, :].astype(bool)))
    np.testing.assert_array_equal(got, want)

    # In the model: a prefix token changes the logits of the prefix before it; a later token changes nothing before.
    params, tokens = _params("gpt2"), _tokens(1)
    causal = np.zeros_like(tokens)
    causal[:, :5] = 1
    before = _logits("gpt2", params, tokens, decoder_causal_attention=causal)
    for t, earlier_changes in ((3, True), (7, False)):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % (VOCAB - 1) + 1
        after = _logits("gpt2", params, changed, decoder_causal_attention=causal)
        assert (np.abs(after[:, :t] - before[:, :t]).max() > 1e-4) == earlier_changes, t
    with pytest.raises(ValueError, match="attention_pattern='alternating_banded' cannot train a prefix LM"):
        _logits("gpt3", _params("gpt3"), tokens, decoder_causal_attention=causal)


# ----------------------------------------------------------------------------- scan, remat, dtype, init


@pytest.mark.parametrize("variant,policy", [("gpt3", "dots"), ("modern", "full")])
def test_scan_unrolled_and_remat_policies_give_the_same_loss_and_gradients(variant, policy):
    """gpt3 scans a period of two blocks (dense, banded); unrolled, layers_1 and layers_3 are the banded ones.
    One remat policy per variant keeps the compile count down (tests/models/transformer_test.py runs them all)."""
    params, tokens = _params(variant), _tokens()
    weights = jax.random.normal(jax.random.key(1), (*tokens.shape, VOCAB))
    batch = {"decoder_input_tokens": jnp.asarray(tokens)}

    def loss_and_grads(params, **overrides):
        model = build_model(_tiny(variant, **overrides))
        loss = lambda p: jnp.sum(model.apply({"params": p}, batch)["logits"] * weights)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    reference = loss_and_grads(params)
    unrolled = unstack_scanned_params(params)
    cases = [(unrolled, {"scan_layers": False}), (params, {"remat_policy": policy})]
    for p, overrides in cases:
        value, grads = loss_and_grads(p, **overrides)
        if not overrides.get("scan_layers", True):
            grads = jax.tree.map(lambda *a: jnp.stack(a), *(grads["decoder"][f"layers_{i}"] for i in range(4)))
            want = reference[1]["decoder"]["layers"]
            if variant == "gpt3":  # [2, ...] per sub-block -> layer order
                want = jax.tree.map(lambda a, b: jnp.stack([a[0], b[0], a[1], b[1]]), want["sub_0"], want["sub_1"])
        else:
            grads, want = grads["decoder"]["layers"], reference[1]["decoder"]["layers"]
        np.testing.assert_allclose(value, reference[0], rtol=1e-5, err_msg=str(overrides))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, want)


@pytest.mark.parametrize("variant", ["gpt3", "modern"])  # gpt3 = GPT-2's dense layers + banded ones
def test_bfloat16_compute_gives_float32_logits_close_to_float32(variant):
    params, tokens = _params(variant), _tokens()
    f32 = _logits(variant, params, tokens)
    bf16 = _logits(variant, params, tokens, overrides=(("dtype", "bfloat16"),))
    assert bf16.dtype == np.float32 and all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    assert not np.array_equal(bf16, f32)  # bfloat16 really ran
    np.testing.assert_allclose(bf16, f32, atol=0.02 * np.abs(f32).max())


def test_gpt2_init_statistics():
    """Radford et al. 2019 section 2.3: N(0, 0.02) weights, residual projections / sqrt(N), N = 2 x layers."""
    layers = 4
    config = _tiny("gpt2", embed_dim=256, head_dim=64, mlp_dim=1024, num_decoder_layers=layers, vocab_size=512)
    model = build_model(config)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), {"decoder_input_tokens": jnp.ones((1, 4), jnp.int32)}))
    params = params["params"]
    flat = {
        "/".join(str(k.key) for k in path): np.asarray(a) for path, a in jax.tree_util.tree_leaves_with_path(params)
    }
    residual = 0.02 / np.sqrt(2 * layers)
    checked = 0
    for name, a in flat.items():
        if name.endswith("bias"):
            np.testing.assert_array_equal(a, 0.0, err_msg=name)
        elif name.endswith("scale"):
            np.testing.assert_array_equal(a, 1.0, err_msg=name)
        else:
            want = residual if re.search(r"self_attention/out/|mlp/wo/", name) else 0.02
            assert a.std() == pytest.approx(want, rel=0.03), name
            assert abs(a.mean()) < 0.1 * want, name
            checked += 1
    # token and position tables; q, k, v, out, wi, wo kernels; tied output (no logits_dense)
    assert checked == 8 and "logits_dense/kernel" not in flat
    assert flat["embedder/position_embedder/embedding"].shape == (32, 256)


# ----------------------------------------------------------------------------- Hugging Face parity


def _hf_layers(params, n, attention, mlp, norms):
    """Our unrolled layer params -> HF per-layer state dict entries, via the per-part mappers."""
    sd = {}
    for i in range(n):
        layer = params["decoder"][f"layers_{i}"]
        sd.update(attention(i, layer["self_attention"]))
        sd.update(mlp(i, layer["mlp"]))
        sd.update(norms(i, layer["pre_self_attention_layer_norm"], layer["pre_mlp_layer_norm"]))
    return sd


def _t(a):  # a [in..., out...] kernel flattened to torch's [out, in]
    return a.T


def test_gpt3_variant_matches_hugging_face_gpt_neo(torch, transformers):
    """GPT-Neo alternates global and local (window 256) attention as GPT-3 describes. It neither scales the logits
    nor has q/k/v biases: our q/k/v biases are set to zero and its query weights carry our 1/sqrt(head_dim)."""
    config = _tiny("gpt3")
    params = jax.tree.map(lambda a: a, _params("gpt3"))  # new containers: the cache stays
    for sub in ("sub_0", "sub_1"):
        attention = params["decoder"]["layers"][sub]["self_attention"]
        for name in ("query", "key", "value"):
            attention[name]["bias"] = jnp.zeros_like(attention[name]["bias"])
    p = jax.tree.map(lambda a: np.asarray(a, np.float32), unstack_scanned_params(params))
    d, inner = config.embed_dim, config.num_heads * config.head_dim
    pre = "transformer.h"

    def attention(i, a):
        out = {
            f"{pre}.{i}.attn.attention.{hf}_proj.weight": _t(a[ours]["kernel"].reshape(d, inner)) * scale
            for ours, hf, scale in (("query", "q", config.head_dim**-0.5), ("key", "k", 1), ("value", "v", 1))
        }
        out[f"{pre}.{i}.attn.attention.out_proj.weight"] = _t(a["out"]["kernel"].reshape(inner, d))
        out[f"{pre}.{i}.attn.attention.out_proj.bias"] = a["out"]["bias"]
        return out

    def mlp(i, m):
        return {
            f"{pre}.{i}.mlp.c_fc.weight": _t(m["wi"]["kernel"]),
            f"{pre}.{i}.mlp.c_fc.bias": m["wi"]["bias"],
            f"{pre}.{i}.mlp.c_proj.weight": _t(m["wo"]["kernel"]),
            f"{pre}.{i}.mlp.c_proj.bias": m["wo"]["bias"],
        }

    def norms(i, ln1, ln2):
        return {
            f"{pre}.{i}.ln_1.weight": ln1["scale"],
            f"{pre}.{i}.ln_1.bias": ln1["bias"],
            f"{pre}.{i}.ln_2.weight": ln2["scale"],
            f"{pre}.{i}.ln_2.bias": ln2["bias"],
        }

    sd = _hf_layers(p, 4, attention, mlp, norms)
    sd["transformer.wte.weight"] = sd["lm_head.weight"] = p["embedder"]["token_embedder"]["embedding"]
    sd["transformer.wpe.weight"] = p["embedder"]["position_embedder"]["embedding"]
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = (
        p["decoder"]["decoder_norm"][k] for k in ("scale", "bias")
    )
    hf_config = transformers.GPTNeoConfig(
        vocab_size=VOCAB,
        max_position_embeddings=config.max_length,
        hidden_size=d,
        num_layers=4,
        attention_types=[[["global", "local"], 2]],
        num_heads=config.num_heads,
        intermediate_size=config.mlp_dim,
        window_size=BAND,
        activation_function="gelu_new",
        resid_dropout=0.0,
        embed_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=config.norm_epsilon,
        tie_word_embeddings=True,
    )
    hf_config._attn_implementation = "eager"
    hf = transformers.GPTNeoForCausalLM(hf_config).eval()
    missing, unexpected = hf.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in sd.items()}, strict=False)
    assert not unexpected and not [k for k in missing if not k.endswith("attn.attention.bias")], (missing, unexpected)
    tokens = _tokens(2, 2 * BAND + 3)  # past the band in both blocks
    with torch.no_grad():
        want = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    got = _logits("gpt3", params, tokens)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_modern_variant_matches_hugging_face_llama(torch, transformers):
    """Llama: rotate-half RoPE, RMSNorm, SwiGLU, GQA, no biases, untied — the modern variant's every piece."""
    config = _tiny("modern")
    params = _params("modern")
    p = jax.tree.map(lambda a: np.asarray(a, np.float32), unstack_scanned_params(params))
    d, h = config.embed_dim, config.head_dim
    pre = "model.layers"

    def attention(i, a):
        out = {
            f"{pre}.{i}.self_attn.{hf}_proj.weight": _t(a[ours]["kernel"].reshape(d, -1))
            for ours, hf in (("query", "q"), ("key", "k"), ("value", "v"))
        }
        out[f"{pre}.{i}.self_attn.o_proj.weight"] = _t(a["out"]["kernel"].reshape(-1, d))
        return out

    def mlp(i, m):
        return {
            f"{pre}.{i}.mlp.gate_proj.weight": _t(m["wi_0"]["kernel"]),
            f"{pre}.{i}.mlp.up_proj.weight": _t(m["wi_1"]["kernel"]),
            f"{pre}.{i}.mlp.down_proj.weight": _t(m["wo"]["kernel"]),
        }

    def norms(i, ln1, ln2):
        return {
            f"{pre}.{i}.input_layernorm.weight": ln1["scale"],
            f"{pre}.{i}.post_attention_layernorm.weight": ln2["scale"],
        }

    sd = _hf_layers(p, 4, attention, mlp, norms)
    sd["model.embed_tokens.weight"] = p["embedder"]["token_embedder"]["embedding"]
    sd["model.norm.weight"] = p["decoder"]["decoder_norm"]["scale"]
    sd["lm_head.weight"] = _t(p["logits_dense"]["kernel"])
    hf_config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=d,
        intermediate_size=config.mlp_dim,
        num_hidden_layers=4,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=h,
        max_position_embeddings=config.max_length,
        rms_norm_eps=config.norm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=False,
    )
    hf_config._attn_implementation = "eager"
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    hf.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in sd.items()}, strict=True)
    tokens = _tokens()
    with torch.no_grad():
        want = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(_logits("modern", params, tokens), want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- configs at published sizes

CONFIGS = ("gpt2_tiny", "gpt2_small", "gpt2_medium", "gpt3_small", "decoder_tiny", "decoder_1b")
# Published parameter counts: GPT-2's released checkpoints (Radford et al. 2019; its Table 2 said 117M / 345M),
# GPT-3 Table 2.1 (Brown et al. 2020), TinyLlama (Zhang et al. 2024). Exact where a released checkpoint has it.
PUBLISHED = {"gpt2_small": 124e6, "gpt2_medium": 355e6, "gpt3_small": 125e6, "decoder_1b": 1.1e9}
EXACT = {"gpt2_small": 124_439_808, "gpt2_medium": 354_823_168, "decoder_1b": 1_100_048_384}
GPT = dict(norm="layer", norm_epsilon=1e-5, use_bias=True, position_embedding="learned", mlp_activations=("gelu",))
GPT.update(init="normal", init_stddev=0.02, scale_residual_init=True, tie_embeddings=True, num_kv_heads=0)
MODERN = dict(norm="rms", use_bias=False, position_embedding="rotary", mlp_activations=("silu", "linear"))
MODERN.update(tie_embeddings=False, init="normal", scale_residual_init=False)
ARCHITECTURE = {"gpt2_tiny": GPT, "gpt2_small": GPT, "gpt2_medium": GPT, "gpt3_small": GPT}
ARCHITECTURE.update(decoder_tiny=MODERN, decoder_1b=MODERN)
RECIPE = dict(name="adamw", b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0, warmup_shape="linear", decay="cosine")
RECIPE.update(end_learning_rate_fraction=0.1)


def expected_shapes(m) -> dict[str, tuple[int, ...]]:
    """Parameter path -> shape, written from the architecture: token (+ position) table; per layer two norms,
    q [D, N, H], k and v [D, M, H], out [N, H, D] (+ biases), the (gated) MLP; a final norm; untied output."""
    d, n, h, f = m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim
    kv, layer_norm = m.num_kv_heads or n, m.norm == "layer"
    layer = {}
    for norm in ("pre_self_attention_layer_norm", "pre_mlp_layer_norm"):
        layer[f"{norm}/scale"] = (d,)
        layer.update({f"{norm}/bias": (d,)} if layer_norm else {})
    for name, heads in (("query", n), ("key", kv), ("value", kv)):
        layer[f"self_attention/{name}/kernel"] = (d, heads, h)
        layer.update({f"self_attention/{name}/bias": (heads, h)} if m.use_bias else {})
    layer["self_attention/out/kernel"] = (n, h, d)
    wis = ["wi"] if len(m.mlp_activations) == 1 else [f"wi_{i}" for i in range(len(m.mlp_activations))]
    for name, shape in [*((wi, (d, f)) for wi in wis), ("wo", (f, d))]:
        layer[f"mlp/{name}/kernel"] = shape
    if m.use_bias:
        layer.update({"self_attention/out/bias": (d,), "mlp/wo/bias": (d,), **{f"mlp/{wi}/bias": (f,) for wi in wis}})
    period = 2 if m.attention_pattern == "alternating_banded" else 1
    subs = [""] if period == 1 else [f"sub_{j}/" for j in range(period)]
    L = m.num_decoder_layers
    if m.scan_layers:  # stacked on a leading [layers / period] axis, per block of the period
        shapes = {f"decoder/layers/{sub}{k}": (L // period, *s) for sub in subs for k, s in layer.items()}
    else:
        shapes = {f"decoder/layers_{i}/{k}": s for i in range(L) for k, s in layer.items()}
    shapes["embedder/token_embedder/embedding"] = (m.vocab_size, d)
    if m.position_embedding == "learned":
        shapes["embedder/position_embedder/embedding"] = (m.max_length, d)
    shapes["decoder/decoder_norm/scale"] = (d,)
    shapes.update({"decoder/decoder_norm/bias": (d,)} if layer_norm else {})
    shapes.update({} if m.tie_embeddings else {"logits_dense/kernel": (d, m.vocab_size)})
    return shapes


def _lm_lengths(data_config) -> dict[str, int]:
    """The model features of a packed lm batch: seqio's decoder converter on rows of targets_length tokens."""
    return dict(
        seqio.DecoderFeatureConverter(pack=True).get_model_feature_lengths({"targets": data_config.targets_length})
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_the_published_architecture_and_size(name):
    config = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py"))
    m = config.model
    assert m.name == "decoder_only" and config.data.objective == "lm"
    assert {k: m[k] for k in ARCHITECTURE[name]} == ARCHITECTURE[name]
    assert {k: config.optim[k] for k in RECIPE} == RECIPE and config.train.z_loss == 0
    assert m.max_length >= config.data.targets_length
    lengths = _lm_lengths(config.data)
    boxed = jax.eval_shape(build_model(m).init, jax.random.key(0), step.init_batch(lengths))["params"]
    got = {
        "/".join(str(k.key) for k in path): a.shape for path, a in jax.tree_util.tree_leaves_with_path(nn.unbox(boxed))
    }
    assert got == expected_shapes(m)
    count = sum(int(np.prod(s)) for s in got.values())
    assert count == flops.COUNTERS["decoder_only"](m, 1, lengths)["params"]
    documented = re.search(r"Parameters: ([\d,]+)", (CONFIG_DIR / f"{name}.py").read_text()).group(1)
    assert count == int(documented.replace(",", "")), "the docstring's count"
    if name in PUBLISHED:
        assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.01, count
    if name in EXACT:
        assert count == EXACT[name]
    debug = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py") + ":debug")
    assert debug.model.to_dict() == {**m.to_dict(), "dtype": "float32"}
    assert (debug.data.corpus, debug.data.targets_length, debug.train.batch_size) == ("embedded", 32, 8)


def test_gpt3_small_counts_banded_attention_over_the_band_only():
    """lmx.flops: 6 dense layers x T^2 query-key pairs + 6 banded layers x T x band (12 N H FLOPs per pair)."""
    m = config_lib.load_config_file(str(CONFIG_DIR / "gpt3_small.py")).model
    assert (m.attention_pattern, m.attention_band, m.max_length, m.num_decoder_layers) == (
        "alternating_banded",
        256,
        2048,
        12,
    )
    per_pair = 12 * m.num_heads * m.head_dim
    counted = flops.COUNTERS["decoder_only"](m, 1, {"decoder_input_tokens": 2048})["attention"]
    assert counted == 6 * per_pair * 2048 * 2048 + 6 * per_pair * 2048 * 256


# ----------------------------------------------------------------------------- sharding


def _lm_batch(vocab, rows, length, seed):
    """A packed lm batch as seqio's DecoderFeatureConverter makes it: two examples per row, then padding; inputs are
    the targets shifted right within each example (0 at its start); loss on every real token."""
    rng = np.random.default_rng(seed)
    segments, positions = np.zeros((2, rows, length), np.int32)
    for r in range(rows):
        first, second = rng.integers(4, length // 2, 2)
        segments[r, :first], positions[r, :first] = 1, np.arange(first)
        segments[r, first : first + second], positions[r, first : first + second] = 2, np.arange(second)
    targets = np.where(segments > 0, rng.integers(2, vocab, (rows, length)), 0).astype(np.int32)
    inputs = np.where(positions > 0, np.roll(targets, 1, axis=1), 0).astype(np.int32)
    return {
        "decoder_target_tokens": targets,
        "decoder_input_tokens": inputs,
        "decoder_loss_weights": (segments > 0).astype(np.int32),
        "decoder_segment_ids": segments,
        "decoder_positions": positions,
    }


def _train(config, mesh_axes, devices, batches):
    """Initialises and runs len(batches) lm train steps on a mesh (tests/step_test.py's pattern)."""
    mesh = sharding.make_mesh(mesh_axes, devices)
    rules = sharding.rules_of(config)
    model = build_model(config.model)
    inputs = step.init_batch(_lm_lengths(config.data))
    init_params_fn = functools.partial(step.init_params, model=model, init_batch=inputs)
    key = jax.random.key(0)
    param_axes = nn.get_partition_spec(jax.eval_shape(init_params_fn, key))
    tx, schedule = optim.make_optimizer(config.optim, config.train.steps, param_axes)
    init_fn = functools.partial(step.init_state, model=model, tx=tx, init_batch=inputs)
    _, state_sharding = step.abstract_state_and_shardings(init_fn, init_params_fn, key, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(init_fn, out_shardings=state_sharding)(key)
        return run_steps(
            state,
            state_sharding,
            batches,
            mesh=mesh,
            model=model,
            tx=tx,
            schedule=schedule,
            objective="lm",
            config=config,
            key=key,
        )


@pytest.mark.parametrize(
    "name,overrides",
    # gpt2_tiny with GPT-3's banded attention in its odd layers (its dense layers are the plain gpt2_tiny's).
    [("gpt2_tiny", dict(attention_pattern="alternating_banded", attention_band=8)), ("decoder_tiny", {})],
    ids=["gpt2_tiny-banded", "decoder_tiny"],
)
def test_sharded_train_step_equals_single_device(name, overrides):
    config = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py"))
    # Two layers (one dense, one banded) and no dropout halve the compile time, which dominates this test; dropout
    # masks under sharding are tests/step_test.py's (the same Block and RNG streams).
    config.model.update(dict(num_decoder_layers=2, dropout_rate=0.0, **overrides))
    config.data.targets_length = 32  # 4 blocks of the band of 8
    config.optim.warmup_steps = 1
    batches = [_lm_batch(config.model.vocab_size, 8, 32, seed) for seed in range(2)]
    one = {"data": 1, "fsdp": 1, "tensor": 1, "expert": 1}
    many = {"data": 2, "fsdp": 2, "tensor": 2, "expert": 1}
    single_history, single_params, _ = _train(config, one, jax.devices()[:1], batches)
    sharded_history, sharded_params, state = _train(config, many, jax.devices()[:8], batches)
    for a, b in zip(single_history, sharded_history, strict=True):
        for metric in ("loss", "accuracy", "grad_norm", "update_norm"):
            np.testing.assert_allclose(a[metric], b[metric], rtol=2e-5, err_msg=metric)
    assert single_history[1]["loss"] < single_history[0]["loss"] + 1.0  # a real step, finite
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), single_params, sharded_params)
    embedding = state.params["embedder"]["token_embedder"]["embedding"]
    assert embedding.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
