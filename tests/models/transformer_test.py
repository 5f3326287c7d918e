"""The whole T5.1.1 model: Hugging Face parity, scan/remat equivalence, packing, sizes and partitioning."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import config_lib
from lmx.convert import families, tensors
from lmx.models import MODELS, EncoderDecoder, build_model, dtype_of
from lmx.models.transformer import stack_unrolled_params, unstack_scanned_params

# Encoder inputs with padding (0) at the end of the second row; decoder inputs start with 0 (shifted right).
ENCODER_TOKENS = np.array([[5, 17, 33, 9, 64, 3, 12, 90, 41, 1], [7, 8, 100, 2, 55, 1, 0, 0, 0, 0]])
DECODER_TOKENS = np.array([[0, 11, 23, 5, 77, 31, 1], [0, 4, 9, 120, 1, 0, 0]])


def make_tiny_config(**overrides):
    """config.model of the base config shrunk to a 2+2-layer float32 model that runs in milliseconds on CPU."""
    c = config_lib.base_config().model
    c.update(
        dict(
            vocab_size=128,
            embed_dim=32,
            num_heads=4,
            head_dim=8,
            mlp_dim=64,
            num_encoder_layers=2,
            num_decoder_layers=2,
            dtype="float32",
            max_length=64,
        )
    )
    c.update(overrides)
    return config_lib.lock(c)


@functools.cache
def model_and_apply(**overrides):
    """(model, jitted model.apply) of the tiny config with `overrides`; compiled once per distinct call shape."""
    model = build_model(make_tiny_config(**overrides))
    return model, jax.jit(model.apply, static_argnames=("enable_dropout", "method"))


def batch_of(encoder, decoder, **features):
    """The model's feature dict (lmx.models contract) of encoder and decoder token arrays (+ segment ids)."""
    features = {"encoder_input_tokens": encoder, "decoder_input_tokens": decoder, **features}
    return {k: v if isinstance(v, jax.ShapeDtypeStruct) else jnp.asarray(v) for k, v in features.items()}


@functools.cache
def params_of(**overrides):
    """Initialised params (boxed) of the tiny config; shared by every test using the same parameter tree."""
    model, _ = model_and_apply(**overrides)
    return jax.jit(model.init)(jax.random.PRNGKey(0), batch_of(ENCODER_TOKENS, DECODER_TOKENS))["params"]


def logits(
    params,
    encoder=ENCODER_TOKENS,
    decoder=DECODER_TOKENS,
    *,
    overrides=None,
    enable_dropout=False,
    rngs=None,
    **features,
):
    """Logits of the tiny model (with config `overrides`) on the given token arrays (+ segment ids), as numpy."""
    _, apply = model_and_apply(**(overrides or {}))
    outputs = apply(
        {"params": params}, batch_of(encoder, decoder, **features), enable_dropout=enable_dropout, rngs=rngs
    )
    return np.asarray(outputs["logits"])


# ----------------------------------------------------------------------------- Hugging Face parity


def to_hf_state_dict(params, config):
    """Our params -> T5ForConditionalGeneration state dict (numpy arrays, tied twins included), by the converter's
    T5 table (lmx.convert.mappings.T5), the mapping `python -m lmx.convert.hf` uses."""
    return tensors.to_hf(params, config, families.FAMILIES["t5"], with_aliases=True)


@pytest.mark.parametrize(
    "overrides,feed_forward_proj",
    [
        ({}, "gated-gelu"),  # T5.1.1
        ({"mlp_activations": ("relu",), "tie_embeddings": True}, "relu"),  # T5.1.0
    ],
    ids=["t5.1.1", "t5.1.0"],
)
def test_matches_hugging_face_t5(overrides, feed_forward_proj, torch, transformers):
    config = make_tiny_config(**overrides)
    params = params_of(**overrides)
    ours = logits(params, overrides=overrides)

    hf_config = transformers.T5Config(
        vocab_size=config.vocab_size,
        d_model=config.embed_dim,
        d_kv=config.head_dim,
        d_ff=config.mlp_dim,
        num_layers=config.num_encoder_layers,
        num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads,
        relative_attention_num_buckets=config.relpos_num_buckets,
        relative_attention_max_distance=config.relpos_max_distance,
        dropout_rate=0.0,
        layer_norm_epsilon=config.norm_epsilon,
        feed_forward_proj=feed_forward_proj,
        tie_word_embeddings=config.tie_embeddings,
    )
    hf = transformers.T5ForConditionalGeneration(hf_config).eval()
    state = {k: torch.tensor(np.array(v)) for k, v in to_hf_state_dict(params, config).items()}
    assert set(state) == set(hf.state_dict()), set(state) ^ set(hf.state_dict())
    if not config.tie_embeddings:
        # Recent transformers always ties lm_head to the input embedding; T5.1.1 has its own output layer, so
        # give lm_head a parameter of its own before loading (else one load overwrites the other).
        hf.lm_head.weight = torch.nn.Parameter(torch.empty_like(hf.lm_head.weight))
    hf.load_state_dict(state)
    for name, value in hf.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[name].numpy(), err_msg=name)
    with torch.no_grad():
        theirs = hf(
            input_ids=torch.from_numpy(ENCODER_TOKENS),
            attention_mask=torch.from_numpy((ENCODER_TOKENS != 0).astype(np.int64)),
            decoder_input_ids=torch.from_numpy(DECODER_TOKENS),
            use_cache=False,
        ).logits.numpy()
    assert ours.shape == theirs.shape == (*DECODER_TOKENS.shape, config.vocab_size)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- scan, remat, dropout


def test_scan_and_unrolled_give_identical_logits():
    params = params_of()
    converted = unstack_scanned_params(params)
    # Same tree structure and shapes as an unrolled model's init (abstract: nothing is computed).
    unrolled_model, _ = model_and_apply(scan_layers=False)
    unrolled_shapes = jax.eval_shape(
        unrolled_model.init, jax.random.PRNGKey(0), batch_of(ENCODER_TOKENS, DECODER_TOKENS)
    )["params"]
    assert jax.tree.map(jnp.shape, converted) == jax.tree.map(jnp.shape, nn.unbox(unrolled_shapes))
    unrolled = logits(converted, overrides={"scan_layers": False})
    np.testing.assert_allclose(logits(params), unrolled, rtol=1e-5, atol=1e-5)
    # And back: stacking the unrolled params reproduces the scanned tree.
    jax.tree.map(np.testing.assert_array_equal, stack_unrolled_params(converted), nn.unbox(params))


@pytest.mark.parametrize(
    "scan_layers,policies", [(True, ("full", "dots", "dots_with_no_batch_dims")), (False, ("full",))]
)
def test_remat_policies_give_identical_gradients(scan_layers, policies):
    params = params_of() if scan_layers else unstack_scanned_params(params_of())
    weights = jax.random.normal(jax.random.PRNGKey(1), (*DECODER_TOKENS.shape, 128))
    batch = batch_of(ENCODER_TOKENS, DECODER_TOKENS)

    def grads(policy):
        model, _ = model_and_apply(scan_layers=scan_layers, remat_policy=policy)
        loss = lambda p: jnp.sum(model.apply({"params": p}, batch)["logits"] * weights)  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    reference = grads("none")
    for policy in policies:
        # Equal up to float32 reassociation: recomputation may fuse differently (|grad| ~ 10, diffs ~ 1e-6).
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), grads(policy), reference)


def test_dropout_is_random_only_when_enabled():
    params, overrides = params_of(), {"dropout_rate": 0.3}
    eval_a = logits(params, overrides=overrides)
    np.testing.assert_array_equal(eval_a, logits(params))  # dropout_rate has no effect in eval
    train_a, train_b = (
        logits(params, overrides=overrides, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(seed)})
        for seed in (1, 2)
    )
    assert not np.allclose(train_a, train_b) and not np.allclose(train_a, eval_a)


# ----------------------------------------------------------------------------- packing and padding


def test_packed_batch_equals_examples_run_alone():
    params = params_of()
    examples = [  # (encoder tokens, decoder tokens)
        ([5, 17, 33, 9, 1], [0, 11, 23, 1]),
        ([7, 8, 100, 2, 55, 61, 1], [0, 4, 9, 120, 77, 1]),
    ]
    enc_len, dec_len = 14, 12

    def rows(seqs, length, packed):
        # -> tokens [1, length], segment ids [1, length] (1, 2, ... per example when packed; 0 = padding)
        tokens, segments = np.zeros((2, 1, length), np.int32)
        start = 0
        for i, seq in enumerate(seqs):
            tokens[0, start : start + len(seq)] = seq
            segments[0, start : start + len(seq)] = i + 1 if packed else 1
            start += len(seq)
        return tokens, segments

    enc_tokens, enc_segments = rows([e for e, _ in examples], enc_len, packed=True)
    dec_tokens, dec_segments = rows([d for _, d in examples], dec_len, packed=True)
    packed = logits(params, enc_tokens, dec_tokens, encoder_segment_ids=enc_segments, decoder_segment_ids=dec_segments)
    start = 0
    for enc, dec in examples:
        alone = logits(params, rows([enc], enc_len, False)[0], rows([dec], dec_len, False)[0])  # segment ids None
        np.testing.assert_allclose(packed[0, start : start + len(dec)], alone[0, : len(dec)], rtol=1e-5, atol=1e-5)
        start += len(dec)


def test_encoder_padding_does_not_change_logits():
    params = params_of()
    short = logits(params, ENCODER_TOKENS[1:, :6], DECODER_TOKENS[1:])
    padded = logits(params, ENCODER_TOKENS[1:], DECODER_TOKENS[1:])  # the same row with 4 more pads
    np.testing.assert_allclose(short, padded, rtol=1e-5, atol=1e-5)


def test_encode_then_decode_equals_call():
    params = params_of()
    _, apply = model_and_apply()
    batch = batch_of(ENCODER_TOKENS, DECODER_TOKENS)
    encoded, _ = apply({"params": params}, batch, method=EncoderDecoder.encode)
    assert encoded.shape == (*ENCODER_TOKENS.shape, 32)
    decoded, _ = apply({"params": params}, encoded, batch, method=EncoderDecoder.decode)
    np.testing.assert_allclose(decoded, logits(params), rtol=1e-6, atol=1e-6)


def test_bfloat16_compute_gives_float32_logits_close_to_float32():
    params = params_of()
    bf16 = logits(params, overrides={"dtype": "bfloat16"})
    assert bf16.dtype == np.float32 and jax.tree.leaves(nn.unbox(params))[0].dtype == jnp.float32
    np.testing.assert_allclose(bf16, logits(params), atol=0.15)


# ----------------------------------------------------------------------------- sizes and partitioning

# T5.1.1 sizes (embed, heads, head_dim, mlp, layers per stack) and the published parameter counts.
SIZES = {
    "small": ((512, 6, 64, 1024, 8), 77e6),
    "base": ((768, 12, 64, 2048, 12), 248e6),
    "large": ((1024, 16, 64, 2816, 24), 783e6),
}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_full_size_parameter_counts(size):
    (embed, heads, head_dim, mlp, layers), published = SIZES[size]
    config = make_tiny_config(
        vocab_size=32128,
        embed_dim=embed,
        num_heads=heads,
        head_dim=head_dim,
        mlp_dim=mlp,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        max_length=512,
    )
    model = build_model(config)
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch_of(tokens, tokens))  # nothing is allocated
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))
    attention, ffn = 4 * embed * heads * head_dim, 3 * embed * mlp
    expected = (
        2 * 32128 * embed  # embedding + untied logits
        + layers * (attention + ffn + 2 * embed)  # encoder blocks
        + layers * (2 * attention + ffn + 3 * embed)  # decoder blocks
        + 2 * (32 * heads + embed)  # relative position biases, final norms
    )
    assert count == expected
    assert abs(count - published) / published < 0.01, count


@pytest.mark.parametrize("scan_layers", [True, False])
def test_every_param_has_logical_axes(scan_layers):
    config = make_tiny_config(scan_layers=scan_layers)
    tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    shapes = jax.eval_shape(build_model(config).init, jax.random.PRNGKey(0), batch_of(tokens, tokens))["params"]
    known = {"vocab", "embed", "mlp", "heads", "kv", "relpos_buckets", "layers"}
    boxes = jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert boxes and all(isinstance(b, nn.Partitioned) for b in boxes)
    for box in boxes:
        assert len(box.names) == box.value.ndim and set(box.names) <= known, box.names
        assert ("layers" in box.names) == (scan_layers and box.value.ndim > 1 and box.names[0] == "layers")
    specs = nn.get_partition_spec(shapes)
    assert specs["decoder"]["logits_dense"]["kernel"] == jax.sharding.PartitionSpec("embed", "vocab")
    if scan_layers:
        q = specs["encoder"]["layers"]["self_attention"]["query"]["kernel"]
        assert q == jax.sharding.PartitionSpec("layers", "embed", "heads", "kv")


# ----------------------------------------------------------------------------- registry and guardrails


def test_registry_and_guardrails():
    assert MODELS["encoder_decoder"] is EncoderDecoder
    assert dtype_of("float32") == jnp.float32
    with pytest.raises(ValueError, match="encoder_decoder"):
        build_model(make_tiny_config(name="gpt17"))
    model = build_model(make_tiny_config(remat_policy="some"))
    with pytest.raises(ValueError, match="dots_with_no_batch_dims"):
        model.init(jax.random.PRNGKey(0), batch_of(ENCODER_TOKENS, DECODER_TOKENS))
    model = build_model(make_tiny_config(max_length=8))
    with pytest.raises(ValueError, match="max_length"):
        model.init(jax.random.PRNGKey(0), batch_of(ENCODER_TOKENS, DECODER_TOKENS))


def test_runs_sharded_on_a_fake_mesh():
    """Logical axes resolve on an 8-device (data 1, fsdp 2, tensor 4) mesh, and sharding leaves the logits alone."""
    from lmx.config_lib import DEFAULT_RULES

    params = params_of()
    # Auto axes: the model states shardings as logical constraints (jax.make_mesh defaults to Explicit axes).
    auto = (jax.sharding.AxisType.Auto,) * 4
    mesh = jax.make_mesh((1, 2, 4, 1), ("data", "fsdp", "tensor", "expert"), auto, devices=jax.devices()[:8])
    model, _ = model_and_apply()
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(params), mesh, DEFAULT_RULES)
    sharded = jax.device_put(nn.unbox(params), shardings)
    q = sharded["encoder"]["layers"]["self_attention"]["query"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    args = {"params": sharded}, batch_of(ENCODER_TOKENS, DECODER_TOKENS)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):  # flax reads the mesh jax.set_mesh sets
        hlo = jax.jit(model.apply).lower(*args).as_text()
        out = jax.jit(model.apply)(*args)["logits"]
    # Activation constraints are really emitted (inside the scanned blocks too): batch over data+fsdp.
    assert hlo.count("sharding_constraint") >= 10 and '[{"data", "fsdp", "expert"}, {}, {"tensor"}, {}]' in hlo
    np.testing.assert_allclose(out, logits(params), rtol=1e-5, atol=1e-5)
