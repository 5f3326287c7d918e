"""The train state and the pure train/eval steps. Callers bind static arguments and apply `jax.jit`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lmx import objectives, sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates done
    params: Any  # float32 parameter tree (unboxed)
    opt_state: Any  # optax state mirroring params
    # What the model carries from one step to the next (XLNet's memory of each row's previous segment; see
    # lmx.models), saved and restored with the rest so a resumed run continues exactly; None for other models.
    # Every leaf is per batch row, [global batch, ...], sharded like the batch rows.
    carry: Any = None


def init_state(
    rng: jax.Array, *, model: nn.Module, tx: optax.GradientTransformation, init_batch, rows: int | None = None
) -> TrainState:
    """Fresh parameters, optimizer state and (for a model with `initial_carry`) the carry of `rows` batch rows, by
    default as many as init_batch has (meant to run under jit with out_shardings, or eval_shape)."""
    params = init_params(rng, model=model, init_batch=init_batch)
    params = nn.meta.unbox(params)
    carry = None
    if hasattr(model, "initial_carry"):
        carry = model.initial_carry(len(next(iter(init_batch.values()))) if rows is None else rows)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), carry=carry)


def init_params(rng: jax.Array, *, model: nn.Module, init_batch) -> Any:
    """The model's parameters with their logical-partitioning boxes."""
    return model.init({"params": rng}, init_batch, enable_dropout=False)["params"]


def init_batch(feature_lengths: Mapping[str, int]) -> dict[str, jax.Array]:
    """A one-row dummy batch with the model features of the configured lengths, for `model.init` (shapes matter,
    values do not: ones are valid tokens, segment ids, positions and weights)."""
    return {name: jnp.ones((1, length), jnp.int32) for name, length in feature_lengths.items()}


def abstract_state_and_shardings(init_fn: Callable, init_params_fn: Callable, key: jax.Array, mesh, rules):
    """Shapes before arrays: the abstract TrainState and the shardings every leaf will live in.

    `init_fn(key)` builds the state, `init_params_fn(key)` the boxed parameters whose logical axis names give the
    parameter shardings; optimizer statistics follow their parameters; the step counter is replicated; the carry's
    leaves are split over their rows like the batch.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(init_params_fn, key)
        abstract = jax.eval_shape(init_fn, key)
    params = sharding.param_shardings(boxed, mesh, rules)
    shardings = TrainState(
        step=sharding.replicated(mesh),
        params=params,
        opt_state=sharding.mirror_shardings(abstract.opt_state, abstract.params, params, mesh),
        carry=jax.tree.map(lambda _: sharding.batch_sharding(mesh, rules), abstract.carry),
    )
    return abstract, shardings


def _microbatches(batch: Any, count: int) -> Any:
    """Each leaf [B, ...] (of a batch, or of the carry) -> [count, B / count, ...], microbatch m taking rows m,
    m + count, m + 2 count, ...

    Strided rows keep every microbatch spread over all data-parallel devices (contiguous slices would put each
    microbatch on a fraction of them).
    """

    def split(x):
        x = x.reshape((x.shape[0] // count, count) + x.shape[1:])  # [B/M, M, ...]
        x = jnp.swapaxes(x, 0, 1)  # [M, B/M, ...]
        return nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))

    return jax.tree.map(split, batch)


def _join_microbatches(tree: Any) -> Any:
    """Inverse of _microbatches on each leaf: [M, B / M, ...] -> [B, ...], row m + M r from microbatch m, row r."""

    def join(x):
        return jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])

    return jax.tree.map(join, tree)


# Random streams of a step, each folded from the step's key: dropout masks, samples (the ELECTRA generator's
# replacements), router jitter (MoE). A stream a model does not use costs nothing.
RNG_STREAMS = ("dropout", "sample", "jitter")


def step_rngs(step_rng: jax.Array, microbatch: jax.Array | int) -> dict[str, jax.Array]:
    key = jax.random.fold_in(step_rng, microbatch)
    return {name: jax.random.fold_in(key, i) if i else key for i, name in enumerate(RNG_STREAMS)}


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    objective: objectives.Objective,
    model_config,
    train_config,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on a global batch, accumulating gradients over `train_config.microbatches`.

    Each loss term is a sum divided by its denominator counted on the whole global batch before any microbatch
    runs (lmx.objectives), so the per-microbatch losses and gradients simply add up: microbatching changes nothing
    but memory. Gradients are accumulated in float32. A model's carry (XLNet's memory) goes in with its rows'
    microbatch and its next value replaces it in the new state.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    count = train_config.microbatches
    denominators = {**objective.denominators(batch), objectives.PER_CALL: jnp.asarray(count, jnp.float32)}
    coefficients = objectives.all_coefficients(objective, model_config, train_config)

    def means_and_grads(params, microbatch, carry, index):
        def loss(p):
            carried = {} if carry is None else {"carry": carry}
            rngs = step_rngs(step_rng, index)
            outputs = model.apply({"params": p}, microbatch, enable_dropout=True, rngs=rngs, **carried)
            terms = objectives.all_terms(objective, model_config, train_config, outputs, microbatch)
            means = {name: value / jnp.maximum(denominators[den], 1.0) for name, (value, den) in terms.items()}
            return objectives.training_loss(means, coefficients), (means, outputs.get("carry") if carried else None)

        (value, (means, next_carry)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return {**means, "loss": value}, grads, next_carry

    if count == 1:
        means, grads, carry = means_and_grads(state.params, batch, state.carry, 0)
    else:
        micro, micro_carry = _microbatches(batch, count), _microbatches(state.carry, count)

        def accumulate(sums, xs):
            index, microbatch, carry = xs
            means, grads, next_carry = means_and_grads(state.params, microbatch, carry, index)
            return jax.tree.map(jnp.add, sums, (means, grads)), next_carry

        def first(tree):
            return jax.tree.map(lambda x: x[0], tree)

        zero_means, zero_grads, _ = jax.eval_shape(
            lambda: means_and_grads(state.params, first(micro), first(micro_carry), 0)
        )
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), (zero_means, zero_grads))
        (means, grads), carries = jax.lax.scan(accumulate, zeros, (jnp.arange(count), micro, micro_carry))
        carry = _join_microbatches(carries)

    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # A non-finite loss, gradient or updated parameter never reaches the state: the update is dropped and the carry
    # kept (the step still counts, its batch is consumed). With on_nonfinite="stop" the loop then stops the run,
    # naming the step.
    # Integer leaves of the optimizer state are its step counts: they advance anyway, so the optimizer's count (its
    # schedule, its bias corrections) always equals state.step and the logged learning rate is the one applied.
    param_norm = optax.global_norm(params)
    finite = jnp.isfinite(means["loss"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)

    def keep_if_finite(new, old):
        return new if jnp.issubdtype(new.dtype, jnp.integer) else jnp.where(finite, new, old)

    params, opt_state, carry = jax.tree.map(
        keep_if_finite, (params, opt_state, carry), (state.params, state.opt_state, state.carry)
    )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, carry=carry)

    metrics = dict(means)
    metrics.update({name: value for name, value in denominators.items() if name != objectives.PER_CALL})
    metrics.update(
        learning_rate=schedule(state.step),
        grad_norm=grad_norm,
        nonfinite=1.0 - finite.astype(jnp.float32),
        update_norm=optax.global_norm(updates),
        param_norm=param_norm,
    )
    return new_state, metrics


def eval_step(params, batch: Mapping[str, jax.Array], *, model: nn.Module, objective, train_config):
    """{"terms": {term: (sum, denominator)}, "counts": {denominator: count}} of one batch; the caller adds them up
    over batches and calls `finalize_eval`."""
    outputs = model.apply({"params": params}, batch, enable_dropout=False)
    denominators = {**objective.denominators(batch), objectives.PER_CALL: jnp.ones((), jnp.float32)}
    terms = objectives.all_terms(objective, model.config, train_config, outputs, batch)
    return {
        "terms": {name: (value, denominators[den]) for name, (value, den) in terms.items()},
        "counts": {name: value for name, value in denominators.items() if name != objectives.PER_CALL},
    }


def finalize_eval(totals: Mapping[str, Any], coefficients: Mapping[str, float], main_metric: str) -> dict[str, float]:
    """Means of the summed eval terms, the training loss they make, the perplexity of the main metric and the
    counts (e.g. target_tokens) evaluated."""
    out = {name: float(value) / max(float(count), 1.0) for name, (value, count) in totals["terms"].items()}
    out["loss"] = float(objectives.training_loss(out, coefficients))
    if main_metric in out:
        out["perplexity"] = float(jnp.exp(out[main_metric]))
    out.update({name: float(count) for name, count in totals["counts"].items()})
    return out
