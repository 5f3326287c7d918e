"""Schedules against their formulas; Adafactor against a float64 reference written from the paper; clipping and
weight-decay masks through the real optimizer; scanned and unrolled training take the same steps; the optimizer's
count follows the train state's step when an update is dropped; T5.1.1-base's Adafactor state is factored."""

import functools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lmx import bench, config_lib, optim, step, train
from lmx.data import tasks
from lmx.models import build_model
from lmx.models.transformer import unstack_scanned_params


def _optim(**overrides) -> ml_collections.ConfigDict:
    o = config_lib.base_config().optim
    o.update(overrides)
    return o


# ---------------------------------------------------------------------------------------------------------------
# Schedules.


@pytest.mark.parametrize("warmup_shape", ["linear", "constant"])
@pytest.mark.parametrize("decay", ["cosine", "linear", "rsqrt", "constant"])
def test_schedule_matches_formula(decay, warmup_shape):
    peak, warmup, total, end = 0.02, 100, 1000, 0.1
    schedule = optim.make_schedule(
        _optim(
            learning_rate=peak,
            warmup_steps=warmup,
            warmup_shape=warmup_shape,
            decay=decay,
            end_learning_rate_fraction=end,
        ),
        total,
    )

    def expected(step):
        if step < warmup:
            return peak * step / warmup if warmup_shape == "linear" else peak
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


@pytest.mark.parametrize("name", ["t5_small", "t5_base", "t5_large"])
def test_t5_configs_use_t5s_schedule_without_global_norm_clipping(name):
    # T5 (section 3.1.2): lr = 1 / sqrt(max(step, 10^4)); Adafactor's own update clipping, no gradient clipping.
    config = config_lib.load_config_file(f"configs/{name}.py")
    o = config.optim
    schedule = optim.make_schedule(o, config.train.steps)
    for s in [0, 1, 9999, 10000, 40000, 524287]:
        expected = 1 / math.sqrt(max(s, 10_000))
        np.testing.assert_allclose(float(schedule(s)), expected, rtol=1e-6, err_msg=f"{name} step {s}")
    assert float(schedule(40000)) == pytest.approx(0.005)
    assert o.name == "adafactor" and o.clip_norm == 0 and o.adafactor_clipping_threshold == 1.0


def test_unknown_names_list_the_known_ones():
    with pytest.raises(config_lib.ConfigError, match="cosine"):
        optim.make_schedule(_optim(decay="exp"), 10)
    with pytest.raises(config_lib.ConfigError, match="constant"):
        optim.make_schedule(_optim(warmup_shape="cubic"), 10)
    with pytest.raises(config_lib.ConfigError, match="adafactor"):
        optim.make_optimizer(_optim(name="sgd"), 10, None)
    with pytest.raises(ValueError, match=r"\['foo'\] have no Adafactor role"):
        optim.make_optimizer(_optim(name="adafactor"), 10, {"w": ("embed", "foo")})


# ---------------------------------------------------------------------------------------------------------------
# Factoring rule.


def test_factor_plans_follow_logical_axes():
    plan = optim.factor_plan
    # Attention kernels: embed x (heads * kv), in either order; scanned stacks add an independent layers dim.
    assert plan(("embed", "heads", "kv")) == optim.FactorPlan(3, (), (0,), (1, 2))
    assert plan(("heads", "kv", "embed")) == optim.FactorPlan(3, (), (2,), (0, 1))
    assert plan(("layers", "embed", "heads", "kv")) == optim.FactorPlan(4, (0,), (1,), (2, 3))
    assert plan(("expert", "embed", "mlp")) == optim.FactorPlan(3, (0,), (1,), (2,))
    # Not factored: norms, the relative-position table; their statistics still never mix layers.
    assert not plan(("embed",)).factored and not plan(("relpos_buckets", "heads")).factored
    assert plan(("layers", "embed")).within == (1,)
    with pytest.raises(ValueError, match="rows, columns and unfactorable"):
        plan(("embed", "mlp", None))


# ---------------------------------------------------------------------------------------------------------------
# Adafactor against a float64 reference written from the paper (Shazeer & Stern 2018, Algorithms 4-5, sections 5,
# 7.2 and 8) with T5X's logical factoring: `embed` dims are rows, vocab/mlp/heads/kv columns, `layers` slices.

ROWS, COLUMNS, SLICES = {"embed"}, {"vocab", "mlp", "heads", "kv"}, {"layers", "expert"}


class ReferenceAdafactor:
    """One parameter, float64. Each slice is the paper's matrix X [n, m] (rows x columns, flattened) or a vector."""

    def __init__(self, x, names, *, momentum=0.0, weight_decay=0.0, decayed=True):
        batch = [d for d, n in enumerate(names) if n in SLICES]
        rows = [d for d, n in enumerate(names) if n in ROWS]
        cols = [d for d, n in enumerate(names) if n in COLUMNS]
        self.factored = bool(rows and cols)
        rest = rows + cols if self.factored else [d for d in range(len(names)) if d not in batch]
        self.order = batch + rest
        self.moved = tuple(x.shape[d] for d in self.order)
        slices = math.prod(x.shape[d] for d in batch)
        if self.factored:
            self.matrix = (slices, math.prod(x.shape[d] for d in rows), math.prod(x.shape[d] for d in cols))
        else:
            self.matrix = (slices, math.prod(x.shape[d] for d in rest))
        self.x = self._to(np.asarray(x, np.float64))
        n_slices = self.matrix[0]
        if self.factored:  # row sums R [n] and column sums C [m] of the squared-gradient EMA, per slice
            self.r = np.zeros((n_slices, self.matrix[1]))
            self.c = np.zeros((n_slices, self.matrix[2]))
        else:
            self.v = np.zeros_like(self.x)
        self.m = np.zeros_like(self.x)
        self.t = 0
        self.momentum, self.weight_decay, self.decayed = momentum, weight_decay, decayed

    def _to(self, a):
        return np.transpose(a, self.order).reshape(self.matrix)

    def _from(self, a):
        return np.transpose(a.reshape(self.moved), np.argsort(self.order))

    def step(self, grad, lr, eps1=1e-30, eps2=1e-3, d=1.0):
        """Applies one update with learning rate `lr`; returns the update in the parameter's own layout."""
        self.t += 1
        beta2 = 1.0 - self.t**-0.8
        g = self._to(np.asarray(grad, np.float64))
        out = np.empty_like(self.x)
        for s in range(self.matrix[0]):
            g2 = g[s] ** 2 + eps1
            if self.factored:
                n, m = g2.shape
                self.r[s] = beta2 * self.r[s] + (1 - beta2) * g2 @ np.ones(m)
                self.c[s] = beta2 * self.c[s] + (1 - beta2) * np.ones(n) @ g2
                v = np.outer(self.r[s], self.c[s]) / (np.ones(n) @ self.r[s])
            else:
                self.v[s] = beta2 * self.v[s] + (1 - beta2) * g2
                v = self.v[s]
            u = g[s] / np.sqrt(v)
            u = u / max(1.0, np.sqrt(np.mean(u**2)) / d)
            alpha = lr * max(eps2, np.sqrt(np.mean(self.x[s] ** 2)))
            update = alpha * u
            if self.momentum:
                self.m[s] = self.momentum * self.m[s] + (1 - self.momentum) * update
                update = self.m[s]
            if self.decayed:
                update = update + lr * self.weight_decay * self.x[s]
            out[s] = -update
        self.x = self.x + out
        return self._from(out)


_TINY_PARAMS = {}  # scan_layers -> (params, axes), built once for the module's tests


def _tiny_t5_params(tiny_config, scan_layers: bool):
    """A tiny T5.1.1's float32 parameters (host arrays) and their logical axis names."""
    if scan_layers in _TINY_PARAMS:
        return _TINY_PARAMS[scan_layers]
    config = tiny_config.copy_and_resolve_references()
    config.model.scan_layers = scan_layers
    inputs = step.init_batch(tasks.model_feature_lengths(config.data))
    boxed = jax.jit(functools.partial(step.init_params, model=build_model(config.model), init_batch=inputs))(
        jax.random.key(0)
    )
    _TINY_PARAMS[scan_layers] = jax.device_get(nn.unbox(boxed)), nn.get_partition_spec(boxed)
    return _TINY_PARAMS[scan_layers]


def _flat(tree):
    return {optim.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize(
    "scan_layers,momentum,weight_decay",
    [(True, 0.0, 0.0), (False, 0.0, 0.0), (True, 0.9, 0.1)],
    ids=["scanned", "unrolled", "scanned-momentum-decay"],
)
def test_adafactor_matches_float64_reference(tiny_config, scan_layers, momentum, weight_decay):
    params, axes = _tiny_t5_params(tiny_config, scan_layers)
    warmup, peak = 2, 0.01
    o = _optim(
        learning_rate=peak,
        warmup_steps=warmup,
        warmup_shape="constant",
        decay="rsqrt",
        adafactor_momentum=momentum,
        weight_decay=weight_decay,
    )
    tx, _ = optim.make_optimizer(o, 100, axes)
    state = tx.init(params)
    flat_axes = {k: tuple(v) for k, v in _flat(axes).items()}
    # Kernels of the attention stacks are 4-D when scanned: check the test really covers them.
    assert any(len(n) == (4 if scan_layers else 3) and "heads" in n for n in flat_axes.values())
    references = {
        name: ReferenceAdafactor(
            x,
            flat_axes[name],
            momentum=momentum,
            weight_decay=weight_decay,
            decayed=not re.search("norm|scale|bias", name),  # config.optim.weight_decay_exclude
        )
        for name, x in _flat(params).items()
    }
    rng = np.random.default_rng(0)

    def gradient(p):
        # Sizes that differ by row (by layer when scanned) and by step, so that scale and clipping both matter.
        scales = rng.choice([1e-3, 1.0, 30.0], size=p.shape[:1]).reshape((-1,) + (1,) * (p.ndim - 1))
        return (rng.standard_normal(p.shape) * scales).astype(np.float32)

    update_fn = jax.jit(tx.update)
    for count in range(4):
        grads = jax.tree.map(gradient, params)
        updates, state = update_fn(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        lr = peak * math.sqrt(warmup / max(count, warmup))  # T5: constant, then rsqrt
        for name, update in _flat(updates).items():
            expected = references[name].step(_flat(grads)[name], lr)
            np.testing.assert_allclose(
                update, expected, rtol=2e-4, atol=1e-5 * np.abs(expected).max(), err_msg=f"{name} at count {count}"
            )
    assert int(state[-1].count) == 4  # the chain of one transformation: (AdafactorState,)


# ---------------------------------------------------------------------------------------------------------------
# Global-norm clipping and weight-decay masks through make_optimizer.

AXES = {"dense": {"kernel": ("embed", "mlp")}, "norm": {"scale": ("embed",)}}


def _adam_reference(grads, lr, b1, b2, eps):
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        out.append(-lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
    return out


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_global_norm_clipping_is_applied(name):
    # A huge gradient then a small one: clipped, the first is scaled to global norm 1 before the optimizer's
    # statistics see it, which changes the second update of both (scale-invariant) optimizers.
    o = _optim(name=name, learning_rate=0.1, warmup_steps=0, decay="constant", clip_norm=1.0)
    tx, _ = optim.make_optimizer(o, 10, AXES)
    params = {"dense": {"kernel": np.full((4, 3), 0.5, np.float32)}, "norm": {"scale": np.ones(3, np.float32)}}
    rng = np.random.default_rng(1)
    raw = [
        jax.tree.map(lambda p, s=s: (s * rng.standard_normal(p.shape)).astype(np.float32), params) for s in (100, 0.1)
    ]
    scales = [min(1.0, 1.0 / float(optax.global_norm(g))) for g in raw]
    clipped = [jax.tree.map(lambda x, s=s: x * s, g) for g, s in zip(raw, scales, strict=True)]
    assert scales[0] < 0.01 and scales[1] == 1.0
    state = tx.init(params)
    got = []
    for g in raw:
        updates, state = tx.update(g, state, params)
        got.append(updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    if name == "adamw":
        for key in ("dense/kernel", "norm/scale"):
            expected = _adam_reference([_flat(g)[key] for g in clipped], 0.1, o.b1, o.b2, o.eps)
            for t in range(2):
                np.testing.assert_allclose(_flat(got[t])[key], expected[t], rtol=1e-4, err_msg=f"{key} step {t}")
    else:
        start = {"dense/kernel": np.full((4, 3), 0.5), "norm/scale": np.ones(3)}
        for key, names in (("dense/kernel", ("embed", "mlp")), ("norm/scale", ("embed",))):
            ref = ReferenceAdafactor(start[key], names)
            for t in range(2):
                np.testing.assert_allclose(
                    _flat(got[t])[key], ref.step(_flat(clipped[t])[key], 0.1), rtol=1e-4, err_msg=f"{key} step {t}"
                )


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_weight_decay_skips_masked_parameters(name):
    # Zero gradients: the whole update is the decoupled decay, -lr * wd * param, except on norms/biases/scales.
    o = _optim(name=name, learning_rate=0.1, warmup_steps=0, decay="constant", weight_decay=0.5)
    axes = {**AXES, "dense": {"kernel": ("embed", "mlp"), "bias": ("mlp",)}}
    tx, _ = optim.make_optimizer(o, 10, axes)
    params = {
        "dense": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([4.0, 5.0])},
        "norm": {"scale": jnp.array([3.0])},
    }
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * np.array([[1.0, -2.0]]), rtol=1e-6)
    np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)


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


# ---------------------------------------------------------------------------------------------------------------
# Through lmx.train: scanning never changes the maths; a dropped update keeps the optimizer count in step.


def _run(tmp_path, tiny_config, **overrides):
    config = tiny_config.copy_and_resolve_references()
    config.train.batch_size = 8
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return train.setup(config, str(tmp_path), with_data=False)


def _train(run, params, batches):
    """Steps from `params` with a fresh optimizer state; returns the final state and each step's metrics."""
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        state = jax.jit(
            lambda p: step.TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=run.tx.init(p)),
            out_shardings=run.state_shardings,
        )(params)
        train_step = train.jit_train_step(run)
        history = []
        for batch in batches:
            state, metrics = train_step(state, batch, run.dropout_key)
            history.append(jax.device_get(metrics))
    return state, history


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
def test_scanned_and_unrolled_layers_take_the_same_steps(tmp_path, tiny_config, name):
    # A constant learning rate from step 0, so that every one of the three updates is a full step. Adafactor as in
    # T5 (lr 0.01). AdamW at lr 1e-3 with epsilon 1e-3: with 1e-8, Adam divides a near-zero gradient by its own
    # size, so the last-bit differences between the two programs' gradients (both correct) become differences of
    # up to ~1e-5 in the step of such elements; a larger epsilon keeps those elements linear in their gradient.
    overrides = {"optim.name": name, "optim.warmup_steps": 0, "optim.decay": "constant", "optim.learning_rate": 0.01}
    if name == "adamw":
        overrides.update({"optim.learning_rate": 1e-3, "optim.eps": 1e-3, "optim.clip_norm": 1.0})
    scanned = _run(tmp_path / "scan", tiny_config, **overrides, **{"model.scan_layers": True})
    unrolled = _run(tmp_path / "unroll", tiny_config, **overrides, **{"model.scan_layers": False})
    params = _tiny_t5_params(tiny_config, True)[0]
    batches = [bench.synthetic_batch(scanned.config, scanned.batch_sharding, seed=i) for i in range(3)]
    scan_state, scan_history = _train(scanned, params, batches)
    unroll_state, unroll_history = _train(unrolled, unstack_scanned_params(params), batches)
    for a, b in zip(scan_history, unroll_history, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    # Statistics shared across the stack (optax's Adafactor on [layers, ...]) miss by ~1e-4 here; the float32
    # rounding of the two programs' gradients leaves < 1e-6.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
        unstack_scanned_params(jax.device_get(scan_state.params)),
        jax.device_get(unroll_state.params),
    )
    # And they did train: the parameters moved by far more than the tolerance.
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), unstack_scanned_params(params), unroll_state.params)
    assert max(jax.tree.leaves(moved)) > 1e-3


def test_dropped_update_keeps_optimizer_count_equal_to_step(tmp_path, tiny_config):
    # on_nonfinite=skip drops a non-finite update; the step still counts, and so must the optimizer's own count
    # (it sets the learning rate and Adafactor's second-moment decay), or the logged learning rate is not the one
    # applied afterwards. Every integer leaf of the optimizer state is such a count.
    run = _run(tmp_path, tiny_config, **{"train.on_nonfinite": "skip", "model.scan_layers": True})
    good = bench.synthetic_batch(run.config, run.batch_sharding)
    # Token ids past the embedding table give NaN embeddings, hence a NaN loss.
    bad = dict(good, encoder_input_tokens=good["encoder_input_tokens"] + run.config.model.vocab_size)
    state, history = _train(run, _tiny_t5_params(tiny_config, True)[0], [good, bad, good])
    assert [float(h["nonfinite"]) for h in history] == [0.0, 1.0, 0.0]
    counts = [int(x) for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.integer)]
    assert counts and counts == [int(state.step)] * len(counts) == [3] * len(counts)


# ---------------------------------------------------------------------------------------------------------------
# Memory: T5.1.1-base's Adafactor state at full size (jax.eval_shape: nothing allocated).


def test_t5_base_adafactor_state_is_factored_like_t5x(tmp_path):
    config = config_lib.load_config_file("configs/t5_base.py")
    m = config.model
    run = train.setup(config, str(tmp_path), with_data=False)  # abstract: nothing allocated at full size
    state = run.abstract_state
    floats = sum(x.size for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating))
    # Factored: a row and a column vector per matrix (attention kernels: embed x heads*kv); norms and the
    # [buckets, heads] relative-position tables whole.
    d, hk, f, v = m.embed_dim, m.num_heads * m.head_dim, m.mlp_dim, m.vocab_size
    mlp = len(m.mlp_activations) + 1
    encoder_layer = 4 * (d + hk) + mlp * (d + f) + 2 * d
    decoder_layer = 8 * (d + hk) + mlp * (d + f) + 3 * d
    expected = (
        2 * (v + d)  # embedding and the untied output layer
        + 2 * m.relpos_num_buckets * m.num_heads
        + m.num_encoder_layers * encoder_layer
        + m.num_decoder_layers * decoder_layer
        + 2 * d  # final norms
    )
    print(f"T5.1.1-base Adafactor state: {floats:,} floats (T5X: 538,112; optax's rule under scan: 85,251,584)")
    assert floats == expected == 538_112
