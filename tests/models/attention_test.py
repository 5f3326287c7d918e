"""Attention and its masks against float64 numpy references; packing and causal isolation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.models import attention

SEGMENTS = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])  # a packed row with padding, a full row


def reference_attention(q, k, v, mask):
    """float64: softmax over allowed keys of q.k (no 1/sqrt(d) scaling), times v. Rows with no allowed key -> 0."""
    logits = np.einsum("bqnh,bknh->bnqk", q, k)
    logits = np.where(mask, logits, -np.inf)
    logits = logits - np.max(np.where(mask, logits, -1e300), axis=-1, keepdims=True)
    weights = np.where(mask, np.exp(logits), 0.0)
    weights = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bnqk,bknh->bqnh", weights, v)


def reference_mask(query_segments, key_segments, causal):
    b, lq = query_segments.shape
    lk = key_segments.shape[1]
    mask = np.zeros((b, 1, lq, lk), bool)
    for i in range(b):
        for t in range(lq):
            for s in range(lk):
                same = query_segments[i, t] == key_segments[i, s] != 0
                mask[i, 0, t, s] = same and (s <= t or not causal)
    return mask


def test_masks_match_reference():
    packing = attention.make_attention_mask(jnp.asarray(SEGMENTS), jnp.asarray(SEGMENTS))
    np.testing.assert_array_equal(packing, reference_mask(SEGMENTS, SEGMENTS, causal=False))
    causal = attention.combine_masks(attention.make_causal_mask(6), packing, None)
    np.testing.assert_array_equal(causal, reference_mask(SEGMENTS, SEGMENTS, causal=True))
    assert attention.combine_masks(None, None) is None
    np.testing.assert_array_equal(attention.mask_to_bias(jnp.array([True, False])), [0.0, attention.MASK_BIAS])


@pytest.mark.parametrize("causal", [False, True])
def test_dot_product_attention_matches_reference(causal):
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 6, 3, 4)) for _ in range(3))
    mask = reference_mask(SEGMENTS, SEGMENTS, causal)
    bias = attention.mask_to_bias(jnp.asarray(mask))
    got = attention.dot_product_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), bias)
    want = reference_attention(q, k, v, mask)
    real = SEGMENTS != 0  # padding queries attend to nothing; their output is arbitrary (but finite)
    np.testing.assert_allclose(np.asarray(got)[real], want[real], rtol=1e-5, atol=1e-5)
    assert np.isfinite(np.asarray(got)).all()


def test_dot_product_attention_with_additive_bias():
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(1, 4, 2, 3)) for _ in range(3))
    bias = rng.normal(size=(1, 2, 4, 4))
    got = attention.dot_product_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), jnp.asarray(bias))
    logits = np.einsum("bqnh,bknh->bnqk", q, k) + bias
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, np.einsum("bnqk,bknh->bqnh", weights, v), rtol=1e-5, atol=1e-5)


def _mha_and_params(embed=16, heads=2, head_dim=4, dropout_rate=0.0):
    mha = attention.MultiHeadAttention(num_heads=heads, head_dim=head_dim, dropout_rate=dropout_rate)
    x = jnp.ones((2, 6, embed))
    variables = mha.init(jax.random.PRNGKey(0), x, x, None, deterministic=True)
    return mha, variables


def test_multi_head_attention_matches_reference():
    mha, variables = _mha_and_params()
    p = jax.tree.map(np.asarray, nn.unbox(variables)["params"])
    x = np.random.default_rng(0).normal(size=(2, 6, 16))
    mask = reference_mask(SEGMENTS, SEGMENTS, causal=True)
    got = mha.apply(
        variables, *(jnp.asarray(x, jnp.float32),) * 2, attention.mask_to_bias(jnp.asarray(mask)), deterministic=True
    )
    q, k, v = (np.einsum("btd,dnh->btnh", x, p[name]["kernel"]) for name in ("query", "key", "value"))
    want = np.einsum("btnh,nhd->btd", reference_attention(q, k, v, mask), p["out"]["kernel"])
    real = SEGMENTS != 0
    np.testing.assert_allclose(np.asarray(got)[real], want[real], rtol=1e-4, atol=1e-5)


def test_multi_head_attention_init_stddevs():
    mha = attention.MultiHeadAttention(num_heads=8, head_dim=64, dropout_rate=0.0)
    x = jnp.ones((1, 1, 512))
    p = nn.unbox(mha.init(jax.random.PRNGKey(0), x, x, None, deterministic=True))["params"]
    assert p["query"]["kernel"].shape == (512, 8, 64) and p["out"]["kernel"].shape == (8, 64, 512)
    assert np.std(p["query"]["kernel"]) == pytest.approx((512 * 64) ** -0.5, rel=0.02)
    assert np.std(p["key"]["kernel"]) == pytest.approx(512**-0.5, rel=0.02)
    assert np.std(p["value"]["kernel"]) == pytest.approx(512**-0.5, rel=0.02)
    assert np.std(p["out"]["kernel"]) == pytest.approx((8 * 64) ** -0.5, rel=0.02)


@pytest.mark.parametrize("causal", [False, True])
def test_segments_are_isolated(causal):
    mha, variables = _mha_and_params()
    segments = jnp.asarray(SEGMENTS[:1])
    mask = attention.make_attention_mask(segments, segments)
    if causal:
        mask = attention.combine_masks(attention.make_causal_mask(6), mask)
    bias = attention.mask_to_bias(mask)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 6, 16)), jnp.float32)
    changed = x.at[:, 3:].set(jnp.asarray(rng.normal(size=(1, 3, 16)), jnp.float32))  # segment 2 and padding
    out = mha.apply(variables, x, x, bias, deterministic=True)
    out_changed = mha.apply(variables, changed, changed, bias, deterministic=True)
    np.testing.assert_array_equal(out[:, :3], out_changed[:, :3])  # segment 1 cannot see segment 2 or padding
    assert not np.allclose(out[:, 3:5], out_changed[:, 3:5])


def test_causal_mask_hides_the_future():
    mha, variables = _mha_and_params()
    bias = attention.mask_to_bias(attention.make_causal_mask(6))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 6, 16)), jnp.float32)
    changed = x.at[:, 4:].add(1.0)
    out = mha.apply(variables, x, x, bias, deterministic=True)
    out_changed = mha.apply(variables, changed, changed, bias, deterministic=True)
    np.testing.assert_array_equal(out[:, :4], out_changed[:, :4])


def test_attention_dropout_needs_rng_and_changes_output():
    mha, variables = _mha_and_params(dropout_rate=0.5)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 16)), jnp.float32)
    a = mha.apply(variables, x, x, None, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    b = mha.apply(variables, x, x, None, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    c = mha.apply(variables, x, x, None, deterministic=True)
    assert not np.allclose(a, b) and not np.allclose(a, c)
    with pytest.raises(ValueError, match="dropout_rng"):
        attention.dot_product_attention(
            x[:, :, None], x[:, :, None], x[:, :, None], dropout_rate=0.1, deterministic=False
        )


@pytest.mark.parametrize("mask_rows", [3, 1])
def test_add_position_bias_value_and_gradients(mask_rows):
    # Custom VJP (the batch sum as a dot): the same value and gradients as autodiff of the broadcast add.
    rng = np.random.default_rng(0)
    mask_bias = jnp.asarray(rng.normal(size=(mask_rows, 1, 4, 5)), jnp.float32)
    position_bias = jnp.asarray(rng.normal(size=(1, 2, 4, 5)), jnp.float32)
    cotangent = rng.normal(size=(3, 2, 4, 5))

    def loss(add, m, p):
        return jnp.sum(jnp.broadcast_to(add(m, p), cotangent.shape) * cotangent)

    got = jax.grad(lambda m, p: loss(attention.add_position_bias, m, p), argnums=(0, 1))(mask_bias, position_bias)
    np.testing.assert_allclose(
        attention.add_position_bias(mask_bias, position_bias), np.asarray(mask_bias) + np.asarray(position_bias)
    )
    np.testing.assert_allclose(got[1], cotangent.sum(axis=0, keepdims=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        got[0],
        cotangent.sum(axis=1, keepdims=True).sum(axis=0, keepdims=True)
        if mask_rows == 1
        else cotangent.sum(axis=1, keepdims=True),
        rtol=1e-5,
        atol=1e-5,
    )
