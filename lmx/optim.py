"""Optimizers (AdamW, Adafactor with T5's settings), learning-rate schedules and weight-decay masks."""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def _warmup(peak: float, warmup_steps: int) -> optax.Schedule:
    return optax.linear_schedule(0.0, peak, max(warmup_steps, 1))


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
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then the configured decay."""
    o = optim_config
    if o.decay not in SCHEDULES:
        raise ValueError(f"config.optim.decay={o.decay!r} is unknown; choose one of {sorted(SCHEDULES)}")
    decay = SCHEDULES[o.decay](o, total_steps)
    if o.warmup_steps <= 0:
        return decay
    # join_schedules passes the decay schedule the steps counted from the boundary.
    return optax.join_schedules([_warmup(o.learning_rate, o.warmup_steps), decay], [o.warmup_steps])


def path_name(path) -> str:
    """'encoder/layers/attention/query/kernel' for a tree path."""
    return "/".join(str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path)


def decay_mask(params, exclude_patterns) -> object:
    """True for parameters that get weight decay: all except those whose path matches one of the regexes."""
    patterns = [re.compile(p) for p in exclude_patterns]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(p.fullmatch(path_name(path)) for p in patterns), params
    )


def _adamw(o, schedule, params) -> optax.GradientTransformation:
    return optax.adamw(
        schedule,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        weight_decay=o.weight_decay,
        mask=lambda p: decay_mask(p, o.weight_decay_exclude),
    )


def _adafactor(o, schedule, params) -> optax.GradientTransformation:
    # T5 (Raffel et al. 2020, section 3.1.2; Shazeer & Stern 2018): factored second moments, decay exponent 0.8,
    # update clipping 1.0, no momentum, updates scaled by the parameter's RMS.
    return optax.adafactor(
        learning_rate=schedule,
        decay_rate=o.adafactor_decay_rate,
        clipping_threshold=o.adafactor_clipping_threshold,
        momentum=o.adafactor_momentum if o.adafactor_momentum > 0 else None,
        multiply_by_parameter_scale=True,
        factored=True,
        weight_decay_rate=o.weight_decay if o.weight_decay > 0 else None,
        weight_decay_mask=lambda p: decay_mask(p, o.weight_decay_exclude),
    )


OPTIMIZERS: dict[str, Callable] = {"adamw": _adamw, "adafactor": _adafactor}


def make_optimizer(optim_config, total_steps: int, params=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain (global-norm clipping, then the optimizer) and its learning-rate schedule."""
    o = optim_config
    if o.name not in OPTIMIZERS:
        raise ValueError(f"config.optim.name={o.name!r} is unknown; choose one of {sorted(OPTIMIZERS)}")
    schedule = make_schedule(o, total_steps)
    parts = []
    if o.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.clip_norm))
    parts.append(OPTIMIZERS[o.name](o, schedule, params))
    return optax.chain(*parts), schedule
