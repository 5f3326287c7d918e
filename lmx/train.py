"""python -m lmx.train --config=configs/t5_tiny.py --workdir=DIR [--config.a.b=value ...]

The loop, in data-flow order: mesh -> data -> model and optimizer -> shapes and shardings -> restore -> loop.
Running the same command again resumes from the latest complete checkpoint in DIR.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time

import flax.linen as nn
import jax
import ml_collections
import optax

from lmx import checkpoint, config_lib, distributed, metrics, objectives, optim, sharding, step
from lmx import preemption as preemption_lib
from lmx.config_lib import ConfigError
from lmx.data import pipeline, tasks, vocab
from lmx.models import build_model

# Exit statuses (documented in the README): 0 done, 2 bad input (nothing written), 3 stopped on a non-finite
# loss or gradient (no checkpoint of it), 143 = 128 + SIGTERM: preempted after writing a checkpoint.
EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 143


def validate(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses a config that cannot work, before any data is read or anything is compiled."""
    mesh_sizes = sharding.mesh_shape(config.mesh, jax.device_count())
    rules = sharding.rules_of(config)
    dp = 1
    for axis in sharding.mesh_axes_of("batch", rules):
        dp *= mesh_sizes[axis]
    t = config.train
    if t.steps <= 0:
        raise ConfigError(f"config.train.steps={t.steps} must be positive")
    if t.batch_size % dp:
        raise ConfigError(
            f"config.train.batch_size={t.batch_size} is not divisible by the data-parallel size {dp} "
            f"(mesh {mesh_sizes}); use a multiple of {dp}"
        )
    if t.microbatches < 1 or t.batch_size % (t.microbatches * dp):
        raise ConfigError(
            f"config.train.microbatches={t.microbatches} must divide batch_size={t.batch_size} into microbatches "
            f"that are multiples of the data-parallel size {dp}"
        )
    if t.batch_size % jax.process_count():
        raise ConfigError(
            f"config.train.batch_size={t.batch_size} is not divisible by the {jax.process_count()} processes"
        )
    if config.data.objective not in objectives.OBJECTIVES:
        raise ConfigError(
            f"config.data.objective={config.data.objective!r} is unknown; choose one of {sorted(objectives.OBJECTIVES)}"
        )
    fits = objectives.OBJECTIVE_MODELS[config.data.objective]
    if config.model.name not in fits:
        raise ConfigError(
            f"config.data.objective={config.data.objective!r} needs a model in {list(fits)}, "
            f"not config.model.name={config.model.name!r}"
        )
    longest = max(config.data.inputs_length, config.data.targets_length)
    if longest > config.model.max_length:
        raise ConfigError(
            f"sequence length {longest} is over config.model.max_length={config.model.max_length}; "
            "shorten config.data.inputs_length/targets_length or raise max_length"
        )
    latest = checkpoint.latest_step(workdir)
    if latest is not None:
        checkpoint.check_compatible(workdir, latest, config.model)
    if config.checkpoint.init_from:
        checkpoint.check_init_from(config.checkpoint.init_from, config.model)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


@dataclasses.dataclass
class Run:
    """Everything the loop needs, built and checked before anything is compiled."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    rules: sharding.Rules
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    loss_fn: object
    init_fn: object
    init_key: jax.Array
    dropout_key: jax.Array
    abstract_state: step.TrainState
    state_shardings: step.TrainState
    batch_sharding: jax.sharding.NamedSharding
    train_iter: pipeline.DataIterator | None  # None when built with_data=False
    eval_dataset: dict | None  # input shard -> validation tf.data.Dataset of this process
    num_params: int


def setup(config: ml_collections.ConfigDict, workdir: str, *, with_data: bool = True) -> Run:
    """Mesh, data, model, optimizer, shapes and shardings. Raises ValueError/FileNotFoundError on bad input,
    having written nothing into `workdir`. with_data=False (lmx.bench on synthetic batches) skips the vocabulary
    and the input pipelines: `train_iter` and `eval_dataset` are then None."""
    workdir = os.path.abspath(workdir)
    validate(config, workdir)

    # Mesh.
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.rules_of(config)
    batch_sharding = sharding.batch_sharding(mesh, rules)

    # Data: the vocabulary must fit the embedding before anything is built.
    train_iter = eval_dataset = None
    if with_data:
        vocabulary = vocab.get_vocabulary(config.data)
        if vocabulary.vocab_size > config.model.vocab_size:
            raise ConfigError(
                f"the vocabulary has {vocabulary.vocab_size} ids (pieces + {config.data.extra_ids} sentinels) but "
                f"config.model.vocab_size={config.model.vocab_size}; set vocab_size >= {vocabulary.vocab_size}"
            )
        train_iter = pipeline.make_iterator(config, batch_sharding, split="train", shuffle=True)
    if with_data and config.train.eval_steps > 0:
        eval_dataset = pipeline.make_datasets(config, batch_sharding, split="validation", shuffle=False)

    # Model and optimizer.
    model = build_model(config.model)
    tx, schedule = optim.make_optimizer(config.optim, config.train.steps)
    loss_fn = objectives.get_objective(config.data.objective)
    init_inputs = objectives.init_inputs(config.model.name, config.data)

    # Shapes and shardings: nothing is allocated until the jitted init writes straight into its shardings.
    root_key = jax.random.key(config.train.seed)
    init_key, dropout_key = jax.random.fold_in(root_key, 0), jax.random.fold_in(root_key, 1)
    init_fn = functools.partial(step.init_state, model=model, tx=tx, init_batch=init_inputs)
    init_params_fn = functools.partial(step.init_params, model=model, init_batch=init_inputs)
    abstract_state, state_shardings = step.abstract_state_and_shardings(init_fn, init_params_fn, init_key, mesh, rules)
    return Run(
        config=config,
        workdir=workdir,
        mesh=mesh,
        rules=rules,
        model=model,
        tx=tx,
        schedule=schedule,
        loss_fn=loss_fn,
        init_fn=init_fn,
        init_key=init_key,
        dropout_key=dropout_key,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        train_iter=train_iter,
        eval_dataset=eval_dataset,
        num_params=count_params(abstract_state.params),
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the last eval metrics."""
    return loop(setup(config, workdir))


def jit_train_step(run: Run):
    """The jitted train step of `run` (lmx.train's loop and lmx.bench share it): static parts bound with partial,
    shardings explicit, the old state donated. Call, lower or compile it under the run's mesh and rules."""
    replicated = sharding.replicated(run.mesh)
    return jax.jit(
        functools.partial(
            step.train_step,
            model=run.model,
            tx=run.tx,
            schedule=run.schedule,
            loss_fn=run.loss_fn,
            train_config=run.config.train,
        ),
        in_shardings=(run.state_shardings, run.batch_sharding, replicated),
        out_shardings=(run.state_shardings, replicated),
        donate_argnums=(0,),
    )


def loop(run: Run) -> dict[str, float]:
    """Restore or initialise, then step, log, evaluate and checkpoint until config.train.steps."""
    config, workdir, mesh = run.config, run.workdir, run.mesh
    is_lead = jax.process_index() == 0

    # Restore or initialise (before writing anything, so a checkpoint that cannot be read costs nothing).
    manager = checkpoint.make_manager(workdir, config.checkpoint)
    start = manager.latest_step()
    if start is not None:
        state = checkpoint.restore(manager, start, run.abstract_state, run.state_shardings, run.train_iter)
        resumed = f"Resumed from {checkpoint.checkpoint_dir(workdir)}/{start}"
    else:
        with jax.set_mesh(mesh), nn.logical_axis_rules(run.rules):
            state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(run.init_key)
        if config.checkpoint.init_from:
            params = checkpoint.restore_params(config.checkpoint.init_from, run.abstract_state, run.state_shardings)
            state = state.replace(params=params)
        start, resumed = 0, None
    writer = metrics.MetricWriter(workdir, enabled=is_lead)
    if resumed:
        writer.text(resumed)
    if is_lead:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
    tokens_per_step = config.train.batch_size * sum(tasks.task_feature_lengths(config.data).values())
    writer.text(
        f"model {config.model.name}: {run.num_params:,} parameters ({run.num_params / 1e6:.1f}M); "
        f"mesh {dict(mesh.shape)}; {tokens_per_step:,} tokens per step; "
        f"{jax.device_count()} {jax.devices()[0].platform} devices in {jax.process_count()} processes"
    )

    # The jitted steps: static parts bound with partial, shardings explicit, the old state donated.
    replicated = sharding.replicated(mesh)
    train_step = jit_train_step(run)
    eval_step = jax.jit(
        functools.partial(step.eval_step, model=run.model, loss_fn=run.loss_fn, train_config=config.train),
        in_shardings=(run.state_shardings.params, run.batch_sharding),
        out_shardings=replicated,
    )

    def evaluate(params) -> dict[str, float]:
        # The validation stream restarts each time, so every evaluation sees the same batches.
        totals: dict[str, float] = {}
        eval_iter = pipeline.DataIterator(run.eval_dataset)
        for _ in range(config.train.eval_steps):
            batch = sharding.global_batch_from_host(next(eval_iter), run.batch_sharding)
            for name, value in metrics.to_python(eval_step(params, batch)).items():
                totals[name] = totals.get(name, 0.0) + value
        return step.finalize_eval(totals)

    # The loop.
    total = config.train.steps
    eval_metrics: dict[str, float] = {}
    if start >= total:
        writer.text(f"Training already complete: checkpoint at step {start} >= config.train.steps={total}")
    bar = metrics.progress_bar(start, total, enabled=is_lead and config.train.progress_bar)
    throughput = metrics.Throughput(start)
    guard = NonFiniteGuard(config.train.on_nonfinite)
    preemption = preemption_lib.PreemptionWatcher()
    current = start
    first_step_started = time.perf_counter()
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(run.rules):
            while current < total:
                batch = sharding.global_batch_from_host(next(run.train_iter), run.batch_sharding)
                state, train_metrics = train_step(state, batch, run.dropout_key)
                current += 1
                guard.add(current, train_metrics)
                bar.update(1)
                if current == start + 1:
                    jax.block_until_ready(train_metrics)
                    writer.text(f"First step (compile + run) took {time.perf_counter() - first_step_started:.1f}s")
                    throughput = metrics.Throughput(current)
                preempted = preemption.reached(current)
                if current % config.train.log_every == 0 or current in (1, total):  # step 1: the initial loss
                    guard.check()
                    values = metrics.to_python(train_metrics)
                    values.update(throughput.update(current, tokens_per_step))
                    writer.write(current, values, prefix="train")
                    bar.set_postfix(loss=f"{values['loss']:.3f}", tok_s=f"{values['tokens_per_s']:.0f}")
                if run.eval_dataset is not None and (
                    (config.train.eval_every and current % config.train.eval_every == 0) or current == total
                ):
                    eval_metrics = evaluate(state.params)
                    writer.write(current, eval_metrics, prefix="eval")
                    throughput = metrics.Throughput(current)  # keep evaluation time out of the train rate
                if current % config.checkpoint.every_steps == 0 or current == total or preempted:
                    guard.check()  # never checkpoint a state that followed a non-finite step
                    checkpoint.save(manager, current, state, run.train_iter, config)
                if preempted:
                    writer.text(f"Preempted (SIGTERM): checkpoint written at step {current}; exiting")
                    break
    finally:
        bar.close()
        manager.wait_until_finished()
        manager.close()
        writer.close()
        preemption.close()
    if preemption.received:
        raise preemption_lib.Preempted(current)
    return eval_metrics


class NonFinite(RuntimeError):
    """The run produced a non-finite loss or gradient norm and config.train.on_nonfinite == "stop"."""


class NonFiniteGuard:
    """Watches each step's `nonfinite` flag without a host sync per step: flags are read at check points."""

    def __init__(self, mode: str):
        if mode not in ("stop", "skip"):
            raise ConfigError(f"config.train.on_nonfinite={mode!r} is unknown; choose 'stop' or 'skip'")
        self.mode = mode
        self._pending: list[tuple[int, dict]] = []

    def add(self, step_number: int, step_metrics) -> None:
        self._pending.append((step_number, step_metrics))

    def check(self) -> None:
        pending, self._pending = self._pending, []
        if self.mode == "skip":
            return
        for step_number, step_metrics in pending:
            values = metrics.to_python(
                {k: step_metrics[k] for k in ("nonfinite", "loss", "grad_norm", "update_norm", "param_norm")}
            )
            if values["nonfinite"]:
                bad = ", ".join(f"{k}={v}" for k, v in values.items() if k != "nonfinite" and not math.isfinite(v))
                raise NonFinite(
                    f"step {step_number}: {bad or 'a non-finite value'}; the update was dropped and no checkpoint "
                    "of it written. Lower config.optim.learning_rate, or set config.train.on_nonfinite=skip"
                )


def main(argv) -> None:
    from absl import flags, logging

    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    config = flags.FLAGS.config
    workdir = flags.FLAGS.workdir
    try:
        distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id)
    except ValueError as e:
        print(f"lmx.train: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        run = setup(config, workdir)
    except (ValueError, FileNotFoundError) as e:  # bad input found before compiling: one line, nothing written
        print(f"lmx.train: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        loop(run)
    except checkpoint.UnreadableCheckpoint as e:
        print(f"lmx.train: error: {e}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Nothing was written; skip interpreter teardown, where tensorstore's pending reads of the damaged files
        # would print tracebacks into closed event loops after our one-line message.
        os._exit(EXIT_BAD_INPUT)
    except NonFinite as e:
        print(f"lmx.train: error: {e}", file=sys.stderr)
        sys.exit(EXIT_NONFINITE)
    except preemption_lib.Preempted as e:
        print(f"lmx.train: {e}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    try:
        config_lib.check_overrides(sys.argv[1:])
    except ConfigError as e:
        print(f"lmx.train: error: {e}", file=sys.stderr)
        sys.exit(2)

    config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard and config.json.")
    flags.DEFINE_string("coordinator_address", None, "Multi-process: HOST:PORT of process 0's coordinator.")
    flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes take part.")
    flags.DEFINE_integer("process_id", None, "Multi-process: this process's index in [0, num_processes).")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
