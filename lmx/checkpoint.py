"""Checkpoints with orbax: the train state (sharded), each process's data-iterator position, and the config.

Layout: `workdir/checkpoints/<step>/{state, data, config}`. Orbax writes a step into a temporary directory and
renames it when complete, so `latest_step()` only ever names complete checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from lmx import config_lib

# Model fields that change how a run computes but not which model it trains: every other field of config.model
# (flattened, e.g. "moe.num_experts") is architecture, and a checkpoint whose value differs is refused.
RUNTIME_FIELDS = frozenset(
    {"dtype", "dropout_rate", "remat_policy", "init", "init_stddev", "scale_residual_init"}
    | {
        f"moe.{name}"
        for name in (
            "second_expert_policy",
            "capacity_factor_train",
            "capacity_factor_eval",
            "min_capacity",
            "group_size",
            "priority",
            "jitter_eps",
            "router_init_scale",
            "expert_dropout_rate",
            "dropless",
            "aux_loss_weight",
            "z_loss_weight",
        )
    }
)


def architecture(model_config: dict) -> dict:
    """The architecture fields of a (JSON) model config, flattened to "a.b" keys. max_length counts only where it
    sizes a parameter (learned positions)."""

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    fields = dict(flat(model_config))
    if fields.get("position_embedding", "relative") != "learned":
        fields.pop("max_length", None)
    return {k: _normal(v) for k, v in fields.items() if k not in RUNTIME_FIELDS}


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores a data iterator (anything with `save(path)`, `restore(path)` and `check_saved(path)`, see
    lmx.data.pipeline.DataIterator). Every process calls it;
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


# The metric a fine-tuning run saves with each evaluated checkpoint ({BEST_METRIC: value, "step": step}); the best
# such step is kept however old (see make_manager).
BEST_METRIC = "selection_metric"


def _best_key(metrics) -> tuple[float, int]:
    """Higher is better; of equal values the earliest step (the one a best-so-far tracker records) wins."""
    return float(metrics[BEST_METRIC]), -int(metrics["step"])


def make_manager(
    workdir: str, checkpoint_config, *, create: bool = True, keep_best: bool = False
) -> ocp.CheckpointManager:
    """The orbax manager of `workdir/checkpoints`: keeps the `checkpoint.keep` latest steps and, with keep_best
    (fine-tuning), also the step saved with the highest BEST_METRIC (`save(..., best_metric=...)`)."""
    if not keep_best:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=checkpoint_config.keep, enable_async_checkpointing=checkpoint_config.async_save, create=create
        )
    else:
        policies = ocp.checkpoint_managers
        keep = policies.AnyPreservationPolicy(
            [
                policies.LatestN(checkpoint_config.keep),
                policies.BestN(get_metric_fn=_best_key, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=checkpoint_config.async_save,
            create=create,
            best_fn=_best_key,  # makes the manager write each step's metrics, which BestN reads
            best_mode="max",
            preservation_policy=keep,
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
    """A checkpoint that exists but cannot be restored; the message says which and what to do. `reads_started`:
    orbax had started reading (asynchronously) when it failed, so reads of the damaged files may still be pending."""

    reads_started = False


# Files a restore opens, relative to a step directory: a step missing one is damaged (orbax writes a step into a
# temporary directory and renames it when complete, so only damage after the fact removes them).
STEP_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/manifest.ocdbt", "config/metadata")


def fallback(step_dir: str) -> str:
    """How to go on without the checkpoint in `step_dir`: resume from the previous one, or start afresh."""
    directory, step = os.path.dirname(step_dir), int(os.path.basename(step_dir))
    steps = [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
    previous = max((s for s in steps if s < step), default=None)
    if previous is None:
        return f"move {step_dir} away to start from step 0, or use a new --workdir"
    return f"move {step_dir} away to resume from the previous checkpoint (step {previous}), or use a new --workdir"


def check_step_files(step_dir: str) -> None:
    """Raises UnreadableCheckpoint naming the first file of STEP_FILES (and of each process's OCDBT directory)
    missing from `step_dir`. Reads directory entries only: it runs before orbax starts its asynchronous readers,
    whose failures on missing files surface as stray tracebacks at exit."""
    state = os.path.join(step_dir, "state")
    per_process = [f"state/{n}/manifest.ocdbt" for n in sorted(os.listdir(state)) if n.startswith("ocdbt.process_")]
    for name in (*STEP_FILES, *per_process) if os.path.isdir(state) else ("state",):
        if not os.path.exists(os.path.join(step_dir, name)):
            raise UnreadableCheckpoint(f"checkpoint {step_dir} is damaged: {name} is missing; {fallback(step_dir)}")


def check_compatible(workdir: str, step: int, model_config) -> None:
    """Refuses (before compiling) to resume a damaged checkpoint or one of a different architecture."""
    check_step_files(os.path.join(checkpoint_dir(workdir), str(step)))
    try:
        saved = saved_config(workdir, step)["model"]
    except (OSError, ValueError, KeyError) as e:
        step_dir = os.path.join(checkpoint_dir(workdir), str(step))
        raise UnreadableCheckpoint(
            f"checkpoint {step_dir} is unreadable ({type(e).__name__}: {e}); {fallback(step_dir)}"
        ) from e
    current = architecture(json.loads(model_config.to_json()))
    # A checkpoint written before a field existed holds that field's default.
    defaults = architecture(json.loads(config_lib.base_config().model.to_json()))
    saved = {**{k: v for k, v in defaults.items() if k in current}, **architecture(saved)}
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs config {v!r}" for k, v in current.items() if saved.get(k) != v]
    if diffs:
        raise ValueError(
            f"{checkpoint_dir(workdir)} holds a checkpoint (step {step}) of a different model ({'; '.join(diffs)}); "
            "use a new --workdir, or set the config to match"
        )


def _normal(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def resolve_init_from(path: str) -> str:
    """The step directory `checkpoint.init_from` names: `path` itself (WORKDIR/checkpoints/<step>), or the latest
    complete step of a run when `path` is its workdir."""
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.join(path, "state")) and os.path.isdir(checkpoint_dir(path)):
        step = latest_step(path)
        if step is not None:
            return os.path.join(checkpoint_dir(path), str(step))
    return path


def check_init_from(path: str, model_config) -> None:
    """`checkpoint.init_from` must be a step directory (or a run's workdir: its latest step) of a checkpoint of the
    same architecture."""
    path = resolve_init_from(path)
    if not os.path.isdir(os.path.join(path, "state")) or not os.path.basename(path).isdigit():
        raise FileNotFoundError(
            f"config.checkpoint.init_from={path!r} is not a checkpoint step directory (no {path}/state); "
            "point it at WORKDIR/checkpoints/<step> of a finished run, or at WORKDIR for its latest step"
        )
    workdir, step = os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
    check_compatible(workdir, step, model_config)


def restore_params(path: str, abstract_state, state_shardings):
    """The parameters of the checkpoint step directory `path`, restored into `state_shardings.params`."""
    return read_params(path, abstract_state.params, state_shardings.params)


def _path(keys) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in keys)


def saved_param_shapes(step_dir: str) -> dict[str, tuple[int, ...]]:
    """'encoder/layers_0/mlp/wi/kernel' -> shape of every parameter saved in a step directory (a run's state or a
    params-only checkpoint), read from orbax's metadata without reading any array."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(epath.Path(step_dir) / "state")
    tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata
    flat = jax.tree_util.tree_flatten_with_path(tree["params"], is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {_path(keys): tuple(leaf.shape) for keys, leaf in flat}


def check_params_match(
    step_dir: str, wanted: dict[str, tuple[int, ...]], what: str = "config.checkpoint.init_from"
) -> None:
    """ValueError naming the first parameter of `wanted` (path -> shape) that `step_dir` lacks or holds with another
    shape, or a parameter `step_dir` holds in a module of `wanted` that `wanted` lacks. Other modules of the
    checkpoint (pretraining heads a fine-tuned model does not use) are ignored. `what`: the field or flag that named
    the checkpoint, for the message."""
    saved = saved_param_shapes(step_dir)
    where = f"{what}={step_dir}"
    for path, shape in wanted.items():
        if path not in saved:
            raise ValueError(f"{where} has no parameter {path} {list(shape)}, which the model reads from it")
        if saved[path] != shape:
            raise ValueError(f"{where} holds parameter {path} as {list(saved[path])}, the model as {list(shape)}")
    modules = {path.rpartition("/")[0] for path in wanted}
    extra = [path for path in saved if path.rpartition("/")[0] in modules and path not in wanted]
    if extra:
        raise ValueError(f"{where} holds parameter {extra[0]} {list(saved[extra[0]])}, which the model does not have")


def restore_init_from(path: str, params, param_shardings, *, fresh: tuple[str, ...] = ()):
    """The parameters of a new run started from `checkpoint.init_from`: every top-level subtree of `params` (the run's
    initialised parameters) except those named in `fresh` is read from the checkpoint (check_params_match first:
    one line naming a missing, misshaped or extra parameter); the `fresh` ones (a fine-tuning head) keep their
    initialisation."""
    path = resolve_init_from(path)
    read = {name: subtree for name, subtree in params.items() if name not in fresh}
    flat = jax.tree_util.tree_flatten_with_path(read)[0]
    check_params_match(path, {_path(keys): tuple(leaf.shape) for keys, leaf in flat})
    shardings = {name: subtree for name, subtree in param_shardings.items() if name not in fresh}
    restored = read_params(path, read, shardings)
    return {name: restored[name] if name in restored else subtree for name, subtree in params.items()}


def read_params(path: str, abstract_params, param_shardings):
    """Only the `params` of the state in step directory `path`: of a run's TrainState, or of a params-only
    checkpoint (`{"params": ...}`, as lmx.convert.hf writes), restored into `param_shardings`."""
    target = {
        "params": jax.tree.map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            abstract_params,
            param_shardings,
        )
    }
    args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
    )
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(epath.Path(path) / "state", args=args)["params"]


def save(
    manager: ocp.CheckpointManager, step: int, state, data_iterator, config, *, best_metric: float | None = None
) -> None:
    """Starts saving a checkpoint (asynchronously if configured); the data position is captured now. best_metric:
    the fine-tuning selection metric evaluated at this step (a manager with keep_best keeps its best step)."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=DataIteratorSave(data_iterator),
            config=ocp.args.JsonSave(json.loads(config.to_json())),
        ),
        metrics=None if best_metric is None else {BEST_METRIC: float(best_metric), "step": int(step)},
        force=True,
    )


def _without_abandoned_reads(hook):
    """`hook` (sys.unraisablehook) minus the echoes of a failed restore: when one read of a damaged file fails,
    orbax closes its event loop while tensorstore is still completing the other reads, and each completion, unable
    to reach the closed loop, reports `RuntimeError: Event loop is closed` as unraisable (a bare traceback on
    stderr). Left in place after a failure, as those echoes may come until the process ends."""

    def filtered(unraisable):
        if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"):
            hook(unraisable)

    return filtered


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, state_shardings, data_iterator):
    """Restores the state straight into `state_shardings` and rewinds `data_iterator` to the saved position.

    Missing files and data positions of another number of input shards are found first, from directory entries
    (UnreadableCheckpoint naming the step and the way on), before orbax reads anything.
    """
    step_dir = os.path.join(os.fspath(manager.directory), str(step))
    check_step_files(step_dir)
    try:
        data_iterator.check_saved(os.path.join(step_dir, "data"))
    except FileNotFoundError as e:  # a file missing from an otherwise complete step: damage
        raise UnreadableCheckpoint(f"checkpoint {step_dir} is damaged: {e}; {fallback(step_dir)}") from e
    except ValueError as e:  # positions of another config.data.input_shards: a config to fix, not damage
        raise UnreadableCheckpoint(f"checkpoint {step_dir} cannot be resumed by this run: {e}") from e
    target = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_state,
        state_shardings,
    )
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _without_abandoned_reads(previous_hook)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=DataIteratorRestore(data_iterator)),
        )
        sys.unraisablehook = previous_hook
    except Exception as e:  # orbax/tensorstore/tf raise many types for damaged files; all mean the same here
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        unreadable = UnreadableCheckpoint(
            f"checkpoint {step_dir} is unreadable ({type(e).__name__}: {first_line[:300]}); {fallback(step_dir)}"
        )
        unreadable.reads_started = True
        raise unreadable from e
    return restored["state"]
