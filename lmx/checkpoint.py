"""Checkpoints with orbax: the train state (sharded), each process's data-iterator position, and the config.

Layout: `workdir/checkpoints/<step>/{state, data, config}`. Orbax writes a step into a temporary directory and
renames it when complete, so `latest_step()` only ever names complete checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

# Model fields that define the parameter shapes; a checkpoint whose values differ cannot be restored.
ARCHITECTURE_FIELDS = (
    "name",
    "vocab_size",
    "embed_dim",
    "num_heads",
    "head_dim",
    "mlp_dim",
    "num_encoder_layers",
    "num_decoder_layers",
    "mlp_activations",
    "relpos_num_buckets",
    "tie_embeddings",
    "scan_layers",
)


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores a data iterator (anything with `save(path)` / `restore(path)`). Every process calls it;
    the iterator writes the positions of the input shards it owns (lmx.data.pipeline), so the saved positions
    do not depend on which process held which shard."""

    def save(self, directory: epath.Path, args: DataIteratorSave):
        args.iterator.save(os.fspath(directory))

    def restore(self, directory: epath.Path, args: DataIteratorRestore):
        args.iterator.restore(os.fspath(directory))
        return args.iterator


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    iterator: Any


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, checkpoint_config, *, create: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=checkpoint_config.keep,
        enable_async_checkpointing=checkpoint_config.async_save,
        create=create,
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=("state", "data", "config"))


def latest_step(workdir: str) -> int | None:
    """The newest complete checkpoint's step in `workdir`, without creating anything."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return None
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True)).latest_step()


def saved_config(workdir: str, step: int) -> dict:
    """The config stored with a checkpoint, read without touching the state."""
    path = os.path.join(checkpoint_dir(workdir), str(step), "config", "metadata")
    with open(path) as f:
        return json.load(f)


class UnreadableCheckpoint(ValueError):
    """A checkpoint that exists but cannot be restored; the message says which and what to do."""


def check_compatible(workdir: str, step: int, model_config) -> None:
    """Refuses (before compiling) to resume a checkpoint of a different architecture."""
    try:
        saved = saved_config(workdir, step)["model"]
    except (OSError, ValueError, KeyError) as e:
        raise UnreadableCheckpoint(
            f"checkpoint {checkpoint_dir(workdir)}/{step} is unreadable ({type(e).__name__}: {e}); move that step "
            "directory away to resume from the previous checkpoint, or use a new --workdir"
        ) from e
    current = json.loads(model_config.to_json())
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs config {current[k]!r}"
        for k in ARCHITECTURE_FIELDS
        if _normal(saved.get(k)) != _normal(current[k])
    ]
    if diffs:
        raise ValueError(
            f"{checkpoint_dir(workdir)} holds a checkpoint (step {step}) of a different model ({'; '.join(diffs)}); "
            "use a new --workdir, or set the config to match"
        )


def _normal(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def check_init_from(path: str, model_config) -> None:
    """`checkpoint.init_from` must be a step directory of a checkpoint of the same architecture."""
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.join(path, "state")):
        raise FileNotFoundError(
            f"config.checkpoint.init_from={path!r} is not a checkpoint step directory (no {path}/state); "
            "point it at WORKDIR/checkpoints/<step> of a finished run"
        )
    workdir, step = os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
    check_compatible(workdir, step, model_config)


def restore_params(path: str, abstract_state, state_shardings):
    """The parameters of the checkpoint step directory `path`, restored into `state_shardings.params`."""
    target = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_state,
        state_shardings,
    )
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(epath.Path(path) / "state", target)
    return restored.params


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, config) -> None:
    """Starts saving a checkpoint (asynchronously if configured); the data position is captured now."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=DataIteratorSave(data_iterator),
            config=ocp.args.JsonSave(json.loads(config.to_json())),
        ),
        force=True,
    )


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, state_shardings, data_iterator):
    """Restores the state straight into `state_shardings` and rewinds `data_iterator` to the saved position."""
    target = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_state,
        state_shardings,
    )
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=DataIteratorRestore(data_iterator)),
        )
    except FileNotFoundError as e:
        raise UnreadableCheckpoint(str(e)) from e
    except Exception as e:  # orbax/tensorstore/tf raise many types for damaged files; all mean the same here
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UnreadableCheckpoint(
            f"checkpoint {manager.directory}/{step} is unreadable ({type(e).__name__}: {first_line[:300]}); move "
            "that step directory away to resume from the previous checkpoint, or use a new --workdir"
        ) from e
    return restored["state"]
