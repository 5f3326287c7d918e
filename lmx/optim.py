"""Optimizers (AdamW; Adafactor as T5/T5X apply it, factored by logical axes), schedules and weight-decay masks.

`make_optimizer(config.optim, total_steps, param_axes)` returns the optax transformation and its learning-rate
schedule. `param_axes` gives each parameter's logical axis names (`nn.get_partition_spec` of the boxed params):
Adafactor decides from them which dims it factors and which are independent slices (scanned `layers`, stacked
`expert`), so scanning layers never changes its maths.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from lmx.config_lib import ConfigError

# ----------------------------------------------------------------------------------------------------------------
# Learning-rate schedules: a warmup shape for `warmup_steps`, then a decay. T5 = constant warmup + rsqrt decay.


def _linear_warmup(peak: float, warmup_steps: int) -> optax.Schedule:
    return optax.linear_schedule(0.0, peak, warmup_steps)


def _constant_warmup(peak: float, warmup_steps: int) -> optax.Schedule:
    return optax.constant_schedule(peak)


WARMUPS: dict[str, Callable] = {"linear": _linear_warmup, "constant": _constant_warmup}


def _cosine(o, total_steps: int) -> optax.Schedule:
    decay_steps = max(total_steps - o.warmup_steps, 1)
    return optax.cosine_decay_schedule(o.learning_rate, decay_steps, alpha=o.end_learning_rate_fraction)


def _linear(o, total_steps: int) -> optax.Schedule:
    decay_steps = max(total_steps - o.warmup_steps, 1)
    return optax.linear_schedule(o.learning_rate, o.learning_rate * o.end_learning_rate_fraction, decay_steps)


def _rsqrt(o, total_steps: int) -> optax.Schedule:
    # T5: lr = peak * sqrt(warmup / step) after warmup, i.e. 1/sqrt(step) scaled to meet the peak at warmup's end.
    warmup = max(o.warmup_steps, 1)
    # join_schedules also evaluates this before the boundary (negative counts): clamp them.
    return lambda count: o.learning_rate * jnp.sqrt(warmup / (jnp.maximum(count, 0) + warmup))


def _constant(o, total_steps: int) -> optax.Schedule:
    return optax.constant_schedule(o.learning_rate)


SCHEDULES: dict[str, Callable] = {"cosine": _cosine, "linear": _linear, "rsqrt": _rsqrt, "constant": _constant}


def make_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """`warmup_shape` for `warmup_steps` (linear from 0, or constant at the peak), then the `decay` schedule.

    T5 (Raffel et al. 2020, section 3.1.2): constant warmup + rsqrt decay with peak 0.01 and 10^4 warmup steps is
    lr = 1 / sqrt(max(step, 10^4)).
    """
    o = optim_config
    if o.decay not in SCHEDULES:
        raise ConfigError(f"config.optim.decay={o.decay!r} is unknown; choose one of {sorted(SCHEDULES)}")
    if o.warmup_shape not in WARMUPS:
        raise ConfigError(f"config.optim.warmup_shape={o.warmup_shape!r} is unknown; choose one of {sorted(WARMUPS)}")
    decay = SCHEDULES[o.decay](o, total_steps)
    if o.warmup_steps <= 0:
        return decay
    # join_schedules passes the decay schedule the steps counted from the boundary.
    return optax.join_schedules([WARMUPS[o.warmup_shape](o.learning_rate, o.warmup_steps), decay], [o.warmup_steps])


# ----------------------------------------------------------------------------------------------------------------
# Weight-decay masks by regex over parameter paths.


def path_name(path) -> str:
    """'encoder/layers/attention/query/kernel' for a tree path."""
    return "/".join(str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path)


def decay_mask(params, exclude_patterns) -> Any:
    """True for parameters that get weight decay: all except those whose path matches one of the regexes."""
    patterns = [re.compile(p) for p in exclude_patterns]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(p.fullmatch(path_name(path)) for p in patterns), params
    )


# ----------------------------------------------------------------------------------------------------------------
# Adafactor factoring by logical axes.

ROW, COLUMN, BATCH, NONE = "row", "column", "batch", "none"

# What each logical axis of a parameter is to Adafactor (T5X's standard logical factor rules): a factored matrix's
# rows or columns, an independent slice (statistics never mix slices), or a plain dim.
FACTOR_ROLES: dict[str | None, str] = {
    "embed": ROW,
    "vocab": COLUMN,
    "mlp": COLUMN,
    "heads": COLUMN,
    "kv": COLUMN,
    "relpos_buckets": NONE,
    "layers": BATCH,
    "expert": BATCH,
    None: NONE,
}


@dataclasses.dataclass(frozen=True)
class FactorPlan:
    """Adafactor's view of one parameter, as dim indices: slices, and the rows and columns of its matrix.

    A parameter is factored when it has both row and column dims: the second moment of each slice is estimated
    from its row means (over the column dims) and column means (over the row dims). heads x kv are both column
    dims, so [embed, heads, kv] factors as embed x (heads * kv) and [heads, kv, embed] as (heads * kv) x embed.
    """

    ndim: int
    batch: tuple[int, ...]  # independent slices (scanned layers, experts)
    rows: tuple[int, ...]  # () when not factored
    columns: tuple[int, ...]

    @property
    def factored(self) -> bool:
        return bool(self.rows and self.columns)

    @property
    def within(self) -> tuple[int, ...]:
        """Dims inside one slice: the parameter scale and the update clipping are RMS over these."""
        return tuple(d for d in range(self.ndim) if d not in self.batch)


def factor_plan(names: tuple[str | None, ...], path: str = "") -> FactorPlan:
    """The FactorPlan of a parameter whose dims carry these logical axis names.

    Rule (T5X's logical factor rules, applied to every rank): `layers`/`expert` dims are slices; the parameter is
    factored iff it keeps a row (`embed`) dim and a column (`vocab`, `mlp`, `heads`, `kv`) dim; otherwise its
    second moment is kept whole. Unlike T5X there is no size heuristic for unscanned 2-D kernels, which would make
    an unscanned [embed, mlp] kernel and its scanned [layers, embed, mlp] stack factor differently.
    """
    unknown = [n for n in names if n not in FACTOR_ROLES]
    if unknown:
        known = sorted(n for n in FACTOR_ROLES if n)
        raise ValueError(
            f"parameter {path} has logical axes {names}: {unknown} have no Adafactor role; "
            f"add them to lmx.optim.FACTOR_ROLES (known: {known})"
        )
    roles = [FACTOR_ROLES[n] for n in names]
    dims = {role: tuple(d for d, r in enumerate(roles) if r == role) for role in (ROW, COLUMN, BATCH, NONE)}
    if dims[ROW] and dims[COLUMN] and dims[NONE]:
        raise ValueError(
            f"parameter {path} has logical axes {names}: rows, columns and unfactorable dims together; give each "
            "axis a row/column/batch role in lmx.optim.FACTOR_ROLES"
        )
    factored = dims[ROW] and dims[COLUMN]
    return FactorPlan(len(names), dims[BATCH], dims[ROW] if factored else (), dims[COLUMN] if factored else ())


def factor_plans(param_axes: Any) -> dict[str, FactorPlan]:
    """Parameter path -> FactorPlan, from a tree of logical axis names (PartitionSpec or tuple leaves)."""
    is_names = lambda x: isinstance(x, PartitionSpec | tuple)  # noqa: E731
    flat = jax.tree_util.tree_flatten_with_path(param_axes, is_leaf=is_names)[0]
    return {path_name(path): factor_plan(tuple(names), path_name(path)) for path, names in flat}


# ----------------------------------------------------------------------------------------------------------------
# Adafactor.


class FactoredMoments(NamedTuple):
    """Second-moment statistics of a factored parameter, each with the parameter's rank (reduced dims kept as 1),
    so that it shares the parameter's sharding on the dims it keeps."""

    row: jax.Array  # EMA of the mean of g^2 over the column dims, e.g. [layers, embed, 1, 1]
    col: jax.Array  # EMA of the mean of g^2 over the row dims, e.g. [layers, 1, heads, kv]


class FullMoment(NamedTuple):
    v: jax.Array  # EMA of g^2, the parameter's shape


class AdafactorState(NamedTuple):
    count: jax.Array  # int32 scalar: updates applied; drives the schedule and the decay of the second moments
    moments: Any  # per parameter: FactoredMoments or FullMoment
    momentum: Any  # per parameter: EMA of the scaled updates (float32), or None without momentum


def _rms(x: jax.Array, dims: tuple[int, ...]) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x), axis=dims, keepdims=True))


def adafactor(
    learning_rate: optax.Schedule,
    plans: Mapping[str, FactorPlan],
    *,
    decay_rate: float = 0.8,
    clipping_threshold: float = 1.0,
    momentum: float = 0.0,
    epsilon1: float = 1e-30,
    epsilon2: float = 1e-3,
    weight_decay: float = 0.0,
    weight_decay_mask: Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """Adafactor (Shazeer & Stern 2018, Algorithms 4 and 5) with T5's settings, one slice of a parameter at a time.

    For each parameter (a slice along its `batch` dims at a time; see FactorPlan), at update count c (0-based):
      1. t = c + 1; beta2 = 1 - t^(-decay_rate)  (section 7.2; 0 at the first step, so V starts at g^2).
      2. Factored: R = beta2 R + (1 - beta2) mean_columns(g^2 + epsilon1),
                   C = beta2 C + (1 - beta2) mean_rows(g^2 + epsilon1),
                   V = R C / mean_rows(R)  (section 3: the rank-1 estimate; sums in the paper, means here).
         Otherwise V = beta2 V + (1 - beta2) (g^2 + epsilon1).
      3. U = g / sqrt(V).
      4. Update clipping (section 5): U = U / max(1, RMS(U) / clipping_threshold)  (0 disables).
      5. Relative step size (section 8): step = lr_c * max(epsilon2, RMS(param)) * U, lr_c = learning_rate(c).
      6. Momentum (optional, beta1 = momentum > 0): m = beta1 m + (1 - beta1) step; step = m.
      7. Decoupled weight decay (where the mask allows): step += lr_c * weight_decay * param.
      8. The update is -step.
    RMS and means never cross slices; the count is an integer leaf of the state.
    """

    def plans_of(params) -> list[FactorPlan]:
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        out = []
        for path, p in flat:
            name = path_name(path)
            if name not in plans:
                raise ValueError(f"parameter {name} has no logical axes in param_axes given to make_optimizer")
            plan = plans[name]
            if plan.ndim != p.ndim:
                raise ValueError(f"parameter {name} of shape {p.shape} has {plan.ndim} logical axis names")
            out.append(plan)
        return out

    def init(params):
        treedef = jax.tree.structure(params)
        moments = []
        for plan, p in zip(plans_of(params), jax.tree.leaves(params), strict=True):
            if plan.factored:
                row = jnp.zeros([1 if d in plan.columns else n for d, n in enumerate(p.shape)], jnp.float32)
                col = jnp.zeros([1 if d in plan.rows else n for d, n in enumerate(p.shape)], jnp.float32)
                moments.append(FactoredMoments(row, col))
            else:
                moments.append(FullMoment(jnp.zeros(p.shape, jnp.float32)))
        m = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params) if momentum > 0 else None
        return AdafactorState(jnp.zeros((), jnp.int32), jax.tree.unflatten(treedef, moments), m)

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("adafactor scales updates by the parameters: pass them to update()")
        treedef = jax.tree.structure(params)
        lr = learning_rate(state.count)
        t = (state.count + 1).astype(jnp.float32)
        beta2 = 1.0 - t ** (-decay_rate)
        mask = weight_decay_mask(params) if weight_decay > 0 and weight_decay_mask else None
        leaves = zip(
            plans_of(params),
            jax.tree.leaves(params),
            treedef.flatten_up_to(grads),
            treedef.flatten_up_to(state.moments),
            treedef.flatten_up_to(state.momentum) if momentum > 0 else [None] * treedef.num_leaves,
            treedef.flatten_up_to(mask) if mask is not None else [weight_decay > 0] * treedef.num_leaves,
            strict=True,
        )
        updates, moments, m_out = [], [], []
        for plan, p, g, moment, m, decayed in leaves:
            g = g.astype(jnp.float32)
            g2 = jnp.square(g) + epsilon1
            if plan.factored:  # [..] with reduced dims kept as size 1
                row = beta2 * moment.row + (1 - beta2) * jnp.mean(g2, axis=plan.columns, keepdims=True)
                col = beta2 * moment.col + (1 - beta2) * jnp.mean(g2, axis=plan.rows, keepdims=True)
                # g / sqrt(V), V = row col / mean_rows(row), as two factors: row * col can underflow float32.
                u = g * jax.lax.rsqrt(row / jnp.mean(row, axis=plan.rows, keepdims=True)) * jax.lax.rsqrt(col)
                moments.append(FactoredMoments(row, col))
            else:
                v = beta2 * moment.v + (1 - beta2) * g2
                u = g * jax.lax.rsqrt(v)
                moments.append(FullMoment(v))
            if clipping_threshold > 0:
                u = u / jnp.maximum(1.0, _rms(u, plan.within) / clipping_threshold)
            step = lr * jnp.maximum(epsilon2, _rms(p.astype(jnp.float32), plan.within)) * u
            if momentum > 0:
                m = momentum * m + (1 - momentum) * step
                step = m
            m_out.append(m)
            if decayed:
                step = step + lr * weight_decay * p
            updates.append((-step).astype(p.dtype))
        new_momentum = jax.tree.unflatten(treedef, m_out) if momentum > 0 else None
        new_state = AdafactorState(state.count + 1, jax.tree.unflatten(treedef, moments), new_momentum)
        return jax.tree.unflatten(treedef, updates), new_state

    return optax.GradientTransformation(init, update)


# ----------------------------------------------------------------------------------------------------------------
# The optimizer of a config.


def _adamw(o, schedule, param_axes) -> optax.GradientTransformation:
    return optax.adamw(
        schedule,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        weight_decay=o.weight_decay,
        mask=lambda p: decay_mask(p, o.weight_decay_exclude),
    )


def _adafactor(o, schedule, param_axes) -> optax.GradientTransformation:
    if param_axes is None:
        raise ValueError("adafactor needs param_axes (the logical axis names of the parameters) to factor them")
    return adafactor(
        schedule,
        factor_plans(param_axes),
        decay_rate=o.adafactor_decay_rate,
        clipping_threshold=o.adafactor_clipping_threshold,
        momentum=o.adafactor_momentum,
        epsilon1=o.adafactor_epsilon1,
        epsilon2=o.adafactor_epsilon2,
        weight_decay=o.weight_decay,
        weight_decay_mask=lambda p: decay_mask(p, o.weight_decay_exclude),
    )


OPTIMIZERS: dict[str, Callable] = {"adamw": _adamw, "adafactor": _adafactor}


def make_optimizer(
    optim_config, total_steps: int, param_axes: Any
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain (global-norm clipping if `clip_norm` > 0, then the optimizer) and its learning-rate schedule.

    param_axes: the parameters' tree with a tuple (or PartitionSpec) of logical axis names per leaf, as
    `flax.linen.get_partition_spec(boxed_params)` gives it; Adafactor factors by it, AdamW ignores it (None is
    accepted there).
    """
    o = optim_config
    if o.name not in OPTIMIZERS:
        raise ConfigError(f"config.optim.name={o.name!r} is unknown; choose one of {sorted(OPTIMIZERS)}")
    schedule = make_schedule(o, total_steps)
    parts = []
    if o.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.clip_norm))
    parts.append(OPTIMIZERS[o.name](o, schedule, param_axes))
    return optax.chain(*parts), schedule
