"""The lmx side on disk: a converted model is a params-only orbax checkpoint in the layout of a run's.

`write_checkpoint(params, config, workdir)` writes `workdir/checkpoints/0/{state, config}` with state
`{"params": ...}` and the full config, through the same orbax manager as lmx.train, so `config.checkpoint.init_from=
workdir/checkpoints/0` passes lmx.checkpoint.check_init_from (same architecture) and lmx.checkpoint.restore_params
reads it. `read_params(step_dir, model_config)` reads the params of any step directory (a run's or a converted one).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lmx import checkpoint
from lmx.convert import tensors

STEP = 0  # the step a converted checkpoint is written at


def write_checkpoint(params, config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes `params` (numpy tree) as step 0 of `workdir`; returns the step directory (for init_from)."""
    manager = checkpoint.make_manager(workdir, config.checkpoint)
    try:
        manager.save(
            STEP,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"params": params}),
                config=ocp.args.JsonSave(json.loads(config.to_json())),
            ),
            force=True,
        )
        manager.wait_until_finished()
    finally:
        manager.close()
    return os.path.join(checkpoint.checkpoint_dir(workdir), str(STEP))


def read_params(step_dir: str, model_config: ml_collections.ConfigDict) -> dict:
    """The params (numpy tree, config.model's layout) of checkpoint step directory `step_dir` on this host."""
    abstract = tensors.init_params(model_config, jax.random.key(0), abstract=True)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    shardings = jax.tree.map(lambda _: device, abstract)
    return jax.tree.map(np.asarray, checkpoint.read_params(step_dir, abstract, shardings))
