"""The mixture-of-experts layer against a float64 numpy reference written from the papers (GShard algorithm 1 as
loops with per-expert counters, Switch eq. 4, ST-MoE eq. 5, expert choice as per-expert top-C), against Hugging
Face's SwitchTransformersSparseMLP, and on an 8-device (data=2, expert=4) mesh."""

import copy
import functools
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmx import config_lib, sharding
from lmx.config_lib import ConfigError
from lmx.models import moe as moe_lib
from lmx.models import routing

# config.model.moe of config_lib.base_config() with 4 experts; tests override fields.
MOE_DEFAULTS = {**config_lib.base_config().model.moe.to_dict(), "num_experts": 4}

EMBED, MLP = 8, 16


def model_config(*, activations=("relu",), use_bias=False, **moe):
    """The model fields MoeMlp reads, with tiny sizes, and a `moe` section."""
    cfg = ml_collections.ConfigDict(
        dict(
            mlp_dim=MLP,
            mlp_activations=activations,
            dtype="float32",
            use_bias=use_bias,
            init="t5",
            init_stddev=0.02,
            scale_residual_init=False,
            num_encoder_layers=2,
            num_decoder_layers=2,
        )
    )
    cfg.moe = ml_collections.ConfigDict({**MOE_DEFAULTS, **moe})
    return cfg


def random_params(cfg, seed=1):
    """Plain parameters of MoeMlp drawn here (their layout is checked against the module's in
    test_parameters_and_their_logical_axes): router logits of std ~3 on unit inputs, so routing is decisive."""
    rng = np.random.default_rng(seed)
    num_experts, mlp_dim = cfg.moe.num_experts, cfg.mlp_dim
    embed = EMBED

    def normal(*shape, scale):
        return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)

    gated = len(cfg.mlp_activations) > 1
    experts = {
        f"wi_{i}" if gated else "wi": {"kernel": normal(num_experts, embed, mlp_dim, scale=embed**-0.5)}
        for i in range(len(cfg.mlp_activations))
    }
    experts["wo"] = {"kernel": normal(num_experts, mlp_dim, embed, scale=mlp_dim**-0.5)}
    if cfg.use_bias:
        for name, dense in experts.items():
            dense["bias"] = normal(num_experts, embed if name == "wo" else mlp_dim, scale=0.1)
    return {"params": {"router": {"kernel": normal(embed, num_experts, scale=1.0)}, "experts": experts}}


def inputs(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def key(seed):
    """A random key for the layer's streams; rbg compiles about 3x faster than threefry on CPU (the layer does not
    depend on the key's implementation)."""
    return jax.random.key(seed, impl="rbg")


def apply(cfg, variables, x, *, deterministic=True, causal=False, rngs=None, mutable=False):
    """MoeMlp(cfg).apply, jitted once per (config, mode): one compile is cheaper than the layer's ops run eagerly."""
    cache_key = (cfg.to_json(), deterministic, causal, tuple(mutable) if mutable else False)
    return _jitted_apply(*cache_key)(variables, x, rngs)


@functools.cache
def _jitted_apply(cfg_json, deterministic, causal, mutable):
    layer = moe_lib.MoeMlp(ml_collections.ConfigDict(json.loads(cfg_json)), causal=causal)
    mutable = list(mutable) if mutable else False
    return jax.jit(lambda v, x, rngs: layer.apply(v, x, deterministic=deterministic, rngs=rngs, mutable=mutable))


# ----------------------------------------------------------------------------------------------- numpy reference


def ref_token_choice(probs, k, capacity, *, uniform=None, priority="position"):
    """GShard algorithm 1 (k=2) / Switch (k=1), one token at a time: combine weights [G, S, E, C] in float64.

    Every first choice is placed before any second choice; a counter per expert gives the slot; an assignment is
    kept while its slot is below the capacity; the second choice of top-2 needs 2 g2 > u (random policy)."""
    num_groups, group_size, num_experts = probs.shape
    combine = np.zeros((num_groups, group_size, num_experts, capacity))
    for g in range(num_groups):
        p = probs[g]
        experts = [sorted(range(num_experts), key=lambda e, s=s: (-p[s, e], e))[:k] for s in range(group_size)]
        gates = [p[s, experts[s]] / (p[s, experts[s]].sum() if k == 2 else 1.0) for s in range(group_size)]
        tokens = list(range(group_size))
        if priority == "probability":
            tokens.sort(key=lambda s: (-p[s].max(), s))
        count = np.zeros(num_experts, int)
        for choice in range(k):
            for s in tokens:
                if choice == 1 and uniform is not None and not 2 * gates[s][1] > uniform[g, s]:
                    continue
                e = experts[s][choice]
                if count[e] < capacity:
                    combine[g, s, e, count[e]] = gates[s][choice]
                count[e] += 1
    return combine


def ref_expert_choice(probs, capacity):
    """Zhou et al. 2022: expert e takes the C tokens of the group with the highest probs[:, e] (ties: first)."""
    num_groups, group_size, num_experts = probs.shape
    combine = np.zeros((num_groups, group_size, num_experts, capacity))
    for g in range(num_groups):
        for e in range(num_experts):
            best = sorted(range(group_size), key=lambda s: (-probs[g, s, e], s))[:capacity]
            for c, s in enumerate(best):
                combine[g, s, e, c] = probs[g, s, e]
    return combine


NP_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "linear": lambda x: x,
}


def ref_expert_outputs(tokens, params, activations, use_bias):
    """Every expert applied to every token: [E, N, D] from tokens [N, D] (float64)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    gated = len(activations) > 1
    h = None
    for i, name in enumerate(activations):
        wi = p[f"wi_{i}" if gated else "wi"]
        pre = np.einsum("nd,edf->enf", tokens, wi["kernel"]) + (wi["bias"][:, None] if use_bias else 0.0)
        branch = NP_ACTIVATIONS[name](pre)
        h = branch if h is None else h * branch
    return np.einsum("enf,efd->end", h, p["wo"]["kernel"]) + (p["wo"]["bias"][:, None] if use_bias else 0.0)


def ref_layer(cfg, variables, x, *, deterministic=True, uniform=None):
    """The whole MoE layer in float64: output [B, L, D] and the aux dict."""
    moe = cfg.moe
    params = nn.unbox(variables)["params"]
    x = np.asarray(x, np.float64)
    batch, length, embed = x.shape
    group_size = moe.group_size or length
    tokens = x.reshape(-1, group_size, embed)  # [G, S, D]
    logits = tokens @ np.asarray(params["router"]["kernel"], np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    num_experts = moe.num_experts
    k = 2 if moe.router == "top2" else 1
    factor = moe.capacity_factor_eval if deterministic else moe.capacity_factor_train
    capacity = min(group_size, max(moe.min_capacity, math.ceil(k * factor * group_size / num_experts - 1e-9)))
    if moe.router == "expert_choice":
        combine = ref_expert_choice(probs, capacity)
        aux_loss = 0.0
        load = (combine > 0).sum((0, 1, 3))
    else:
        combine = ref_token_choice(probs, k, capacity, uniform=uniform, priority=moe.priority)
        first = probs.argmax(-1)
        f = np.eye(num_experts)[first].mean(1)  # [G, E]
        aux_loss = np.mean(num_experts * (f * probs.mean(1)).sum(-1))
        top = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
        load = np.eye(num_experts)[top].sum((0, 1, 2))
        if uniform is not None:  # unselected second choices are not asked of any expert
            gates2 = np.take_along_axis(probs, top[..., 1:2], -1)[..., 0] / np.take_along_axis(probs, top, -1).sum(-1)
            load -= np.eye(num_experts)[top[..., 1]][~(2 * gates2 > uniform)].sum(0)
    outputs = ref_expert_outputs(tokens.reshape(-1, embed), params["experts"], cfg.mlp_activations, cfg.use_bias)
    outputs = outputs.reshape(num_experts, *tokens.shape)  # [E, G, S, D]
    y = np.einsum("gse,egsd->gsd", combine.sum(-1), outputs)
    lse = np.log(np.exp(logits).sum(-1))
    aux = {
        "moe_aux_loss": aux_loss,
        "moe_z_loss": np.mean(lse**2),
        "moe_drop_fraction": np.mean(combine.sum((2, 3)) == 0),
        "moe_expert_load_max_over_mean": load.max() / load.mean(),
        "moe_router_entropy": np.mean(-(probs * np.log(probs)).sum(-1)),
    }
    return y.reshape(batch, length, embed), aux, combine


def assert_aux_close(got, want, atol=1e-5):
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == jnp.float32 and got[name].shape == ()
        np.testing.assert_allclose(float(got[name]), want[name], rtol=1e-5, atol=atol, err_msg=name)


# ------------------------------------------------------------------------------------------------ routing steps


def random_probs(shape, seed, scale=2.0):
    logits = np.random.default_rng(seed).normal(size=shape) * scale
    return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def jax_token_choice(probs, k, capacity, *, uniform=None, priority="position"):
    """The routing steps of lmx.models.routing, chained as MoeMlp chains them: (dispatch, combine) [G, S, E, C]."""
    uniform = None if uniform is None else jnp.asarray(uniform, jnp.float32)
    return _token_choice(jnp.asarray(probs, jnp.float32), uniform, k, capacity, priority)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _token_choice(probs, uniform, k, capacity, priority):
    index, gates, selected = routing.top_k_choices(probs, k, second_expert_uniform=uniform)
    scores = jnp.max(probs, -1) if priority == "probability" else None
    slots = routing.slot_positions(index, selected, probs.shape[-1], priority_scores=scores)
    return routing.token_choice_dispatch(index, gates, selected, slots, probs.shape[-1], capacity)


@pytest.mark.parametrize("priority", ["position", "probability"])
@pytest.mark.parametrize("k,policy", [(1, None), (2, "all"), (2, "random")])
def test_token_choice_routing_matches_reference(k, policy, priority):
    probs = random_probs((3, 24, 5), seed=k)
    capacity = 4  # 24 tokens x k over 5 experts: many assignments overflow
    uniform = None
    if policy == "random":
        uniform = np.random.default_rng(7).uniform(size=(3, 24)).astype(np.float32)
    dispatch, combine = jax_token_choice(probs, k, capacity, uniform=uniform, priority=priority)
    want = ref_token_choice(probs, k, capacity, uniform=uniform, priority=priority)
    np.testing.assert_allclose(combine, want, atol=1e-6)
    np.testing.assert_array_equal(dispatch, want > 0)
    assert (want.sum((2, 3)) == 0).any(), "the capacity should force drops"
    if policy == "random":  # the draws keep some second choices and skip others
        top2 = np.sort(probs, -1)[..., -2:]
        keep = 2 * top2[..., 0] / top2.sum(-1) > uniform
        assert keep.any() and not keep.all()


def test_priority_by_probability_keeps_the_most_confident_tokens():
    # One expert, capacity 2: left to right keeps tokens 0 and 1; batch-prioritised keeps the two most confident.
    top = np.array([0.5, 0.6, 0.9, 0.7])
    probs = np.stack([top, 1 - top], -1)[None]  # [1, 4, 2]: every token prefers expert 0
    kept = lambda priority: np.nonzero(jax_token_choice(probs, 1, 2, priority=priority)[0][0, :, 0].sum(-1))[0]
    np.testing.assert_array_equal(kept("position"), [0, 1])
    np.testing.assert_array_equal(kept("probability"), [2, 3])


def test_expert_choice_routing_matches_reference():
    probs = random_probs((2, 12, 4), seed=3)
    dispatch, combine = routing.expert_choice_dispatch(jnp.asarray(probs, jnp.float32), 3)
    want = ref_expert_choice(probs, 3)
    np.testing.assert_allclose(combine, want, atol=1e-6)
    np.testing.assert_array_equal(dispatch.sum((1,)), np.ones((2, 4, 3)))  # every slot holds exactly one token


@pytest.mark.parametrize(
    "tokens,experts,k,factor,minimum,want",
    [
        (512, 8, 1, 1.25, 4, 80),
        (512, 128, 1, 1.25, 4, 5),
        (16, 4, 2, 1.0, 1, 8),
        (100, 10, 1, 1.1, 1, 11),
        (8, 64, 1, 1.0, 4, 4),
        (8, 2, 2, 2.0, 1, 8),
    ],
)
def test_expert_capacity(tokens, experts, k, factor, minimum, want):
    assert routing.expert_capacity(tokens, experts, k, factor, minimum) == want


def test_losses_against_the_formulas():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 10, 4)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    first = probs.argmax(-1)
    got = routing.load_balancing_loss(jnp.asarray(probs, jnp.float32), jnp.asarray(first))
    want = np.mean([4 * sum((first[g] == i).mean() * probs[g, :, i].mean() for i in range(4)) for g in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got = routing.router_z_loss(jnp.asarray(logits, jnp.float32))
    np.testing.assert_allclose(got, np.mean(np.log(np.exp(logits).sum(-1)) ** 2), rtol=1e-6)
    # Uniform routing is the minimum, 1.
    uniform = jnp.full((1, 8, 4), 0.25)
    np.testing.assert_allclose(routing.load_balancing_loss(uniform, jnp.arange(8)[None] % 4), 1.0, rtol=1e-6)


# -------------------------------------------------------------------------------------------------- the layer
# Layer tests use x [2, 16, EMBED] and 4 experts unless they need otherwise.
X_SHAPE = (2, 16, EMBED)


@pytest.mark.parametrize(
    "router,priority,activations",
    [
        ("top1", "position", ("relu",)),
        ("top1", "probability", ("gelu", "linear")),
        ("top2", "position", ("gelu", "linear")),
        ("top2", "probability", ("relu",)),
        ("expert_choice", "position", ("gelu", "linear")),
    ],
)
def test_layer_matches_reference(router, priority, activations):
    # 16 tokens per group, 4 experts, eval factor 0.5: top1 capacity 2 (top2: 4), so tokens are dropped. At
    # evaluation the top2 "random" policy keeps every second expert.
    cfg = model_config(
        activations=activations, router=router, priority=priority, capacity_factor_eval=0.5, min_capacity=1
    )
    x, variables = inputs(X_SHAPE), random_params(cfg)
    y, aux = apply(cfg, variables, x)
    want_y, want_aux, combine = ref_layer(cfg, variables, x)
    np.testing.assert_allclose(y, want_y, atol=1e-5, rtol=1e-5)
    assert_aux_close(aux, want_aux)
    dropped = combine.sum((2, 3)).reshape(X_SHAPE[:2]) == 0
    assert dropped.any() and not dropped.all()
    np.testing.assert_array_equal(np.all(np.asarray(y) == 0, axis=-1), dropped)  # dropped tokens output exactly 0


def test_top2_random_policy_in_training_matches_reference():
    # Training: train capacity factor, and the second expert kept where 2 g2 > u, u the layer's own draws.
    cfg = model_config(router="top2", capacity_factor_train=0.75, min_capacity=1, jitter_eps=0.0)
    x, variables = inputs(X_SHAPE, seed=3), random_params(cfg, seed=3)
    (y, aux), state = apply(cfg, variables, x, deterministic=False, rngs={"jitter": key(4)}, mutable=["intermediates"])
    (uniform,) = state["intermediates"]["second_expert_uniform"]
    want_y, want_aux, combine = ref_layer(cfg, variables, x, deterministic=False, uniform=np.asarray(uniform))
    np.testing.assert_allclose(y, want_y, atol=1e-5, rtol=1e-5)
    assert_aux_close(aux, want_aux)
    kept_second = ((combine > 0).sum((2, 3)) == 2).mean()
    assert 0 < kept_second < 1  # some second experts skipped by the policy, some kept


@pytest.mark.parametrize("group_size", [8, 32])
def test_routing_groups_match_reference(group_size):
    # 32 tokens: groups of half a sequence, or one group spanning both sequences.
    cfg = model_config(group_size=group_size, capacity_factor_eval=0.5, min_capacity=1)
    x, variables = inputs(X_SHAPE, seed=5), random_params(cfg, seed=5)
    y, aux = apply(cfg, variables, x)
    want_y, want_aux, _ = ref_layer(cfg, variables, x)
    np.testing.assert_allclose(y, want_y, atol=1e-5, rtol=1e-5)
    assert_aux_close(aux, want_aux)


def test_group_size_must_divide_the_tokens():
    cfg = model_config(group_size=24)
    with pytest.raises(ConfigError, match=r"config.model.moe.group_size=24 does not divide the 32 tokens"):
        apply(cfg, random_params(cfg), inputs(X_SHAPE))


def test_all_tokens_to_one_expert():
    # A router that sends every token to expert 0 with probability ~1: C of the S tokens of a group are processed.
    cfg = model_config(capacity_factor_eval=1.0, min_capacity=1)
    num_experts, group_size = cfg.moe.num_experts, X_SHAPE[1]
    x = jnp.abs(inputs(X_SHAPE)) + 1.0  # positive features
    variables = random_params(cfg)
    variables["params"]["router"]["kernel"] = jnp.zeros((EMBED, num_experts)).at[:, 0].set(10.0)
    y, aux = apply(cfg, variables, x)
    capacity = group_size // num_experts
    np.testing.assert_allclose(aux["moe_drop_fraction"], 1 - capacity / group_size, rtol=1e-6)
    np.testing.assert_allclose(aux["moe_aux_loss"], num_experts, rtol=1e-5)  # N x f_0 x P_0 = N x 1 x 1
    np.testing.assert_allclose(aux["moe_expert_load_max_over_mean"], num_experts, rtol=1e-6)
    np.testing.assert_allclose(aux["moe_router_entropy"], 0.0, atol=1e-5)
    processed = np.any(np.asarray(y) != 0, axis=-1)
    np.testing.assert_array_equal(processed, np.arange(group_size)[None].repeat(2, 0) < capacity)


def test_router_gradient_flows_through_the_gates():
    cfg = model_config(capacity_factor_eval=0.5, min_capacity=1)
    x, variables = inputs(X_SHAPE, seed=6), random_params(cfg, seed=6)
    params = variables["params"]
    target = inputs(X_SHAPE, seed=7)

    def loss(router_kernel):
        y, _ = apply(cfg, {"params": {**params, "router": {"kernel": router_kernel}}}, x)
        return jnp.sum(y * target)

    kernel = params["router"]["kernel"]
    grad = jax.grad(loss)(kernel)
    assert float(jnp.abs(grad).max()) > 1e-2
    # Central differences along random directions, small enough to keep every routing decision.
    for seed in range(2):
        direction = inputs(kernel.shape, seed=100 + seed)
        h = 1e-3
        numeric = (loss(kernel + h * direction) - loss(kernel - h * direction)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(grad, direction), numeric, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize(
    "router,policy,deterministic,use_bias", [("top1", "all", True, False), ("top2", "random", False, True)]
)
def test_dropless_equals_capacity_routing_without_drops(router, policy, deterministic, use_bias):
    # Capacity factor = number of experts gives C = S: nothing can be dropped, as in dropless.
    cfg = model_config(
        activations=("gelu", "linear"),
        use_bias=use_bias,
        router=router,
        second_expert_policy=policy,
        capacity_factor_train=4.0,
        capacity_factor_eval=4.0,
        jitter_eps=0.0,
    )
    ragged_cfg = copy.deepcopy(cfg)
    ragged_cfg.moe.dropless = True
    x, variables = inputs(X_SHAPE, seed=8), random_params(cfg, seed=8)
    # The same "jitter" key: the random policy draws the same second choices in both modes.
    y, aux = apply(cfg, variables, x, deterministic=deterministic, rngs={"jitter": key(9)})
    y_ragged, aux_ragged = apply(ragged_cfg, variables, x, deterministic=deterministic, rngs={"jitter": key(9)})
    assert float(aux["moe_drop_fraction"]) == 0.0
    np.testing.assert_allclose(y_ragged, y, atol=1e-5, rtol=1e-5)
    assert_aux_close(aux_ragged, {name: float(value) for name, value in aux.items()})


def test_dropless_gradients_equal_capacity_gradients():
    # ragged_dot's transpose against the dispatch einsums', for every parameter including the router's.
    cfg = model_config(activations=("gelu", "linear"), use_bias=True, router="top2", capacity_factor_eval=4.0)
    ragged_cfg = copy.deepcopy(cfg)
    ragged_cfg.moe.dropless = True
    x, variables = inputs(X_SHAPE, seed=13), random_params(cfg, seed=13)
    target = inputs(X_SHAPE, seed=14)
    grads = [jax.grad(lambda v, c=c: jnp.sum(apply(c, v, x)[0] * target))(variables) for c in (cfg, ragged_cfg)]
    assert float(jnp.abs(grads[0]["params"]["router"]["kernel"]).max()) > 1e-2
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_parameters_and_their_logical_axes():
    # Both modes declare one layout (paths, shapes, logical axes), and random_params above follows it.
    def layout(dropless):
        cfg = model_config(activations=("gelu", "linear"), use_bias=True, dropless=dropless)
        boxed = jax.eval_shape(
            lambda: moe_lib.MoeMlp(cfg, causal=False).init(jax.random.PRNGKey(0), inputs(X_SHAPE), deterministic=True)
        )
        flat = jax.tree_util.tree_flatten_with_path(boxed["params"], is_leaf=lambda b: isinstance(b, nn.Partitioned))
        return {"/".join(k.key for k in path): (leaf.value.shape, leaf.names) for path, leaf in flat[0]}, cfg

    capacity_layout, cfg = layout(False)
    assert layout(True)[0] == capacity_layout
    e, d, f = cfg.moe.num_experts, EMBED, MLP
    assert capacity_layout == {
        "router/kernel": ((d, e), ("embed", None)),
        "experts/wi_0/kernel": ((e, d, f), ("expert", "embed", "mlp")),
        "experts/wi_0/bias": ((e, f), ("expert", "mlp")),
        "experts/wi_1/kernel": ((e, d, f), ("expert", "embed", "mlp")),
        "experts/wi_1/bias": ((e, f), ("expert", "mlp")),
        "experts/wo/kernel": ((e, f, d), ("expert", "mlp", "embed")),
        "experts/wo/bias": ((e, d), ("expert", "embed")),
    }
    drawn = jax.tree_util.tree_flatten_with_path(random_params(cfg)["params"])[0]
    assert {"/".join(k.key for k in path): leaf.shape for path, leaf in drawn} == {
        name: shape for name, (shape, _) in capacity_layout.items()
    }
    # Router init (Switch 2.4): truncated normal, variance router_init_scale / fan_in.
    router = routing.Router(num_experts=64, jitter_eps=0.0, init_scale=0.1)
    kernel = router.init(key(0), jnp.zeros((1, 1, 256)), deterministic=True)["params"]["kernel"]
    np.testing.assert_allclose(float(jnp.std(nn.unbox(kernel))), math.sqrt(0.1 / 256), rtol=0.05)
    assert float(jnp.abs(nn.unbox(kernel)).max()) <= 2 * math.sqrt(0.1 / 256) / 0.87962566103423978 + 1e-6


def test_training_noise_and_expert_dropout_use_their_streams():
    cfg = model_config(jitter_eps=0.1, expert_dropout_rate=0.5, capacity_factor_train=4.0)
    x, variables = inputs(X_SHAPE, seed=10), random_params(cfg, seed=10)

    def run(jitter, dropout):
        rngs = {"jitter": key(jitter), "dropout": key(dropout)}
        return apply(cfg, variables, x, deterministic=False, rngs=rngs)

    _, eval_aux = apply(cfg, variables, x)
    y, aux = run(0, 0)
    np.testing.assert_array_equal(run(0, 0)[0], y)  # reproducible from the streams
    assert float(aux["moe_z_loss"]) != float(eval_aux["moe_z_loss"])  # jitter changed the router input
    assert float(run(1, 0)[1]["moe_z_loss"]) != float(aux["moe_z_loss"])  # ... drawn from "jitter"
    y_other_dropout, aux_other_dropout = run(0, 1)
    assert not np.allclose(y_other_dropout, y)  # expert dropout drawn from "dropout"
    assert float(aux_other_dropout["moe_z_loss"]) == float(aux["moe_z_loss"])  # ... which leaves the router alone


def test_expert_choice_refused_in_a_causal_stack():
    cfg = model_config(router="expert_choice")
    with pytest.raises(ConfigError, match=r"config.model.moe.router='expert_choice' is not allowed in a causal"):
        apply(cfg, random_params(cfg), inputs(X_SHAPE), causal=True)
    apply(cfg, random_params(cfg), inputs(X_SHAPE), causal=False)  # fine in a bidirectional stack


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("router", "top3", r"config.model.moe.router='top3' is unknown"),
        ("second_expert_policy", "sometimes", r"second_expert_policy='sometimes' is unknown"),
        ("priority", "random", r"priority='random' is unknown"),
        ("num_experts", 1, r"num_experts=1 is too few for router='top2'"),
    ],
)
def test_bad_moe_config_names_the_value(field, value, match):
    moe = ml_collections.ConfigDict({**MOE_DEFAULTS, "router": "top2", field: value})
    with pytest.raises(ConfigError, match=match):
        moe_lib.check_moe_config(moe, causal=False)


def test_dropless_needs_a_fixed_k():
    moe = ml_collections.ConfigDict({**MOE_DEFAULTS, "router": "expert_choice", "dropless": True})
    with pytest.raises(ConfigError, match=r"dropless=True needs a router with a fixed number"):
        moe_lib.check_moe_config(moe, causal=False)


# --------------------------------------------------------------------------------------------- expert parallel


def test_expert_parallel_mesh_equals_single_device_and_moves_tokens_all_to_all():
    # 8 groups of 4 tokens, one per device of the (data=2, expert=4) grid; 8 experts, two per device.
    cfg = model_config(router="top2", num_experts=8, second_expert_policy="all", capacity_factor_eval=2.0)
    cfg.moe.min_capacity = 1
    x, variables = inputs((8, 4, EMBED), seed=11), random_params(cfg, seed=11)
    want_y, want_aux = apply(cfg, variables, x)
    layer = moe_lib.MoeMlp(cfg, causal=False)
    boxed = jax.eval_shape(lambda: layer.init(jax.random.PRNGKey(0), x, deterministic=True))
    mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 1, "expert": 4})
    rules = config_lib.DEFAULT_RULES  # expert first, then batch over (data, fsdp, expert), then (data, fsdp)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        param_sharding = sharding.param_shardings(boxed, mesh, rules)
        x_sharding = sharding.logical_sharding(mesh, rules, "batch", "length", "embed")
        # A fresh function: jit caches traces by function, and the flax rules are not part of its key.
        step = jax.jit(lambda v, x: layer.apply(v, x, deterministic=True), in_shardings=(param_sharding, x_sharding))
        placed = jax.device_put(variables, param_sharding), jax.device_put(x, x_sharding)
        compiled = step.lower(*placed).compile()
        y, aux = compiled(*placed)
    assert param_sharding["params"]["experts"]["wo"]["kernel"].spec[0] == "expert"
    assert "all-to-all" in compiled.as_text()
    np.testing.assert_allclose(y, want_y, atol=1e-5, rtol=1e-5)
    assert_aux_close(aux, {name: float(value) for name, value in want_aux.items()})


# ---------------------------------------------------------------------------------------------- Hugging Face


def test_matches_hugging_face_switch_sparse_mlp_with_drops(torch, transformers):
    """HF's SwitchTransformersSparseMLP (transformers >= 5.18, or 4.52.1-4.57.x: capacity per sequence, dropped
    tokens zeroed) on the same random weights, with a capacity that drops tokens."""
    from transformers.models.switch_transformers import modeling_switch_transformers as hf_switch

    num_experts, length, capacity = 4, X_SHAPE[1], 3
    cfg = model_config(capacity_factor_eval=capacity * num_experts / length, min_capacity=1)  # ceil(0.75 x 4) = 3
    x, variables = inputs(X_SHAPE, seed=12), random_params(cfg, seed=12)
    y, aux = apply(cfg, variables, x)

    hf_config = transformers.SwitchTransformersConfig(
        d_model=EMBED,
        d_ff=MLP,
        num_experts=num_experts,
        expert_capacity=capacity,
        router_bias=False,
        router_jitter_noise=0.0,
        router_dtype="float32",
        dense_act_fn="relu",
        dropout_rate=0.0,
    )
    hf = hf_switch.SwitchTransformersSparseMLP(hf_config).eval()
    p = jax.tree.map(lambda a: torch.tensor(np.array(a)), variables["params"])
    with torch.no_grad():
        hf.router.classifier.weight.copy_(p["router"]["kernel"].T)
        for e in range(num_experts):
            hf.experts[f"expert_{e}"].wi.weight.copy_(p["experts"]["wi"]["kernel"][e].T)
            hf.experts[f"expert_{e}"].wo.weight.copy_(p["experts"]["wo"]["kernel"][e].T)
        out = hf(torch.tensor(np.array(x)))
    hf_y = (out[0] if isinstance(out, tuple) else out).numpy()  # 4.52-4.57 return (hidden, router outputs)
    hf_dropped = np.all(hf_y == 0, axis=-1)
    assert hf_dropped.sum() >= 3, "the capacity should drop tokens in HF too"
    np.testing.assert_array_equal(np.all(np.asarray(y) == 0, axis=-1), hf_dropped)
    np.testing.assert_allclose(aux["moe_drop_fraction"], hf_dropped.mean(), rtol=1e-6)
    np.testing.assert_allclose(y, hf_y, atol=1e-5, rtol=1e-5)
