"""Encoder-only models (lmx.models.encoder_only): BERT (Devlin et al. 2019) and ALBERT's factorised embedding and
cross-layer sharing (Lan et al. 2020, section 3.1).

- The forward pass against a float64 numpy BERT/ALBERT written here from the papers and the released models'
  structure (embeddings -> LayerNorm -> [projection] -> post-LN blocks -> MLM head, pooler, pair classifier).
- Bidirectional attention, padding, packing (segment ids, restarting positions, token types).
- scan_layers == unrolled and every remat policy: identical logits and gradients; ALBERT's shared block does not
  grow with depth; bfloat16 activations close to float32.
- The published configs: parameter counts (jax.eval_shape) against an independent count from the architecture and
  against the published figures; sharded (data=2, fsdp=2, tensor=2) train steps of the tiny ones equal one device.
- Option combinations that do not exist are refused, naming the field.
"""

import functools
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lmx_steps import run_steps
from scipy.special import erf

from lmx import config_lib, flops, optim, sharding, step
from lmx.models import build_model
from lmx.models.options import check_model_config
from lmx.models.transformer import REMAT_POLICIES, stack_unrolled_params

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


# ---------------------------------------------------------------------------------------------------------------
# Small models and batches


def bert_config(**changes):
    """The model section of a tiny BERT: every architectural choice of BERT-base, small dims, float32."""
    m = config_lib.base_config().model
    m.update(
        name="encoder_only",
        vocab_size=97,
        embed_dim=32,
        num_heads=4,
        head_dim=8,
        mlp_dim=48,
        num_encoder_layers=2,
        num_decoder_layers=0,
        mlp_activations=("gelu_exact",),
        use_bias=True,
        norm="layer",
        norm_position="post",
        norm_epsilon=1e-12,
        position_embedding="learned",
        max_length=24,
        type_vocab_size=2,
        scale_attention_logits=True,
        tie_embeddings=True,
        init="normal",
        dtype="float32",
        scan_layers=False,
        remat_policy="none",
    )
    m.update(changes)
    check_model_config(m)
    return m


def albert_config(**changes):
    """A tiny ALBERT: E = 16 < D = 32, one block shared by 3 layers, tanh GELU (the released ALBERT's)."""
    settings = dict(embed_proj_dim=16, share_layers=True, num_encoder_layers=3, mlp_activations=("gelu",))
    return bert_config(**{**settings, **changes})


FAMILIES = {"bert": bert_config, "albert": albert_config}


def random_batch(rows, length, vocab, seed=0):
    """Unpadded rows of random ids (never 0, the padding id) and random token types."""
    rng = np.random.default_rng(seed)
    return {
        "encoder_input_tokens": jnp.asarray(rng.integers(1, vocab, (rows, length)), jnp.int32),
        "encoder_token_types": jnp.asarray(rng.integers(0, 2, (rows, length)), jnp.int32),
    }


def random_params(model, batch, seed=0):
    """Parameters of the model's shapes drawn in numpy: N(0, 0.1^2), norm scales 1 + N(0, 0.1^2). Non-zero biases and
    non-unit scales show a bias or a norm applied in the wrong place; numpy avoids compiling the model's init."""
    shapes = nn.unbox(jax.eval_shape(lambda k: model.init(k, batch), jax.random.key(0))["params"])
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        value = 0.1 * rng.standard_normal(leaf.shape)
        return jnp.asarray(value + (1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


_FORWARDS = {}


def forward(m):
    """The jitted model call of config m: (params, batch) -> outputs. One per distinct config, so tests that share a
    config and batch shapes share the compiled program."""
    key = m.to_json()
    if key not in _FORWARDS:
        model = build_model(m)
        _FORWARDS[key] = jax.jit(lambda params, batch: model.apply({"params": params}, batch))
    return _FORWARDS[key]


# ---------------------------------------------------------------------------------------------------------------
# The float64 numpy reference, from the papers


def np_layer_norm(x, p, eps):
    """Ba et al. 2016: (x - mean) / sqrt(var + eps) * scale + bias over the features."""
    mean = x.mean(-1, keepdims=True)
    var = np.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_gelu(x, name):
    """GELU (Hendrycks & Gimpel 2016): x Phi(x) exactly (BERT) or its tanh approximation (released ALBERT)."""
    if name == "gelu_exact":
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    assert name == "gelu"
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def np_dense(x, p, contract=1):
    """x [..., *in] . kernel [*in, *out] + bias, contracting the last `contract` dims of x."""
    axes = (list(range(x.ndim - contract, x.ndim)), list(range(contract)))
    return np.tensordot(x, p["kernel"], axes=axes) + p["bias"]


def np_bert_layer(x, p, m):
    """One post-LN Transformer layer as BERT's released code builds it (Vaswani et al. 2017, section 3.2;
    Devlin et al. 2019, section 3): h = LN(x + W_o MultiHead(x)); out = LN(h + W_2 GELU(W_1 h)). x: [L, D]."""
    a = p["self_attention"]
    q, k, v = (np_dense(x, a[name]) for name in ("query", "key", "value"))  # [L, N, H]
    logits = np.einsum("QNH,KNH->NQK", q, k) / np.sqrt(m.head_dim)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("NQK,KNH->QNH", probs, v)
    h = np_layer_norm(x + np_dense(context, a["out"], contract=2), p["post_self_attention_layer_norm"], m.norm_epsilon)
    ffn = np_dense(np_gelu(np_dense(h, p["mlp"]["wi"]), m.mlp_activations[0]), p["mlp"]["wo"])
    return np_layer_norm(h + ffn, p["post_mlp_layer_norm"], m.norm_epsilon)


def np_encoder_only(params, m, tokens, types):
    """BERT (or ALBERT) on one unpadded example in float64: tokens, types [L] -> (hidden [L, D], MLM logits
    [L, V], pooled [D], pair logits [2])."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    e = p["embedder"]
    # Embeddings (BERT section 3.2): token + position + token type, then LayerNorm (and dropout).
    x = (
        e["token_embedder"]["embedding"][tokens]
        + e["position_embedder"]["embedding"][: len(tokens)]
        + e["token_type_embedder"]["embedding"][types]
    )
    x = np_layer_norm(x, e["embedding_norm"], m.norm_epsilon)  # [L, E]
    if m.embed_proj_dim:  # ALBERT section 3.1: embed in E, project to the hidden size H
        x = np_dense(x, e["embedding_projection"])  # [L, D]
    if m.share_layers:  # ALBERT section 3.1: all parameters shared across layers
        blocks = [p["encoder"]["shared_layer"]] * m.num_encoder_layers
    else:
        blocks = [p["encoder"][f"layers_{i}"] for i in range(m.num_encoder_layers)]
    for block in blocks:
        x = np_bert_layer(x, block, m)
    # MLM head (released code): dense -> GELU -> LayerNorm -> the token embedding transposed + an output bias.
    h = np_layer_norm(np_gelu(np_dense(x, p["mlm_transform"]), m.mlp_activations[0]), p["mlm_norm"], m.norm_epsilon)
    logits = h @ e["token_embedder"]["embedding"].T + p["mlm_bias"]
    pooled = np.tanh(np_dense(x[0], p["pooler"]))  # dense + tanh on the first ([CLS]) token
    return x, logits, pooled, np_dense(pooled, p["pair_classifier"])


# ---------------------------------------------------------------------------------------------------------------
# Against the reference


@pytest.fixture(scope="module")
def one_bert_layer():
    """A one-layer BERT, its hidden states and outputs on two rows, and the numpy reference's."""
    m = bert_config(num_encoder_layers=1)
    model = build_model(m)
    batch = random_batch(2, 11, m.vocab_size)
    params = random_params(model, batch)

    @jax.jit
    def run(params, batch):
        hidden, _ = model.apply({"params": params}, batch, method=model.encode)
        return hidden, model.apply({"params": params}, batch)

    hidden, outputs = run(params, batch)
    tokens, types = np.asarray(batch["encoder_input_tokens"]), np.asarray(batch["encoder_token_types"])
    reference = [np_encoder_only(params, m, tokens[r], types[r]) for r in range(2)]
    return hidden, outputs, reference


def test_one_post_norm_bert_layer_matches_numpy(one_bert_layer):
    hidden, _, reference = one_bert_layer
    for row, (want, *_) in enumerate(reference):
        np.testing.assert_allclose(hidden[row], want, rtol=1e-5, atol=1e-5)


def test_mlm_head_pooler_and_pair_classifier_match_numpy(one_bert_layer):
    _, outputs, reference = one_bert_layer
    assert outputs["logits"].dtype == jnp.float32 and outputs["pair_logits"].shape == (2, 2)
    for row, (_, logits, pooled, pair) in enumerate(reference):
        np.testing.assert_allclose(outputs["logits"][row], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["pooled"][row], pooled, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["pair_logits"][row], pair, rtol=1e-5, atol=1e-5)


def test_albert_applies_one_shared_block_n_times():
    m = albert_config(scan_layers=True)  # scanned with broadcast parameters (unrolled: the scan == unrolled test)
    batch = random_batch(2, 9, m.vocab_size, seed=3)
    params = random_params(build_model(m), batch, seed=3)
    assert set(params["encoder"]) == {"shared_layer"}  # one block, no layers axis
    outputs = forward(m)(params, batch)
    for row in range(2):
        _, logits, pooled, pair = np_encoder_only(
            params, m, np.asarray(batch["encoder_input_tokens"][row]), np.asarray(batch["encoder_token_types"][row])
        )
        np.testing.assert_allclose(outputs["logits"][row], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["pooled"][row], pooled, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["pair_logits"][row], pair, rtol=1e-5, atol=1e-5)


def test_factorised_embedding_shapes_and_axes():
    m = albert_config(scan_layers=True)
    v, e, d, n, h = m.vocab_size, m.embed_proj_dim, m.embed_dim, m.num_heads, m.head_dim
    model = build_model(m)
    boxed = jax.eval_shape(lambda k: model.init(k, random_batch(1, 8, v)), jax.random.key(0))["params"]
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(boxed))
    axes = nn.get_partition_spec(boxed)
    embedder = shapes["embedder"]
    assert embedder["token_embedder"]["embedding"] == (v, e)
    assert embedder["position_embedder"]["embedding"] == (m.max_length, e)
    assert embedder["token_type_embedder"]["embedding"] == (2, e)
    assert embedder["embedding_norm"] == {"scale": (e,), "bias": (e,)}  # the norm runs in E, before projecting
    assert embedder["embedding_projection"] == {"kernel": (e, d), "bias": (d,)}
    assert tuple(axes["embedder"]["embedding_projection"]["kernel"]) == (None, "embed")
    # The MLM head maps back to E (its output matrix is the [V, E] token table).
    assert shapes["mlm_transform"] == {"kernel": (d, e), "bias": (e,)}
    assert shapes["mlm_norm"] == {"scale": (e,), "bias": (e,)} and shapes["mlm_bias"] == (v,)
    assert shapes["pooler"] == {"kernel": (d, d), "bias": (d,)}
    assert shapes["pair_classifier"] == {"kernel": (d, 2), "bias": (2,)}
    # Broadcast through the scan: the shared block has no `layers` axis.
    assert shapes["encoder"]["shared_layer"]["self_attention"]["query"]["kernel"] == (d, n, h)
    assert tuple(axes["encoder"]["shared_layer"]["self_attention"]["query"]["kernel"]) == ("embed", "heads", "kv")


def _param_count(m):
    model = build_model(m)
    boxed = jax.eval_shape(lambda k: model.init(k, random_batch(1, 8, m.vocab_size)), jax.random.key(0))
    return sum(x.size for x in jax.tree.leaves(boxed))


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_shared_parameters_do_not_grow_with_depth(scan):
    albert = [_param_count(albert_config(num_encoder_layers=n, scan_layers=scan)) for n in (1, 6)]
    assert albert[0] == albert[1]
    bert = [_param_count(bert_config(num_encoder_layers=n, scan_layers=scan)) for n in (1, 2, 6)]
    assert bert[2] - bert[1] == 4 * (bert[1] - bert[0]) > 0


# ---------------------------------------------------------------------------------------------------------------
# Attention: both directions, padding, packing


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_is_bidirectional(family):
    m = FAMILIES[family]()
    run = forward(m)
    batch = random_batch(2, 10, m.vocab_size, seed=5)  # the padding test's shapes: the same compiled program
    params = random_params(build_model(m), batch)
    tokens = batch["encoder_input_tokens"]
    before = run(params, batch)["logits"][0]
    later = run(params, dict(batch, encoder_input_tokens=tokens.at[0, -1].set(1 + tokens[0, -1] % 90)))["logits"]
    earlier = run(params, dict(batch, encoder_input_tokens=tokens.at[0, 0].set(1 + tokens[0, 0] % 90)))["logits"]
    # A later token changes the first position's output, an earlier one the last's (a causal model fails the first).
    assert np.abs(later[0, 0] - before[0]).max() > 1e-3
    assert np.abs(earlier[0, -1] - before[-1]).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_never_changes_real_positions(family):
    m = FAMILIES[family]()
    run = forward(m)
    batch = random_batch(2, 10, m.vocab_size, seed=7)
    params = random_params(build_model(m), batch)
    alone = run(params, batch)
    padded = {
        "encoder_input_tokens": jnp.pad(batch["encoder_input_tokens"], ((0, 0), (0, 6))),
        # Token types under padding are arbitrary: the padding must be ignored whatever it holds.
        "encoder_token_types": jnp.pad(batch["encoder_token_types"], ((0, 0), (0, 6)), constant_values=1),
    }
    out = run(params, padded)
    np.testing.assert_allclose(out["logits"][:, :10], alone["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["pooled"], alone["pooled"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_row_equals_examples_alone(family):
    """Two examples packed in one row (segment ids 1, 2, padding 0; positions restarting at 0; their token types)
    give each example's outputs alone (each alone is a padded row, which the padding test shows changes nothing)."""
    m = FAMILIES[family]()
    run = forward(m)
    lengths, row_length = (5, 7), 16
    rng = np.random.default_rng(11)
    tokens = [rng.integers(1, m.vocab_size, n).astype(np.int32) for n in lengths]
    types = [np.array([0] * (n // 2) + [1] * (n - n // 2), np.int32) for n in lengths]
    pad = row_length - sum(lengths)

    def row(parts):
        return np.concatenate([*parts, np.zeros(pad, np.int32)])[None]

    packed = {  # the row twice: the padding test's [2, 16] batch shape
        "encoder_input_tokens": row(tokens),
        "encoder_token_types": row(types),
        "encoder_segment_ids": row([np.full(n, i + 1, np.int32) for i, n in enumerate(lengths)]),
        "encoder_positions": row([np.arange(n, dtype=np.int32) for n in lengths]),
    }
    packed = {name: np.concatenate([value, value]) for name, value in packed.items()}
    alone = {  # [2 examples, 10]: each padded (the padding test's [2, 10] shape)
        "encoder_input_tokens": np.stack([np.pad(t, (0, 10 - len(t))) for t in tokens]),
        "encoder_token_types": np.stack([np.pad(t, (0, 10 - len(t))) for t in types]),
    }
    params = random_params(build_model(m), alone)
    out, want = jax.device_get(run(params, packed)), jax.device_get(run(params, alone))
    np.testing.assert_allclose(out["logits"][:, :5], want["logits"][[0, 0], :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["logits"][:, 5:12], want["logits"][[1, 1], :7], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["pooled"], want["pooled"][[0, 0]], rtol=1e-5, atol=1e-5)  # the first [CLS]


# ---------------------------------------------------------------------------------------------------------------
# scan, remat, dtypes


def _loss_and_grads(m, params, batch):
    """A scalar of every output (MLM cross-entropy against the inputs + the pair logits), its gradients and the
    logits."""
    model = build_model(m)

    def loss(p):
        out = model.apply({"params": p}, batch)
        log_probs = jax.nn.log_softmax(out["logits"])
        xent = -jnp.take_along_axis(log_probs, batch["encoder_input_tokens"][..., None], -1).mean()
        return xent + jnp.sum(out["pair_logits"] ** 2), out["logits"]

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_and_every_remat_policy_equal_unrolled(family):
    """Logits and gradients of the unrolled stack = the scanned one under every remat policy. BERT's layers_0..
    stack into `layers`; ALBERT's shared block is the same tree either way (broadcast, not stacked)."""
    layers = 2  # the fewest that repeat a block (shared or not), to keep the ten compilations quick
    unrolled = FAMILIES[family](scan_layers=False, remat_policy="none", num_encoder_layers=layers)
    batch = random_batch(2, 8, unrolled.vocab_size, seed=2)
    params = random_params(build_model(unrolled), batch)
    (value, logits), grads = _loss_and_grads(unrolled, params, batch)
    convert = (lambda tree: tree) if family == "albert" else stack_unrolled_params
    for policy in REMAT_POLICIES:
        scanned = FAMILIES[family](scan_layers=True, remat_policy=policy, num_encoder_layers=layers)
        expected_tree = jax.tree.structure(random_params(build_model(scanned), batch))
        assert jax.tree.structure(convert(params)) == expected_tree
        (value_s, logits_s), grads_s = _loss_and_grads(scanned, convert(params), batch)
        np.testing.assert_allclose(logits_s, logits, rtol=1e-5, atol=1e-5, err_msg=policy)
        np.testing.assert_allclose(value_s, value, rtol=1e-6, err_msg=policy)
        jax.tree.map(
            lambda a, b, policy=policy: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=policy),
            grads_s,
            convert(grads),
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_activations_close_to_float32(family):
    m32, m16 = FAMILIES[family](), FAMILIES[family](dtype="bfloat16")
    batch = random_batch(2, 10, m32.vocab_size, seed=9)
    params = random_params(build_model(m32), batch)
    boxed = jax.eval_shape(lambda k: build_model(m16).init(k, batch), jax.random.key(0))
    assert {x.dtype for x in jax.tree.leaves(boxed)} == {np.dtype(np.float32)}  # parameters stay float32
    out32, out16 = forward(m32)(params, batch), forward(m16)(params, batch)
    assert out16["logits"].dtype == jnp.float32
    scale = np.abs(out32["logits"]).max()
    error = np.abs(out16["logits"] - out32["logits"]).max()
    assert 0 < error < 0.05 * scale, (error, scale)  # bfloat16 has 8 mantissa bits: close, not equal
    probs32, probs16 = jax.nn.softmax(out32["logits"]), jax.nn.softmax(out16["logits"])
    assert np.abs(probs16 - probs32).max() < 0.02


# ---------------------------------------------------------------------------------------------------------------
# Published configs: independent parameter counts


def encoder_only_count(m) -> tuple[int, int]:
    """(embeddings + encoder + pooler, MLM head + pair classifier) of BERT/ALBERT from the architecture:
    the first part is what Hugging Face's BertModel / AlbertModel hold, the sum their *ForPreTraining."""
    v, d, f, inner = m.vocab_size, m.embed_dim, m.mlp_dim, m.num_heads * m.head_dim
    e = m.embed_proj_dim or d
    embeddings = (v + m.max_length + m.type_vocab_size) * e + 2 * e  # three tables + LayerNorm
    projection = e * d + d if m.embed_proj_dim else 0
    attention = 3 * (d * inner + inner) + inner * d + d  # q, k, v, output with biases
    layer = attention + (d * f + f) + (f * d + d) + 2 * 2 * d  # + MLP with biases + two LayerNorms
    stored_layers = 1 if m.share_layers else m.num_encoder_layers
    pooler = d * d + d
    mlm_head = d * e + e + 2 * e + v  # transform, LayerNorm, output bias (the output matrix is the token table)
    pair_classifier = 2 * d + 2
    return embeddings + projection + stored_layers * layer + pooler, mlm_head + pair_classifier


def t5_1_0_count(m) -> int:
    """T5.1.0: one tied [vocab, d] table; per layer attention without biases, ReLU MLP (wi, wo), RMS norm scales;
    one relative-position table per stack; final norms."""
    d, inner, f = m.embed_dim, m.num_heads * m.head_dim, m.mlp_dim
    attention = 4 * d * inner
    encoder_layer = attention + 2 * d * f + 2 * d
    decoder_layer = 2 * attention + 2 * d * f + 3 * d
    relpos = 2 * m.relpos_num_buckets * m.num_heads
    return (
        m.vocab_size * d + m.num_encoder_layers * encoder_layer + m.num_decoder_layers * decoder_layer + relpos + 2 * d
    )


# config -> (published figure, what it counts, tolerance). Hugging Face's counts are those of the released checkpoints
# (the same architectures built by `transformers`); the papers round: BERT-base "110M" (Devlin et al.), BERT-large
# "340M" (Devlin et al.; 1.4% above the release) or 334M (Lan et al. table 1), ALBERT-base "12M" (Lan et al. table 1,
# 1.6% above the release), T5-base "about 220 million" (Raffel et al. 3.1.1; the release is 223M).
PUBLISHED = {
    "bert_base": [(109_482_240, "body", 0.0), (110_106_428, "total", 0.0), (110e6, "total", 0.01)],
    "bert_large": [(335_141_888, "body", 0.0), (336_226_108, "total", 0.0), (334e6, "body", 0.01)],
    "albert_base": [(11_683_584, "body", 0.0), (11_813_810, "total", 0.0), (12e6, "total", 0.02)],
    "t5_1_0_base": [(222_903_552, "total", 0.0), (223e6, "total", 0.01)],
}
MY_CONFIGS = ["bert_base", "bert_large", "albert_base", "bert_tiny", "albert_tiny", "t5_1_0_base", "t5_1_0_tiny"]


@pytest.mark.parametrize("name", MY_CONFIGS)
def test_config_parameter_count(name):
    config = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py"))
    config_lib.check_fields(config)
    m = config.model
    check_model_config(m)
    model = build_model(m)
    length = config.data.inputs_length
    tokens = jnp.ones((1, length), jnp.int32)
    batch = {"encoder_input_tokens": tokens}
    if m.name == "encoder_decoder":
        batch["decoder_input_tokens"] = jnp.ones((1, config.data.targets_length), jnp.int32)
    boxed = jax.eval_shape(lambda k: model.init(k, batch), jax.random.key(0))
    count = sum(x.size for x in jax.tree.leaves(boxed))
    if m.name == "encoder_only":
        body, heads = encoder_only_count(m)
        parts = {"body": body, "total": body + heads}
        assert m.mlp_activations[0] in ("gelu_exact", "gelu") and m.tie_embeddings and m.norm_position == "post"
    else:
        parts = {"total": t5_1_0_count(m)}
        assert tuple(m.mlp_activations) == ("relu",) and m.tie_embeddings
    assert count == parts["total"]
    # lmx.flops' counter (used for MFU and by tests/configs_test.py) agrees with the independent count.
    counted = flops.COUNTERS[m.name](m, 1, {"encoder_input_tokens": length, "decoder_input_tokens": length})
    assert counted["params"] == count
    for figure, part, tolerance in PUBLISHED.get(name, []):
        assert abs(parts[part] - figure) <= tolerance * figure, (name, part, parts[part], figure)


@pytest.mark.parametrize("name", ["bert_base", "bert_large", "albert_base", "t5_1_0_base"])
def test_debug_variant_keeps_the_architecture(name):
    full = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py"))
    debug = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py:debug"))
    assert debug.model.embed_dim == full.model.embed_dim and debug.data.corpus == "embedded"
    assert debug.train.batch_size < full.train.batch_size
    with pytest.raises(config_lib.ConfigError, match="takes no argument or 'debug'"):
        config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py:huge"))


# ---------------------------------------------------------------------------------------------------------------
# Sharded train steps of the tiny configs


def _mlm_batch(config, rows, seed):
    """Packed MLM rows by hand (two examples each, 15% of the real tokens selected, loss on those only)."""
    rng = np.random.default_rng(seed)
    length, vocab = config.data.inputs_length, config.model.vocab_size
    first = rng.integers(4, length // 2, rows)
    second = rng.integers(4, length // 2, rows)
    positions = np.arange(length)[None]
    segments = np.where(positions < first[:, None], 1, np.where(positions < (first + second)[:, None], 2, 0))
    starts = np.where(segments == 2, first[:, None], 0)
    targets = np.where(segments > 0, rng.integers(5, vocab, (rows, length)), 0)
    selected = (rng.random((rows, length)) < 0.15) & (segments > 0)
    return {
        "encoder_input_tokens": np.where(selected, 3, targets).astype(np.int32),  # 3 plays [MASK]
        "encoder_target_tokens": targets.astype(np.int32),
        "encoder_loss_weights": selected.astype(np.float32),
        "encoder_token_types": ((segments > 0) & (positions >= starts + 3)).astype(np.int32),
        "encoder_segment_ids": segments.astype(np.int32),
        "encoder_positions": np.where(segments > 0, positions - starts, 0).astype(np.int32),
    }


def _run_steps(config, mesh_axes, devices, batches):
    """Puts the same initial state on a mesh and runs the train steps; returns per-step metrics and final params."""
    mesh = sharding.make_mesh(mesh_axes, devices)
    rules = sharding.rules_of(config)
    model = build_model(config.model)
    inputs = step.init_batch({name: config.data.inputs_length for name in batches[0]})
    init_params_fn = functools.partial(step.init_params, model=model, init_batch=inputs)
    key = jax.random.key(0)
    tx, schedule = optim.make_optimizer(
        config.optim, config.train.steps, nn.get_partition_spec(jax.eval_shape(init_params_fn, key))
    )
    init_fn = functools.partial(step.init_state, model=model, tx=tx, init_batch=inputs)
    _, state_sharding = step.abstract_state_and_shardings(init_fn, init_params_fn, key, mesh, rules)
    # Parameters drawn in numpy (compiling the model's random init costs more than the steps), then the state laid
    # out in its shardings as lmx.train does.
    params = random_params(model, inputs)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(
            lambda p: step.TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p)),
            out_shardings=state_sharding,
        )(params)
        return run_steps(
            state,
            state_sharding,
            batches,
            mesh=mesh,
            model=model,
            tx=tx,
            schedule=schedule,
            objective="mlm",
            config=config,
            key=key,
        )


@pytest.mark.parametrize("name", ["bert_tiny", "albert_tiny"])
def test_sharded_step_equals_single_device(name):
    config = config_lib.load_config_file(str(CONFIG_DIR / f"{name}.py"))
    config.data.inputs_length = 32  # the tiny architecture on short rows, for speed
    if name == "albert_tiny":  # the shared block broadcast through a scan, rematerialised, on the mesh too
        config.model.scan_layers, config.model.remat_policy = True, "dots"
    config.optim.warmup_steps = 1
    batches = [_mlm_batch(config, 8, seed) for seed in range(2)]
    one = {"data": 1, "fsdp": 1, "tensor": 1, "expert": 1}
    many = {"data": 2, "fsdp": 2, "tensor": 2, "expert": 1}
    single_history, single_params, _ = _run_steps(config, one, jax.devices()[:1], batches)
    sharded_history, sharded_params, state = _run_steps(config, many, jax.devices(), batches)
    for a, b in zip(single_history, sharded_history, strict=True):
        for metric in ("loss", "accuracy", "grad_norm", "update_norm", "target_tokens"):
            np.testing.assert_allclose(a[metric], b[metric], rtol=2e-5, err_msg=metric)
    assert single_history[0]["loss"] == pytest.approx(math.log(config.model.vocab_size), rel=0.2)
    # AdamW turns the float32 reassociation noise of near-zero gradients into visible steps (tests/step_test.py).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), single_params, sharded_params)
    # The state really is spread: the [vocab, E] token table over tensor x fsdp.
    table = state.params["embedder"]["token_embedder"]["embedding"]
    assert table.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: options of other families, impossible combinations


def _decoder_only(**changes):
    m = config_lib.base_config().model
    m.update(name="decoder_only", num_encoder_layers=0, norm="layer", position_embedding="learned", max_length=64)
    m.update(changes)
    return m


def _t5(**changes):
    m = config_lib.base_config().model
    m.update(changes)
    return m


def _bert(**changes):
    m = bert_config()  # checked, then broken
    m.update(changes)
    return m


BAD = {
    "types_on_decoder": (lambda: _decoder_only(type_vocab_size=2), "type_vocab_size"),
    "sharing_on_decoder": (lambda: _decoder_only(share_layers=True), "share_layers"),
    "sharing_on_t5": (lambda: _t5(share_layers=True), "share_layers"),
    "embed_proj_on_t5": (lambda: _t5(embed_proj_dim=128), "embed_proj_dim"),
    "embed_proj_on_decoder": (lambda: _decoder_only(embed_proj_dim=128), "embed_proj_dim"),
    "kv_heads_not_dividing": (lambda: _bert(num_kv_heads=3), "num_kv_heads"),
    "band_0": (lambda: _decoder_only(attention_pattern="alternating_banded", attention_band=0), "attention_band"),
    "banded_encoder": (lambda: _bert(attention_pattern="alternating_banded"), "attention_pattern"),
    "relative_positions_on_bert": (lambda: _bert(position_embedding="relative"), "position_embedding"),
    "untied_bert": (lambda: _bert(tie_embeddings=False), "tie_embeddings"),
    "bert_with_decoder": (lambda: _bert(num_decoder_layers=2), "num_decoder_layers"),
    "bert_without_layers": (lambda: _bert(num_encoder_layers=0), "num_encoder_layers"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_option_combinations_name_the_field(case):
    build, field = BAD[case]
    with pytest.raises(ValueError, match=rf"^config\.model\.{field}=") as raised:
        check_model_config(build())
    assert "\n" not in str(raised.value)
