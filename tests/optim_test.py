"""Schedules against their formulas; weight-decay masks; the optimizers' update on a known gradient."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lmx import config_lib, optim


def _optim(**overrides) -> ml_collections.ConfigDict:
    o = config_lib.base_config().optim
    o.update(overrides)
    return o


@pytest.mark.parametrize("decay", ["cosine", "linear", "rsqrt", "constant"])
def test_schedule_matches_formula(decay):
    peak, warmup, total, end = 0.02, 100, 1000, 0.1
    schedule = optim.make_schedule(
        _optim(learning_rate=peak, warmup_steps=warmup, decay=decay, end_learning_rate_fraction=end), total
    )

    def expected(step):
        if step < warmup:
            return peak * step / warmup
        t = step - warmup
        span = total - warmup
        if decay == "cosine":
            return peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span)))
        if decay == "linear":
            return peak + (peak * end - peak) * min(t, span) / span
        if decay == "rsqrt":
            return peak * math.sqrt(warmup / step)
        return peak

    for s in [0, 1, 50, 99, 100, 101, 250, 550, 999, 1000, 1500]:
        np.testing.assert_allclose(float(schedule(s)), expected(s), rtol=1e-5, atol=1e-9, err_msg=f"step {s}")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="cosine"):
        optim.make_schedule(_optim(decay="exp"), 10)
    with pytest.raises(ValueError, match="adafactor"):
        optim.make_optimizer(_optim(name="sgd"), 10)


def test_decay_mask_excludes_norms_and_biases():
    params = {
        "encoder": {"layers_0": {"pre_attention_norm": {"scale": 1}, "attention": {"query": {"kernel": 1}}}},
        "decoder": {"final_norm": {"scale": 1}, "mlp": {"wi": {"kernel": 1, "bias": 1}}},
    }
    mask = optim.decay_mask(params, config_lib.base_config().optim.weight_decay_exclude)
    assert mask["encoder"]["layers_0"]["attention"]["query"]["kernel"] is True
    assert mask["encoder"]["layers_0"]["pre_attention_norm"]["scale"] is False
    assert mask["decoder"]["final_norm"]["scale"] is False
    assert mask["decoder"]["mlp"]["wi"]["bias"] is False
    assert mask["decoder"]["mlp"]["wi"]["kernel"] is True


def test_adamw_first_update_matches_hand_computation():
    # First AdamW step: m_hat = g, v_hat = g^2, update = -lr * (g / (|g| + eps) + wd * p) for decayed params.
    o = _optim(name="adamw", learning_rate=0.1, warmup_steps=0, decay="constant", weight_decay=0.5, clip_norm=0.0)
    tx, _ = optim.make_optimizer(o, 10)
    params = {"dense": {"kernel": jnp.array([1.0, -2.0])}, "norm": {"scale": jnp.array([3.0])}}
    grads = {"dense": {"kernel": jnp.array([0.5, 0.25])}, "norm": {"scale": jnp.array([-1.0])}}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(
        updates["dense"]["kernel"], -0.1 * (np.sign([0.5, 0.25]) + 0.5 * np.array([1, -2])), atol=1e-5
    )
    np.testing.assert_allclose(updates["norm"]["scale"], -0.1 * np.sign([-1.0]), atol=1e-5)  # no decay


def test_clipping_bounds_the_global_norm():
    o = _optim(name="adamw", learning_rate=1.0, warmup_steps=0, decay="constant", clip_norm=1.0, b1=0.0, b2=0.0)
    o.eps = 0.0
    tx, _ = optim.make_optimizer(o, 10)
    chain_clip = optax.clip_by_global_norm(1.0)
    grads = {"w": jnp.array([30.0, 40.0])}
    clipped, _ = chain_clip.update(grads, chain_clip.init(grads))
    np.testing.assert_allclose(clipped["w"], [0.6, 0.8], rtol=1e-6)
    updates, _ = tx.update(grads, tx.init(grads), grads)
    assert np.all(np.isfinite(updates["w"]))


def test_adafactor_factors_matrices_and_trains():
    o = _optim(name="adafactor", learning_rate=0.01, warmup_steps=0, decay="constant")
    tx, _ = optim.make_optimizer(o, 10)
    params = {"kernel": jnp.ones((256, 384)), "scale": jnp.ones((384,))}
    state = tx.init(params)
    sizes = sorted(x.size for x in jax.tree.leaves(state))
    # Factored second moments: a 256 + 384 row/column pair instead of 256 * 384 numbers.
    assert 256 * 384 not in sizes and 256 in sizes and 384 in sizes
    loss = lambda p: jnp.sum(jnp.square(p["kernel"] - 0.5)) + jnp.sum(jnp.square(p["scale"]))
    before = loss(params)
    for _ in range(5):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < before
