"""Mixture-of-experts layers inside whole models: every family, scanned or unrolled, under every remat policy; the
auxiliary losses of every MoE layer in the training loss; per-layer and total MoE metrics; config validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import bench, config_lib, objectives, train
from lmx.config_lib import ConfigError
from lmx.models import build_model
from lmx.models.options import check_model_config
from lmx.models.transformer import unstack_scanned_params

# family -> (objective, router): Switch's top-1 in T5, GShard's top-2 in a causal decoder, expert choice in BERT.
FAMILIES = {
    "encoder_decoder": ("span_corruption", "top1"),
    "decoder_only": ("lm", "top2"),
    "encoder_only": ("mlm", "expert_choice"),
}
EXPERTS = 4


def tiny_config(family: str, *, scan_layers: bool = True, remat_policy: str = "none"):
    """A tiny float32 model of `family` with experts in layers 1 and 3 (T5: 4 encoder layers, 2 decoder layers so the
    two stacks' names differ), a capacity that drops tokens, and its objective's feature lengths."""
    objective, router = FAMILIES[family]
    config = config_lib.base_config()
    m = config.model
    m.name = family
    m.vocab_size, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 64, 16, 2, 8, 32
    m.dtype, m.scan_layers, m.remat_policy = "float32", scan_layers, remat_policy
    m.moe.num_experts, m.moe.moe_every, m.moe.router = EXPERTS, 2, router
    # 12 tokens, 4 experts: 3 slots per expert (top2 at half the factor), so tokens are dropped. No jitter, both top2
    # choices kept: training is deterministic (dropout is 0), the same scanned or unrolled.
    m.moe.capacity_factor_train = m.moe.capacity_factor_eval = 0.5 if router == "top2" else 1.0
    m.moe.min_capacity, m.moe.jitter_eps, m.moe.second_expert_policy = 1, 0.0, "all"
    m.moe.z_loss_weight = 1e-3
    if family == "encoder_decoder":
        m.num_encoder_layers, m.num_decoder_layers = 4, 2
    elif family == "decoder_only":  # GPT-2
        m.num_encoder_layers, m.num_decoder_layers = 0, 4
        m.norm, m.use_bias, m.position_embedding, m.max_length = "layer", True, "learned", 16
        m.mlp_activations, m.init, m.tie_embeddings, m.scale_attention_logits = ("gelu",), "normal", True, True
    else:  # BERT
        m.num_encoder_layers, m.num_decoder_layers = 4, 0
        m.norm, m.norm_position, m.use_bias, m.position_embedding, m.max_length = "layer", "post", True, "learned", 16
        m.mlp_activations, m.init, m.tie_embeddings, m.type_vocab_size = ("gelu_exact",), "normal", True, 2
        m.scale_attention_logits = True
    config.data.objective = objective
    config.data.inputs_length, config.data.targets_length = 12, 12
    config.train.batch_size = 2
    return config


def batch_of(config) -> dict[str, jax.Array]:
    return bench.synthetic_batch(config, jax.sharding.SingleDeviceSharding(jax.devices()[0]), seed=3)


@functools.cache
def scanned_params(family: str):
    config = tiny_config(family)
    model = build_model(config.model)
    return jax.jit(lambda key: model.init({"params": key}, batch_of(config))["params"])(jax.random.key(0))


@functools.cache
def run(family: str, scan_layers: bool, remat_policy: str):
    """(outputs, gradients of the training loss, gradients of the auxiliary losses alone) of one training-mode forward
    pass (dropout 0, no router jitter: the same on every layout), gradients in the unrolled layout."""
    config = tiny_config(family, scan_layers=scan_layers, remat_policy=remat_policy)
    model, batch = build_model(config.model), batch_of(config)
    params = scanned_params(family) if scan_layers else unstack_scanned_params(scanned_params(family))
    objective = objectives.OBJECTIVES[config.data.objective]
    coefficients = objectives.all_coefficients(objective, config.model, config.train)
    denominators = {**objective.denominators(batch), objectives.PER_CALL: 1.0}

    def losses(p):
        outputs = model.apply({"params": p}, batch, enable_dropout=True, rngs={"dropout": jax.random.key(1)})
        terms = objectives.all_terms(objective, config.model, config.train, outputs, batch)
        means = {name: value / denominators[den] for name, (value, den) in terms.items()}
        # The auxiliary losses alone (expert choice's load-balancing loss is 0 by construction: its z-loss counts).
        aux_loss = objectives.training_loss(means, {name: 1.0 for name in objectives.aux_coefficients(config.model)})
        return jnp.stack([objectives.training_loss(means, coefficients), aux_loss]), outputs

    grads, outputs = jax.jit(jax.jacrev(losses, has_aux=True))(params)  # one forward pass, two backward
    layout = unstack_scanned_params if scan_layers else (lambda tree: tree)
    loss_grads = layout(jax.tree.map(lambda g: g[0], grads))
    aux_grads = layout(jax.tree.map(lambda g: g[1], grads))
    return jax.tree.map(np.asarray, (outputs, loss_grads, aux_grads))


# Scanned with the default policy and with full remat, and unrolled, in Switch's family; one policy each in the
# others (every policy's gradients are compared on dense stacks in tests/models/transformer_test.py).
VARIANTS = [
    ("encoder_decoder", True, "dots"),
    ("encoder_decoder", True, "full"),
    ("encoder_decoder", False, "none"),
    ("decoder_only", True, "full"),
    ("encoder_only", True, "dots"),
]


@pytest.mark.parametrize("family, scan_layers, remat_policy", VARIANTS)
def test_scan_and_remat_equal_unrolled(family, scan_layers, remat_policy):
    """Logits, every MoE layer's aux values and all gradients equal the unrolled, unrematerialised model's; the aux
    losses of every MoE layer reach the training loss (their gradient reaches each layer's router)."""
    want_outputs, want_grads, _ = run(family, False, "none")
    outputs, grads, aux_grads = run(family, scan_layers, remat_policy)
    np.testing.assert_allclose(outputs["logits"], want_outputs["logits"], rtol=1e-5, atol=1e-5)
    assert set(outputs["aux"]) == set(want_outputs["aux"]) == set(objectives.AUX_OUTPUTS)
    layers = objectives.aux_layer_names(tiny_config(family).model)  # layers 1, 3 (T5: encoder 1, 3 and decoder 1)
    for name, values in outputs["aux"].items():
        assert values.shape == (len(layers),), name
        np.testing.assert_allclose(values, want_outputs["aux"][name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert outputs["aux"]["moe_drop_fraction"].max() > 0  # the capacity drops tokens
    grads, want_grads = flat(grads), flat(want_grads)
    assert set(grads) == set(want_grads)
    for path, grad in grads.items():
        np.testing.assert_allclose(grad, want_grads[path], rtol=1e-4, atol=1e-6, err_msg=path)
    routers = {path: grad for path, grad in flat(aux_grads).items() if "/router/" in path}
    assert len(routers) == len(layers)
    for path, grad in routers.items():
        assert np.abs(grad).max() > 0, path


def flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_experts_sit_in_every_other_layer_of_each_stack():
    names = objectives.aux_layer_names(tiny_config("encoder_decoder").model)
    assert names == ("encoder_layer_1", "encoder_layer_3", "decoder_layer_1")
    params = unstack_scanned_params(scanned_params("encoder_decoder"))
    for stack, depth in (("encoder", 4), ("decoder", 2)):
        for i in range(depth):
            assert ("router" in params[stack][f"layers_{i}"]["mlp"]) == (i % 2 == 1), (stack, i)


def test_layer_names_follow_the_order_of_the_aux_values():
    """T5's encoder and decoder MoE layers come out encoder first: with the encoder routers zeroed, the router entropy
    of exactly the layers named encoder_* is log(E) (uniform routing)."""
    config = tiny_config("encoder_decoder")
    config.model.num_decoder_layers = 4  # as many MoE layers in each stack
    model, batch = build_model(config.model), batch_of(config)
    params = jax.jit(lambda key: model.init({"params": key}, batch)["params"])(jax.random.key(0))
    params = unstack_scanned_params(params)
    for i in (1, 3):
        kernel = params["encoder"][f"layers_{i}"]["mlp"]["router"]["kernel"]
        params["encoder"][f"layers_{i}"]["mlp"]["router"]["kernel"] = jnp.zeros_like(kernel)
    config.model.scan_layers = False
    outputs = build_model(config.model).apply({"params": params}, batch)
    terms = objectives.aux_terms(outputs["aux"], objectives.aux_layer_names(config.model))
    for layer in ("encoder_layer_1", "encoder_layer_3", "decoder_layer_1", "decoder_layer_3"):
        entropy = float(terms[f"moe_router_entropy/{layer}"][0])
        assert (abs(entropy - np.log(EXPERTS)) < 1e-6) == layer.startswith("encoder"), (layer, entropy)


def test_losses_are_summed_and_metrics_averaged_over_layers():
    aux = {
        "moe_aux_loss": jnp.array([1.0, 2.0, 4.0]),
        "moe_z_loss": jnp.array([0.5, 0.25, 0.25]),
        "moe_drop_fraction": jnp.array([0.1, 0.2, 0.6]),
        "moe_expert_load_max_over_mean": jnp.array([1.0, 2.0, 3.0]),
        "moe_router_entropy": jnp.array([0.3, 0.6, 0.9]),
    }
    names = ("encoder_layer_1", "encoder_layer_3", "decoder_layer_1")
    terms = {name: float(value) for name, (value, den) in objectives.aux_terms(aux, names).items()}
    assert {den for _, den in objectives.aux_terms(aux, names).values()} == {objectives.PER_CALL}
    assert terms["moe_aux_loss"] == 7.0 and terms["moe_z_loss"] == 1.0
    np.testing.assert_allclose(terms["moe_drop_fraction"], 0.3)
    np.testing.assert_allclose(terms["moe_expert_load_max_over_mean"], 2.0)
    np.testing.assert_allclose(terms["moe_router_entropy"], 0.6)
    assert terms["moe_aux_loss/decoder_layer_1"] == 4.0 and terms["moe_drop_fraction/encoder_layer_3"] == np.float32(
        0.2
    )
    assert len(terms) == 5 * 4
    config = tiny_config("encoder_decoder")
    coefficients = objectives.aux_coefficients(config.model)
    assert coefficients == {"moe_aux_loss": 0.01, "moe_z_loss": 1e-3}  # per-layer values and metrics: logged only
    with pytest.raises(ValueError, match="AUX_OUTPUTS"):
        objectives.aux_terms({"mystery": jnp.zeros(3)}, names)
    with pytest.raises(ValueError, match="one value per layer"):
        objectives.aux_terms({"moe_aux_loss": jnp.zeros(2)}, names)


@pytest.mark.parametrize("family", ["decoder_only", "encoder_decoder"])
def test_expert_choice_is_refused_in_a_causal_stack_before_compiling(family, tmp_path):
    config = tiny_config(family)
    config.model.moe.router = "expert_choice"
    with pytest.raises(ConfigError, match=r"config.model.moe.router='expert_choice' is not allowed in a causal"):
        check_model_config(config.model)
    config.train.batch_size = 8
    with pytest.raises(ConfigError, match="causal"):  # lmx.train validates before it builds anything
        train.setup(config, str(tmp_path), with_data=False)
    assert not any(tmp_path.iterdir())
    config.model.name, config.model.num_decoder_layers = "encoder_only", 0
    config.model.num_encoder_layers, config.model.position_embedding = 4, "learned"
    config.model.norm_position, config.model.type_vocab_size, config.model.tie_embeddings = "post", 2, True
    check_model_config(config.model)  # bidirectional stacks may use it
