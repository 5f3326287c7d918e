"""The train step: sharded over a (data=2, fsdp=2, tensor=2) mesh it equals the single-device step, and
gradient accumulation over microbatches equals one big batch."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest
from lmx_steps import run_steps

from lmx import optim, sharding, step
from lmx.data import tasks
from lmx.models import build_model


def _batch(config, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    li, lt = config.data.inputs_length, config.data.targets_length
    vocab = config.model.vocab_size
    targets = rng.integers(2, vocab, (batch_size, lt)).astype(np.int32)
    targets[:, -2:] = 0  # padding at the end of each row
    return {
        "encoder_input_tokens": rng.integers(2, vocab, (batch_size, li)).astype(np.int32),
        "encoder_segment_ids": np.ones((batch_size, li), np.int32),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1),
        "decoder_segment_ids": (targets != 0).astype(np.int32),
        "decoder_loss_weights": (targets != 0).astype(np.float32),
    }


def _run(config, mesh_axes, devices, batches):
    """Initialises and runs len(batches) train steps on a mesh; returns per-step metrics and final params."""
    mesh = sharding.make_mesh(mesh_axes, devices)
    rules = sharding.rules_of(config)
    model = build_model(config.model)
    inputs = step.init_batch(tasks.model_feature_lengths(config.data))
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
            objective="span_corruption",
            config=config,
            key=key,
        )


# Adafactor: its factored statistics are the optimizer state whose sharding is not the parameters' own; AdamW's
# sharded step is compared in tests/models/{decoder_only,encoder_only}_test.py.
@pytest.mark.parametrize("optimizer", ["adafactor"])
def test_sharded_step_equals_single_device(tiny_config, optimizer):
    config = tiny_config
    config.optim.name = optimizer
    config.optim.warmup_steps = 1
    config.model.dropout_rate = 0.1  # dropout masks must not depend on the layout either
    batches = [_batch(config, 8, seed) for seed in range(3)]
    one = {"data": 1, "fsdp": 1, "tensor": 1, "expert": 1}
    many = {"data": 2, "fsdp": 2, "tensor": 2, "expert": 1}
    single_history, single_params, _ = _run(config, one, jax.devices()[:1], batches)
    sharded_history, sharded_params, state = _run(config, many, jax.devices(), batches)
    for a, b in zip(single_history, sharded_history, strict=True):
        for name in ("loss", "accuracy", "grad_norm", "update_norm"):
            np.testing.assert_allclose(a[name], b[name], rtol=2e-5, err_msg=name)
    # Adam's update g / (|g| + eps) turns the float32 reassociation noise of a near-zero gradient (a rare token's
    # embedding row, |g| ~ eps) into a visible change: allow 1% of one full-rate step (lr 0.01) per weight.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), single_params, sharded_params)
    # The state really is spread: the embedding [vocab, embed] is split over tensor and fsdp.
    embedding = state.params["token_embedder"]["embedding"]
    assert embedding.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert embedding.addressable_shards[0].data.shape == (embedding.shape[0] // 2, embedding.shape[1] // 2)


def test_microbatches_equal_one_batch(tiny_config):
    config = tiny_config
    batches = [_batch(config, 8, seed) for seed in range(2)]
    mesh = {"data": 2, "fsdp": 1, "tensor": 1, "expert": 1}
    whole_history, whole_params, _ = _run(config, mesh, jax.devices()[:2], batches)
    config.train.microbatches = 4
    micro_history, micro_params, _ = _run(config, mesh, jax.devices()[:2], batches)
    for a, b in zip(whole_history, micro_history, strict=True):
        for name in ("loss", "cross_entropy", "accuracy", "grad_norm", "target_tokens"):
            np.testing.assert_allclose(a[name], b[name], rtol=2e-5, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), whole_params, micro_params)


def test_loss_falls_when_training_on_one_batch(tiny_config):
    config = tiny_config
    config.optim.update(name="adamw", learning_rate=1e-2, warmup_steps=0, decay="constant")
    batch = _batch(config, 8)
    history, _, _ = _run(config, {"data": 1, "fsdp": 1, "tensor": 1, "expert": 1}, jax.devices()[:1], [batch] * 30)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[0]["loss"] == pytest.approx(np.log(config.model.vocab_size), rel=0.3)
