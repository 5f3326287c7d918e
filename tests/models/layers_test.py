"""Layers against independent float64 numpy references."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.models import layers, positions


def reference_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """T5 paper 2.1 from scratch: boundaries of the log-spaced buckets, then count the boundaries passed."""
    rel = np.asarray(relative_position, np.int64)
    per_direction = num_buckets // 2 if bidirectional else num_buckets
    if bidirectional:
        offset = np.where(rel > 0, per_direction, 0)
        distance = np.abs(rel)
    else:
        offset = np.zeros_like(rel)
        distance = np.maximum(-rel, 0)
    exact = per_direction // 2
    num_log = per_direction - exact
    # Bucket exact + j starts at distance exact * (max_distance / exact) ** (j / num_log), j = 1 .. num_log - 1.
    starts = exact * (max_distance / exact) ** (np.arange(1, num_log, dtype=np.float64) / num_log)
    passed = (distance[..., None].astype(np.float64) + 1e-9 >= starts).sum(-1)
    return offset + np.where(distance < exact, distance, exact + passed)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (64, 256), (16, 32), (128, 1024)])
def test_relative_position_bucket_matches_reference(bidirectional, num_buckets, max_distance):
    rel = np.arange(-5000, 5001)
    got = np.asarray(positions.relative_position_bucket(jnp.asarray(rel), bidirectional, num_buckets, max_distance))
    want = reference_bucket(rel, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() == num_buckets - 1


def test_relative_position_bucket_known_values():
    # T5 defaults: 32 buckets, max distance 128. Bidirectional: 16 per direction, 8 exact.
    rel = jnp.array([0, -1, -7, -8, -127, -128, -10_000, 1, 7, 8, 10_000])
    got = positions.relative_position_bucket(rel, True, 32, 128)
    np.testing.assert_array_equal(got, [0, 1, 7, 8, 15, 15, 15, 17, 23, 24, 31])
    # Causal: 32 buckets for the past, 16 exact; every future key maps to bucket 0.
    rel = jnp.array([5, 1, 0, -1, -15, -16, -127, -128, -10_000])
    got = positions.relative_position_bucket(rel, False, 32, 128)
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 15, 16, 31, 31, 31])


def test_relative_position_bias_gathers_table():
    module = positions.RelativePositionBias(num_buckets=32, max_distance=128, num_heads=3)
    params = module.init(jax.random.PRNGKey(0), 5, 7, bidirectional=True)
    bias = module.apply(params, 5, 7, bidirectional=True)
    assert bias.shape == (1, 3, 5, 7) and bias.dtype == jnp.float32
    table = np.asarray(nn.unbox(params)["params"]["rel_embedding"])
    rel = np.arange(7)[None, :] - np.arange(5)[:, None]  # key - query
    want = table[reference_bucket(rel, True, 32, 128)].transpose(2, 0, 1)[None]
    np.testing.assert_allclose(bias, want, rtol=0, atol=0)


def test_rms_norm_matches_numpy():
    x = np.random.default_rng(0).normal(size=(2, 5, 16)) * 3.0
    scale = np.random.default_rng(1).normal(size=(16,))
    norm = layers.Norm(epsilon=1e-6)
    out = norm.apply({"params": {"scale": jnp.asarray(scale, jnp.float32)}}, jnp.asarray(x, jnp.float32))
    want = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_rms_norm_init_is_ones_and_keeps_dtype():
    norm = layers.Norm(epsilon=1e-6, dtype=jnp.bfloat16)
    variables = norm.init(jax.random.PRNGKey(0), jnp.ones((2, 8), jnp.bfloat16))
    np.testing.assert_array_equal(nn.unbox(variables)["params"]["scale"], np.ones(8))
    assert nn.unbox(variables)["params"]["scale"].dtype == jnp.float32
    assert norm.apply(variables, jnp.ones((2, 8), jnp.bfloat16)).dtype == jnp.bfloat16


def numpy_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def test_gated_mlp_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8))
    mlp = layers.Mlp(mlp_dim=16, activations=("gelu", "linear"), dropout_rate=0.0)
    variables = mlp.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32), deterministic=True)
    p = jax.tree.map(np.asarray, nn.unbox(variables)["params"])
    assert set(p) == {"wi_0", "wi_1", "wo"}
    out = mlp.apply(variables, jnp.asarray(x, jnp.float32), deterministic=True)
    hidden = numpy_gelu_tanh(x @ p["wi_0"]["kernel"]) * (x @ p["wi_1"]["kernel"])
    np.testing.assert_allclose(out, hidden @ p["wo"]["kernel"], rtol=1e-5, atol=1e-5)


def test_plain_mlp_matches_numpy():
    x = np.random.default_rng(0).normal(size=(2, 3, 8))
    mlp = layers.Mlp(mlp_dim=16, activations=("relu",), dropout_rate=0.0)
    variables = mlp.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32), deterministic=True)
    p = jax.tree.map(np.asarray, nn.unbox(variables)["params"])
    assert set(p) == {"wi", "wo"}
    out = mlp.apply(variables, jnp.asarray(x, jnp.float32), deterministic=True)
    np.testing.assert_allclose(out, np.maximum(x @ p["wi"]["kernel"], 0) @ p["wo"]["kernel"], rtol=1e-5, atol=1e-5)


def test_mlp_init_stddevs():
    mlp = layers.Mlp(mlp_dim=1024, activations=("gelu", "linear"), dropout_rate=0.0)
    variables = mlp.init(jax.random.PRNGKey(0), jnp.ones((1, 1, 512)), deterministic=True)
    p = nn.unbox(variables)["params"]
    assert np.std(p["wi_0"]["kernel"]) == pytest.approx(512**-0.5, rel=0.02)
    assert np.std(p["wo"]["kernel"]) == pytest.approx(1024**-0.5, rel=0.02)


def test_dense_general_contracts_several_axes():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    dense = layers.DenseGeneral(6, ("heads", "kv", "embed"), axis=(-2, -1))
    variables = dense.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32))
    kernel = np.asarray(nn.unbox(variables)["params"]["kernel"])
    assert kernel.shape == (4, 5, 6)
    out = dense.apply(variables, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out, np.einsum("btnh,nhd->btd", x, kernel), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [-1, (-2, -1), (1, 2)])
def test_dense_general_gradients_match_numpy(axis):
    # The layer flattens to one [tokens, in] x [in, out] matmul; values and both gradients must be the einsum's.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 5))
    features = (6, 2) if axis == -1 else 6
    dense = layers.DenseGeneral(features, ("a", "b", "c"), axis=axis)
    variables = dense.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32))
    kernel = np.asarray(nn.unbox(variables)["params"]["kernel"], np.float64)
    if axis == -1:
        spec, cotangent_shape = "btnh,hfo->btnfo", (2, 3, 4, 6, 2)
    elif axis == (-2, -1):
        spec, cotangent_shape = "btnh,nhf->btf", (2, 3, 6)
    else:  # (1, 2): the contracted dims are not trailing
        spec, cotangent_shape = "btnh,tnf->bhf", (2, 5, 6)
    cotangent = rng.normal(size=cotangent_shape)

    def loss(params, x):
        return jnp.sum(dense.apply({"params": params}, x) * cotangent)

    params = nn.unbox(variables)["params"]
    out = dense.apply(variables, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out, np.einsum(spec, x, kernel), rtol=1e-5, atol=1e-5)
    d_params, d_x = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x, jnp.float32))
    inputs, output = spec.split("->")
    x_spec, k_spec = inputs.split(",")
    np.testing.assert_allclose(d_x, np.einsum(f"{output},{k_spec}->{x_spec}", cotangent, kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        d_params["kernel"], np.einsum(f"{x_spec},{output}->{k_spec}", x, cotangent), rtol=1e-5, atol=1e-5
    )


def test_embed_lookup_and_attend():
    embed = layers.Embed(num_embeddings=10, features=4)
    ids = jnp.array([[1, 2, 0]])
    variables = embed.init(jax.random.PRNGKey(0), ids)
    table = np.asarray(nn.unbox(variables)["params"]["embedding"])
    np.testing.assert_array_equal(embed.apply(variables, ids), table[np.array([[1, 2, 0]])])
    x = np.random.default_rng(0).normal(size=(1, 3, 4))
    logits = embed.apply(variables, jnp.asarray(x, jnp.float32), method=layers.Embed.attend)
    np.testing.assert_allclose(logits, x @ table.T, rtol=1e-5, atol=1e-5)
    cotangent = np.random.default_rng(1).normal(size=(1, 3, 10))
    d_table = jax.grad(
        lambda p: jnp.sum(
            embed.apply({"params": p}, jnp.asarray(x, jnp.float32), method=layers.Embed.attend) * cotangent
        )
    )(nn.unbox(variables)["params"])["embedding"]
    np.testing.assert_allclose(d_table, np.einsum("btv,btd->vd", cotangent, x), rtol=1e-5, atol=1e-5)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="gelu"):
        layers.activation("swishy")
    with pytest.raises(ValueError, match="bfloat16"):
        layers.dtype_of("float16")
    assert layers.dtype_of("bfloat16") == jnp.bfloat16
