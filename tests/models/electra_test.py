"""ELECTRA (lmx.models.electra, objective "rtd"): the discriminator's labels, the generator's samples, where gradients
flow, the loss weights and denominators, the generator's size, parameter counts (against Hugging Face's ELECTRA
classes) and the discriminator's encoder-only layout."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import config_lib, flops, objectives
from lmx.config_lib import ConfigError
from lmx.models import build_model
from lmx.models.electra import discriminator_params, encoder_only_config, generator_config
from lmx.models.options import check_model_config

VOCAB, LENGTH, MASK = 64, 16, 4


def _config(**changes):
    """A tiny ELECTRA: discriminator 32 wide (4 heads), embeddings 16 wide, generator 1/4 (8 wide, 1 head)."""
    config = config_lib.base_config()
    m = config.model
    m.update(
        name="electra",
        vocab_size=VOCAB,
        embed_dim=32,
        embed_proj_dim=16,
        num_heads=4,
        head_dim=8,
        mlp_dim=64,
        num_encoder_layers=2,
        num_decoder_layers=0,
        norm="layer",
        norm_position="post",
        norm_epsilon=1e-12,
        use_bias=True,
        position_embedding="learned",
        max_length=LENGTH,
        type_vocab_size=2,
        mlp_activations=("gelu_exact",),
        init="normal",
        tie_embeddings=True,
        scale_attention_logits=True,
        dtype="float32",
    )
    m.update(changes)
    config.train.z_loss = 0.0
    return config


def _batch(rows=8, seed=0, pad_from=None):
    """Masked rows: 25% of the non-pad tokens [MASK]ed (id 4), originals in the targets; rows padded from
    `pad_from[r]` on."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(5, VOCAB, (rows, LENGTH))
    real = np.ones((rows, LENGTH), bool)
    if pad_from is not None:
        real = np.arange(LENGTH)[None, :] < np.asarray(pad_from)[:, None]
    targets = np.where(real, targets, 0)
    selected = (rng.random((rows, LENGTH)) < 0.25) & real
    return {
        "encoder_input_tokens": np.where(selected, MASK, targets).astype(np.int32),
        "encoder_target_tokens": targets.astype(np.int32),
        "encoder_loss_weights": selected.astype(np.int32),
    }


ROWS = 8  # every batch below has this shape: one compilation of each function


@pytest.fixture(scope="module")
def tiny():
    """(config, model, params, apply): the tiny ELECTRA initialised once, and its jitted forward pass
    apply(params, batch, seed) with a "sample" stream (seed None: without one, as evaluation runs it)."""
    config = _config()
    model = build_model(config.model)
    params = jax.jit(lambda key: nn.unbox(model.init({"params": key}, _batch())["params"]))(jax.random.key(0))

    sampled = jax.jit(lambda p, b, key: model.apply({"params": p}, b, rngs={"sample": key}))
    evaluated = jax.jit(lambda p, b: model.apply({"params": p}, b))

    def apply(params, batch, seed=1):
        return evaluated(params, batch) if seed is None else sampled(params, batch, jax.random.key(seed))

    return config, model, params, apply


def test_labels_are_exactly_input_differs_from_original(tiny):
    _, _, params, apply = tiny
    params = jax.tree.map(jnp.asarray, params)  # a copy: the fixture's stays as initialised
    batch = _batch()
    # A generator that almost surely samples token 7: where 7 is also the original, the masked token is "real".
    params["generator"]["mlm_bias"] = params["generator"]["mlm_bias"].at[7].set(1e4)
    targets, selected = batch["encoder_target_tokens"], batch["encoder_loss_weights"] > 0
    targets = np.where(selected & (np.arange(LENGTH) % 2 == 0), 7, targets)  # half the masked originals are 7
    batch = {**batch, "encoder_target_tokens": targets, "encoder_input_tokens": np.where(selected, MASK, targets)}
    out = apply(params, batch)
    corrupted, replaced = np.asarray(out["corrupted"]), np.asarray(out["replaced"])
    np.testing.assert_array_equal(corrupted[~selected], batch["encoder_input_tokens"][~selected])
    assert (corrupted[selected] == 7).all()
    np.testing.assert_array_equal(replaced, (corrupted != targets).astype(np.int32))
    assert replaced[selected & (targets == 7)].sum() == 0 and (selected & (targets == 7)).sum() > 3
    assert replaced[selected & (targets != 7)].all() and not replaced[~selected].any()


def test_samples_follow_the_generator_softmax(tiny):
    _, _, params, apply = tiny
    params = jax.tree.map(jnp.asarray, params)  # a copy: the fixture's stays as initialised
    batch = _batch()
    batch["encoder_loss_weights"] = np.ones_like(batch["encoder_loss_weights"])  # every position sampled
    # Zero the MLM head's output (norm scale and bias 0): the logits are the output bias alone, p = (0.7, 0.3).
    params["generator"]["mlm_norm"] = jax.tree.map(jnp.zeros_like, params["generator"]["mlm_norm"])
    bias = np.full(VOCAB, -1e9, np.float32)
    bias[10], bias[11] = np.log(0.7), np.log(0.3)
    params["generator"]["mlm_bias"] = jnp.asarray(bias)
    samples = np.concatenate([np.asarray(apply(params, batch, seed)["corrupted"]) for seed in range(8)])
    assert set(np.unique(samples)) == {10, 11}
    share = np.mean(samples == 10)  # 1,024 draws: standard deviation 0.014
    assert abs(share - 0.7) < 0.05, share
    # Evaluation runs without a "sample" stream: it draws from the same softmax (with a fixed key).
    evaluation = np.asarray(apply(params, batch, None)["corrupted"])
    assert set(np.unique(evaluation)) == {10, 11} and not (evaluation == samples[: len(evaluation)]).all()


def _means(config, outputs, batch):
    objective = objectives.OBJECTIVES["rtd"]
    denominators = objective.denominators(batch)
    terms = objective.terms(outputs, batch, config.train)
    return {name: value / jnp.maximum(denominators.get(den, 1.0), 1.0) for name, (value, den) in terms.items()}


def test_generator_gets_no_gradient_through_the_samples(tiny):
    config, model, params, _ = tiny
    batch = _batch()

    @functools.partial(jax.jit, static_argnames="term")
    def grad(p, term):
        def loss(p):
            outputs = model.apply({"params": p}, batch, rngs={"sample": jax.random.key(1)})
            return _means(config, outputs, batch)[term]

        return jax.grad(loss)(p)

    discriminator_grads = grad(params, "discriminator_loss")
    generator_grads = grad(params, "generator_cross_entropy")
    # The discriminator's loss reaches no generator parameter (samples are integers: no path back) ...
    for leaf in jax.tree.leaves(discriminator_grads["generator"]):
        assert not np.asarray(leaf).any()
    # ... while the generator's own loss trains all of it, and both losses train the shared embeddings.
    assert all(np.asarray(leaf).any() for leaf in jax.tree.leaves(generator_grads["generator"]))
    token_table = ("discriminator", "embedder", "token_embedder", "embedding")

    def table(tree):
        return np.asarray(tree[token_table[0]][token_table[1]][token_table[2]][token_table[3]])

    assert table(discriminator_grads).any() and table(generator_grads).any()
    # The generator's MLM loss does not reach the discriminator's own encoder and head.
    for name in ("encoder", "rtd_transform", "rtd_output"):
        assert not any(np.asarray(leaf).any() for leaf in jax.tree.leaves(generator_grads["discriminator"][name]))


def test_loss_weights_and_denominators_match_a_float64_reference(tiny):
    config, _, params, apply = tiny
    batch = _batch(seed=3, pad_from=[16, 12, 9, 5, 16, 3, 14, 8])
    assert config.train.discriminator_weight == 50.0
    out = apply(params, batch)
    means = _means(config, out, batch)
    coefficients = objectives.all_coefficients(objectives.OBJECTIVES["rtd"], config.model, config.train)
    loss = objectives.training_loss(means, coefficients)

    logits = np.asarray(out["logits"], np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    log_probs -= logits.max(-1, keepdims=True)
    targets, masked = batch["encoder_target_tokens"], batch["encoder_loss_weights"].astype(bool)
    xent = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    generator = xent[masked].mean()  # over the masked tokens
    z, y = np.asarray(out["discriminator_logits"], np.float64), np.asarray(out["replaced"], np.float64)
    real = batch["encoder_input_tokens"] != 0
    p = 1 / (1 + np.exp(-z))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    discriminator = bce[real].mean()  # over every non-pad token, [CLS]-like and padding rules apart
    assert real.sum() == 83 and masked.sum() < real.sum()
    np.testing.assert_allclose(means["generator_cross_entropy"], generator, rtol=1e-5)
    np.testing.assert_allclose(means["discriminator_loss"], discriminator, rtol=1e-5)
    np.testing.assert_allclose(loss, generator + 50 * discriminator, rtol=1e-5)
    predicted = z > 0
    np.testing.assert_allclose(means["discriminator_accuracy"], (predicted == y)[real].mean(), rtol=1e-6)
    np.testing.assert_allclose(means["replaced_fraction"], y[real].mean(), rtol=1e-6)
    tp = (predicted & (y > 0) & real).sum()
    np.testing.assert_allclose(means["discriminator_precision"], tp / max((predicted & real).sum(), 1), rtol=1e-6)
    np.testing.assert_allclose(means["discriminator_recall"], tp / max(((y > 0) & real).sum(), 1), rtol=1e-6)


def test_generator_is_the_configured_fraction_and_shares_the_embeddings(tiny):
    config, _, params, _ = tiny
    shapes = jax.tree.map(np.shape, params)
    generator, discriminator = shapes["generator"], shapes["discriminator"]
    assert "embedder" not in generator  # token and position tables: the discriminator's, shared
    assert generator["embedding_projection"]["kernel"] == (16, 8)  # E = 16 -> 32 / 4
    assert generator["encoder"]["layers"]["mlp"]["wi"]["kernel"] == (2, 8, 16)  # same depth, MLP 64 / 4
    assert generator["encoder"]["layers"]["self_attention"]["query"]["kernel"] == (2, 8, 1, 8)  # 4 / 4 heads of 8
    assert generator["mlm_transform"]["kernel"] == (8, 16) and generator["mlm_bias"] == (VOCAB,)
    assert discriminator["embedder"]["token_embedder"]["embedding"] == (VOCAB, 16)
    assert discriminator["rtd_output"]["kernel"] == (32, 1)
    count = sum(x.size for x in jax.tree.leaves(params))
    assert count == flops.COUNTERS["electra"](config.model, 1, {"encoder_input_tokens": LENGTH})["params"]


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"generator_size_fraction": 1.5}, r"generator_size_fraction=1.5 would make the generator larger"),
        ({"generator_size_fraction": 0.01}, r"generator width 0"),
        ({"embed_dim": 100, "num_heads": 10, "head_dim": 10, "generator_size_fraction": 0.25}, r"divisible"),
    ],
)
def test_impossible_generators_are_refused_in_one_line(changes, match):
    config = _config(**changes)
    with pytest.raises(ConfigError, match=match) as error:
        check_model_config(config.model)
    assert "\n" not in str(error.value)


def test_generator_size_is_refused_by_the_field_rules_and_on_other_families():
    config = _config(generator_size_fraction=2.0)
    with pytest.raises(ConfigError, match=r"config.model.generator_size_fraction=2.0 is out of range.*\(0, 1\]"):
        config_lib.check_fields(config)
    bert = config_lib.load_config_file("configs/bert_tiny.py").model
    bert.generator_size_fraction = 0.5
    with pytest.raises(ValueError, match=r"generator_size_fraction=0.5 is an option of \['electra'\]"):
        check_model_config(bert)


def test_discriminator_exports_with_the_encoder_only_layout(tiny):
    config, _, params, apply = tiny
    batch = _batch()
    out = apply(params, batch)
    encoder_only = build_model(encoder_only_config(config.model))
    check_model_config(encoder_only.config)
    fresh = jax.jit(lambda key: nn.unbox(encoder_only.init({"params": key}, batch)["params"]))(jax.random.key(1))
    exported = discriminator_params(params)
    assert jax.tree.map(np.shape, exported) == jax.tree.map(np.shape, {k: fresh[k] for k in exported})
    # The encoder-only model with the exported weights encodes the corrupted input as the discriminator did: its
    # hidden states through the replaced-token head (dense, exact GELU, dense) give the discriminator's logits.
    hidden = jax.jit(lambda p, b: encoder_only.apply({"params": p}, b, method=lambda module, b: module.encode(b)[0]))(
        {**fresh, **exported}, {**batch, "encoder_input_tokens": out["corrupted"]}
    )
    head = params["discriminator"]
    h = jax.nn.gelu(hidden @ head["rtd_transform"]["kernel"] + head["rtd_transform"]["bias"], approximate=False)
    logits = (h @ head["rtd_output"]["kernel"] + head["rtd_output"]["bias"])[..., 0]
    np.testing.assert_allclose(logits, out["discriminator_logits"], rtol=1e-5, atol=1e-5)


def test_electra_small_parameter_counts_equal_hugging_face(torch, transformers):
    """configs/electra_small.py against Hugging Face's ELECTRA classes on the same sizes (random weights): the
    discriminator = ElectraForPreTraining, the generator = ElectraForMaskedLM less its embedding tables (shared)."""
    config = config_lib.load_config_file("configs/electra_small.py")
    m = config.model
    g = generator_config(m)
    common = dict(
        vocab_size=m.vocab_size,
        embedding_size=m.embed_proj_dim,
        num_hidden_layers=m.num_encoder_layers,
        max_position_embeddings=m.max_length,
        type_vocab_size=m.type_vocab_size,
    )
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(
            hidden_size=m.embed_dim, num_attention_heads=m.num_heads, intermediate_size=m.mlp_dim, **common
        )
    )
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(
            hidden_size=g.embed_dim, num_attention_heads=g.num_heads, intermediate_size=g.mlp_dim, **common
        )
    )

    def count(module, skip=()):
        return sum(p.numel() for name, p in module.named_parameters() if not name.startswith(skip))

    ours = flops.COUNTERS["electra"](m, 1, {"encoder_input_tokens": 128})["params"]
    hf_generator = count(gen, skip=("electra.embeddings.",))  # its tied output matrix is the shared token table
    assert (g.embed_dim, g.num_heads, g.mlp_dim) == (64, 1, 256)
    assert ours == count(disc) + hf_generator
    # ELECTRA-Small's discriminator: 13.5M parameters (the paper's table 1 rounds it to 14M).
    assert 13.4e6 < count(disc) < 13.6e6
    # The model's own tree has exactly that many.
    shapes = jax.eval_shape(
        lambda: build_model(m).init(
            {"params": jax.random.key(0)},
            {
                "encoder_input_tokens": jnp.ones((1, 128), jnp.int32),
                "encoder_target_tokens": jnp.ones((1, 128), jnp.int32),
                "encoder_loss_weights": jnp.ones((1, 128), jnp.int32),
            },
        )
    )
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(nn.unbox(shapes))) == ours


def test_flops_count_both_models_matmuls_and_attention(tiny):
    """Model FLOPs (PaLM appendix B): 6 x every kernel of both models (and, as lmx.flops counts every family's
    blocks, their attention and MLP biases) and the generator's output through the token table, per token, plus
    12 x layers x heads x head size x L^2 per row for each of the two stacks."""
    config, _, params, _ = tiny
    m, g = config.model, generator_config(config.model)
    rows = 3
    count = flops.COUNTERS["electra"](m, rows, {"encoder_input_tokens": LENGTH})
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    keys = [([k.key for k in path], leaf) for path, leaf in flat]
    kernels = sum(leaf.size for path, leaf in keys if path[-1] == "kernel")
    block_biases = sum(
        leaf.size for path, leaf in keys if path[-1] == "bias" and "encoder" in path and "norm" not in "".join(path)
    )
    output = m.embed_proj_dim * m.vocab_size  # generator logits through the shared [V, E] table
    assert count["encoder"] + count["logits"] == 6 * (kernels + block_biases + output) * rows * LENGTH
    attention = 12 * m.num_encoder_layers * (m.num_heads * m.head_dim + g.num_heads * g.head_dim) * LENGTH**2 * rows
    assert count["attention"] == attention
