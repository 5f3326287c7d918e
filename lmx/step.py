"""The train state and the pure train/eval steps. Callers bind static arguments and apply `jax.jit`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lmx import sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates done
    params: Any  # float32 parameter tree (unboxed)
    opt_state: Any  # optax state mirroring params


def init_state(rng: jax.Array, *, model: nn.Module, tx: optax.GradientTransformation, init_batch) -> TrainState:
    """Fresh parameters and optimizer state (meant to run under jit with out_shardings, or eval_shape)."""
    params = init_params(rng, model=model, init_batch=init_batch)
    params = nn.meta.unbox(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def init_params(rng: jax.Array, *, model: nn.Module, init_batch) -> Any:
    """The model's parameters with their logical-partitioning boxes."""
    return model.init({"params": rng}, **init_batch, enable_dropout=False)["params"]


def abstract_state_and_shardings(init_fn: Callable, init_params_fn: Callable, key: jax.Array, mesh, rules):
    """Shapes before arrays: the abstract TrainState and the shardings every leaf will live in.

    `init_fn(key)` builds the state, `init_params_fn(key)` the boxed parameters whose logical axis names give the
    parameter shardings; optimizer statistics follow their parameters; the step counter is replicated.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(init_params_fn, key)
        abstract = jax.eval_shape(init_fn, key)
    params = sharding.param_shardings(boxed, mesh, rules)
    shardings = TrainState(
        step=sharding.replicated(mesh),
        params=params,
        opt_state=sharding.mirror_shardings(abstract.opt_state, abstract.params, params, mesh),
    )
    return abstract, shardings


def _microbatches(batch: Mapping[str, jax.Array], count: int) -> dict[str, jax.Array]:
    """[B, ...] -> [count, B / count, ...], microbatch m taking rows m, m + count, m + 2 count, ...

    Strided rows keep every microbatch spread over all data-parallel devices (contiguous slices would put each
    microbatch on a fraction of them).
    """

    def split(x):
        x = x.reshape((x.shape[0] // count, count) + x.shape[1:])  # [B/M, M, ...]
        x = jnp.swapaxes(x, 0, 1)  # [M, B/M, ...]
        return nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))

    return {name: split(value) for name, value in batch.items()}


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss_fn: Callable,
    train_config,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on a global batch, accumulating gradients over `train_config.microbatches`.

    The loss is the sum over all target tokens of the global batch divided by their count; gradients are
    accumulated in float32 as sums and divided once at the end, so microbatching changes nothing but memory.
    """
    step_rng = jax.random.fold_in(rng, state.step)

    def sums_and_grads(params, microbatch, index):
        rngs = {"dropout": jax.random.fold_in(step_rng, index)}

        def total(p):
            sums = loss_fn(model, p, microbatch, rngs=rngs, train=True, train_config=train_config)
            return sums["loss"], sums

        (_, sums), grads = jax.value_and_grad(total, has_aux=True)(params)
        return sums, grads

    count = train_config.microbatches
    if count == 1:
        sums, grads = sums_and_grads(state.params, batch, 0)
    else:
        micro = _microbatches(batch, count)

        def accumulate(carry, xs):
            index, microbatch = xs
            sums, grads = sums_and_grads(state.params, microbatch, index)
            return jax.tree.map(jnp.add, carry, (sums, grads)), None

        zero_sums, zero_grads = jax.eval_shape(
            lambda: sums_and_grads(state.params, jax.tree.map(lambda x: x[0], micro), 0)
        )
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), (zero_sums, zero_grads))
        (sums, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(count), micro))

    tokens = jnp.maximum(sums["tokens"], 1.0)
    grads = jax.tree.map(lambda g: g / tokens, grads)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # A non-finite loss, gradient or updated parameter never reaches the state: the update is dropped (the step
    # still counts, its batch is consumed). With on_nonfinite="stop" the loop then stops the run, naming the step.
    param_norm = optax.global_norm(params)
    finite = jnp.isfinite(sums["loss"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    params, opt_state = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old), (params, opt_state), (state.params, state.opt_state)
    )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)

    metrics = {name: value / tokens for name, value in sums.items() if name != "tokens"}
    metrics.update(
        tokens=sums["tokens"],
        learning_rate=schedule(state.step),
        grad_norm=grad_norm,
        nonfinite=1.0 - finite.astype(jnp.float32),
        update_norm=optax.global_norm(updates),
        param_norm=param_norm,
    )
    return new_state, metrics


def eval_step(params, batch: Mapping[str, jax.Array], *, model: nn.Module, loss_fn: Callable, train_config):
    """Sums of loss, accuracy and tokens on one batch (the caller adds them up over batches)."""
    return loss_fn(model, params, batch, rngs={}, train=False, train_config=train_config)


def finalize_eval(sums: Mapping[str, float]) -> dict[str, float]:
    """Per-token averages and perplexity from summed eval metrics."""
    tokens = max(float(sums["tokens"]), 1.0)
    out = {name: float(value) / tokens for name, value in sums.items() if name != "tokens"}
    out["perplexity"] = float(jnp.exp(out["cross_entropy"]))
    out["tokens"] = float(sums["tokens"])
    return out
