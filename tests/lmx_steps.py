"""Running jitted, sharded train steps in tests the way lmx.train compiles them (state and batch shardings in and
out, donated state), for tests that build their own state on a mesh of their choosing."""

from __future__ import annotations

import functools

import jax

from lmx import objectives, sharding, step


def run_steps(state, state_sharding, batches, *, mesh, model, tx, schedule, objective: str, config, key):
    """Runs one train step per host batch (inside the caller's mesh and axis-rules context); returns the per-step
    metrics on the host, the final parameters on the host and the final state."""
    batch_sharding = sharding.batch_sharding(mesh, sharding.rules_of(config))
    train_step = jax.jit(
        functools.partial(
            step.train_step,
            model=model,
            tx=tx,
            schedule=schedule,
            objective=objectives.OBJECTIVES[objective],
            model_config=config.model,
            train_config=config.train,
        ),
        in_shardings=(state_sharding, batch_sharding, sharding.replicated(mesh)),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    history = []
    for batch in batches:
        state, metrics = train_step(state, sharding.global_batch_from_host(batch, batch_sharding), key)
        history.append(jax.device_get(metrics))
    return history, jax.device_get(state.params), state
