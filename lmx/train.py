"""python -m lmx.train --config=configs/t5_tiny.py --workdir=DIR [--config.a.b=value ...] [--verbose]

The loop, in data-flow order: mesh -> data -> model and optimizer -> shapes and shardings -> restore -> loop.
Running the same command again resumes from the latest complete checkpoint in DIR.
"""

# ruff: noqa: E402 (the CLI hides TensorFlow's native start-up logs before the imports below load it)
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time

from lmx import quiet

if __name__ == "__main__" and not any(arg.split("=")[0] in ("--verbose", "-verbose") for arg in sys.argv):
    quiet.hold_native_stderr()  # released by run(), or shown with the traceback if an import fails

import flax.linen as nn
import jax
import ml_collections
import optax

from lmx import checkpoint, cli, config_lib, flops, metrics, objectives, optim, sharding, step
from lmx import preemption as preemption_lib
from lmx import workdir as workdir_lib
from lmx.config_lib import ConfigError
from lmx.data import pipeline, tasks, vocab
from lmx.finetune.session import FineTuning
from lmx.finetune.session import validate as validate_finetune
from lmx.models import build_model
from lmx.models.options import check_model_config
from lmx.nonfinite import NonFiniteGuard

EXIT_BAD_INPUT = cli.EXIT_BAD_INPUT  # lmx.bench refuses bad input with lmx.train's status


def validate(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses a config that cannot work, before any data is read or anything is compiled."""
    config_lib.check_fields(config)  # every field's type and range (config_lib.FIELDS)
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
    check_model_config(config.model)
    if config.finetune.task:  # fine-tuning: the task, its format, lengths, layer decay, init_from's family
        validate_finetune(config)
    else:
        objectives.check(config.data.objective, config.model.name)
        for feature, length in tasks.model_feature_lengths(config.data).items():
            if feature.endswith("_input_tokens") and length > config.model.max_length:
                raise ConfigError(
                    f"{feature} of length {length} is over config.model.max_length={config.model.max_length}; "
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
    objective: objectives.Objective
    init_fn: object
    init_key: jax.Array
    dropout_key: jax.Array
    abstract_state: step.TrainState
    state_shardings: step.TrainState
    batch_sharding: jax.sharding.NamedSharding
    train_iter: pipeline.DataIterator | None  # None when built with_data=False
    eval_dataset: dict | None  # input shard -> validation tf.data.Dataset of this process
    num_params: int
    finetune: FineTuning | None = None  # a fine-tuning run's task, evaluation and best tracking (lmx.finetune)


def setup(config: ml_collections.ConfigDict, workdir: str, *, with_data: bool = True) -> Run:
    """Mesh, data, model, optimizer, shapes and shardings. Raises ValueError/FileNotFoundError on bad input,
    having written nothing into `workdir`. with_data=False (lmx.bench on synthetic batches) skips the vocabulary
    and the input pipelines: `train_iter` and `eval_dataset` are then None."""
    workdir = os.path.abspath(workdir)
    validate(config, workdir)
    finetune = FineTuning.prepare(config) if config.finetune.task else None
    config = finetune.config if finetune else config  # train.steps from finetune.epochs

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
        if finetune:
            train_iter = finetune.train_iterator(vocabulary, batch_sharding)
        else:
            train_iter = pipeline.make_iterator(config, batch_sharding, split="train", shuffle=True)
    if with_data and config.train.eval_steps > 0 and not finetune:
        eval_dataset = pipeline.make_datasets(config, batch_sharding, split="validation", shuffle=False)

    # Model and optimizer (fine-tuning: a head on the body or the model itself, the task's objective).
    model = finetune.build_model() if finetune else build_model(config.model)
    objective = finetune.objective if finetune else objectives.OBJECTIVES[config.data.objective]
    init_inputs = step.init_batch(finetune.feature_lengths if finetune else tasks.model_feature_lengths(config.data))
    root_key = jax.random.key(config.train.seed)
    init_key, dropout_key = jax.random.fold_in(root_key, 0), jax.random.fold_in(root_key, 1)
    init_params_fn = functools.partial(step.init_params, model=model, init_batch=init_inputs)
    # Adafactor factors each parameter by its logical axis names (abstract: nothing is allocated).
    boxed = jax.eval_shape(init_params_fn, init_key)
    param_axes = nn.get_partition_spec(boxed)
    if finetune:  # the head's learning rate, layer-wise decay
        tx, schedule = finetune.make_optimizer(param_axes, nn.unbox(boxed))
    else:
        tx, schedule = optim.make_optimizer(config.optim, config.train.steps, param_axes)

    # Shapes and shardings: nothing is allocated until the jitted init writes straight into its shardings.
    init_fn = functools.partial(
        step.init_state, model=model, tx=tx, init_batch=init_inputs, rows=config.train.batch_size
    )
    abstract_state, state_shardings = step.abstract_state_and_shardings(init_fn, init_params_fn, init_key, mesh, rules)
    if finetune and with_data:
        finetune.attach_evaluator(vocabulary, model, (mesh, rules, batch_sharding, state_shardings.params))
    return Run(
        config=config,
        workdir=workdir,
        mesh=mesh,
        rules=rules,
        model=model,
        tx=tx,
        schedule=schedule,
        objective=objective,
        init_fn=init_fn,
        init_key=init_key,
        dropout_key=dropout_key,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        train_iter=train_iter,
        eval_dataset=eval_dataset,
        num_params=count_params(abstract_state.params),
        finetune=finetune,
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
            objective=run.objective,
            model_config=run.config.model,
            train_config=run.config.train,
        ),
        in_shardings=(run.state_shardings, run.batch_sharding, replicated),
        out_shardings=(run.state_shardings, replicated),
        donate_argnums=(0,),
    )


def loop(run: Run) -> dict[str, float]:
    """Lock the workdir, restore or initialise, then step, log, evaluate and checkpoint until config.train.steps.

    On SIGTERM or SIGINT (from the start of this function on) the step in flight finishes, a checkpoint is written
    and preemption.Preempted is raised. Returns the last eval metrics.
    """
    lock = workdir_lib.WorkdirLock(run.workdir)
    preemption = preemption_lib.PreemptionWatcher(before_exit=lock.release)
    try:
        error = None
        if jax.process_index() == 0:  # one writer per workdir: the lead process holds the lock for all
            try:
                lock.acquire()
            except workdir_lib.WorkdirError as e:
                error = e
        workdir_lib.agree(error)
        return _train(run, preemption)
    finally:
        lock.release()
        preemption.close()


def _train(run: Run, preemption: preemption_lib.PreemptionWatcher) -> dict[str, float]:
    config, workdir, mesh = run.config, run.workdir, run.mesh
    is_lead = jax.process_index() == 0
    started = time.time()

    # Restore or initialise (before writing anything, so a checkpoint that cannot be read costs nothing).
    fine = run.finetune
    manager = checkpoint.make_manager(workdir, config.checkpoint, keep_best=fine is not None)
    start = manager.latest_step()
    if start is not None:
        state = checkpoint.restore(manager, start, run.abstract_state, run.state_shardings, run.train_iter)
        resumed = f"Resumed from {checkpoint.checkpoint_dir(workdir)}/{start}"
    else:
        with jax.set_mesh(mesh), nn.logical_axis_rules(run.rules):
            state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(run.init_key)
        start, resumed = 0, None
        if config.checkpoint.init_from:  # fine-tuning: the body from the checkpoint, the head (fine.fresh) fresh
            fresh = fine.fresh if fine else ()
            params = checkpoint.restore_init_from(
                config.checkpoint.init_from, state.params, run.state_shardings.params, fresh=fresh
            )
            state = state.replace(params=params)
            resumed = f"Parameters from {checkpoint.resolve_init_from(config.checkpoint.init_from)}" + (
                f" (fresh: {', '.join(fresh)})" if fresh else ""
            )
    writer = metrics.MetricWriter(workdir, enabled=is_lead, start_step=start, started=started)
    if resumed:
        writer.text(resumed)
    if is_lead:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
    tokens_per_step = config.train.batch_size * (
        fine.tokens_per_row if fine else tasks.input_tokens_per_row(config.data)
    )
    platform, device_kind = jax.devices()[0].platform, jax.devices()[0].device_kind
    # lmx.flops counts the pretraining objectives' models: no MFU for fine-tuning
    peak = None if fine else metrics.peak_flops_per_device(device_kind, config.model.dtype)
    flops_per_step = flops.train_flops_per_step(config)["total"] if peak else 0.0
    writer.text(
        f"model {config.model.name}: {run.num_params:,} parameters ({run.num_params / 1e6:.1f}M); "
        f"mesh {dict(mesh.shape)}; {tokens_per_step:,} tokens per step (input positions, padding included); "
        f"{jax.device_count()} {platform} devices{'' if device_kind == platform else f' ({device_kind})'} in "
        f"{jax.process_count()} processes"
        + (f"; MFU against {peak / 1e12:g} TFLOP/s per device" if peak else "; no published peak: MFU not logged")
    )

    # The jitted steps: static parts bound with partial, shardings explicit, the old state donated.
    replicated = sharding.replicated(mesh)
    train_step = jit_train_step(run)
    eval_step = jax.jit(
        functools.partial(step.eval_step, model=run.model, objective=run.objective, train_config=config.train),
        in_shardings=(run.state_shardings.params, run.batch_sharding),
        out_shardings=replicated,
    )

    def evaluate(params) -> dict[str, float]:
        if fine:  # the task's metrics on the whole validation split
            return fine.evaluate(params)
        # The validation stream restarts each time, so every evaluation sees the same batches.
        totals = None
        eval_iter = pipeline.DataIterator(run.eval_dataset)
        for _ in range(config.train.eval_steps):
            batch = sharding.global_batch_from_host(next(eval_iter), run.batch_sharding)
            sums = jax.device_get(eval_step(params, batch))
            totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
        coefficients = objectives.all_coefficients(run.objective, config.model, config.train)
        return step.finalize_eval(totals, coefficients, run.objective.main_metric)

    # The loop.
    total = config.train.steps
    eval_metrics: dict[str, float] = {}
    train_values: dict[str, float] = {}
    if start >= total:
        writer.text(f"Training already complete: checkpoint at step {start} >= config.train.steps={total}")
    bar = metrics.progress_bar(start, total, enabled=is_lead and config.train.progress_bar)
    throughput = metrics.Throughput(
        start,
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_per_step,
        peak_flops=peak * jax.device_count() if peak else None,
    )
    guard = NonFiniteGuard(config.train.on_nonfinite)
    checkpoints = checkpoint.checkpoint_dir(workdir)
    current = start
    # Fine-tuning: the best evaluation so far and early stopping (rebuilt from metrics.jsonl when resuming).
    tracker = fine.tracker(workdir, start) if fine else None
    stopped = bool(tracker and tracker.should_stop)
    if stopped:
        writer.text(f"Training already stopped early at step {start}: {tracker.describe()}")
    first_step_started = time.perf_counter()
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(run.rules):
            while current < total and not stopped:
                batch = sharding.global_batch_from_host(next(run.train_iter), run.batch_sharding)
                state, train_metrics = train_step(state, batch, run.dropout_key)
                current += 1
                guard.add(current, train_metrics)
                bar.update(1)
                if current == start + 1:
                    jax.block_until_ready(train_metrics)
                    writer.text(f"First step (compile + run) took {time.perf_counter() - first_step_started:.1f}s")
                    throughput.restart(current)  # the rates measure steps, not the compilation
                preempted = preemption.reached(current)
                if current % config.train.log_every == 0 or current in (1, total):  # step 1: the initial loss
                    guard.check()
                    train_values = metrics.to_python(train_metrics)
                    train_values.update(throughput.update(current))  # nothing until a step was measured
                    writer.write(current, train_values, prefix="train")
                    bar.set_postfix(loss=f"{train_values['loss']:.3f}")
                selection = None  # fine-tuning: this step's selection metric, saved with its checkpoint
                if (run.eval_dataset is not None or fine) and (
                    (config.train.eval_every and current % config.train.eval_every == 0) or current == total
                ):
                    eval_metrics = evaluate(state.params)
                    writer.write(current, eval_metrics, prefix="eval")
                    if tracker:
                        tracker.add(current, eval_metrics)
                        selection, stopped = eval_metrics[tracker.metric], tracker.should_stop
                        writer.text(f"step {current}: {tracker.describe()}" + ("; stopping early" if stopped else ""))
                    throughput.restart(current)  # keep evaluation time out of the train rates
                if (
                    current % config.checkpoint.every_steps == 0
                    or current == total
                    or preempted
                    or selection is not None
                ):
                    guard.check()  # never checkpoint a state that followed a non-finite step
                    checkpoint.save(manager, current, state, run.train_iter, config, best_metric=selection)
                    background = " (written in the background)" if config.checkpoint.async_save else ""
                    writer.text(f"Checkpoint of step {current}: {checkpoints}/{current}{background}")
                if preempted:
                    writer.text(f"Stopping after step {current} on a signal; its checkpoint is written")
                    break
    finally:
        bar.close()
        manager.wait_until_finished()
        manager.close()
        writer.close()
    if preemption.received:
        raise preemption.stopped(current)
    if tracker and is_lead:
        path = fine.write_results(workdir, tracker, steps=current, wall_s=writer.elapsed())
        writer.text(f"Results: {path} ({tracker.describe()}; checkpoint {checkpoints}/{tracker.best_step})")
    losses = [f"train loss {train_values['loss']:.4g}"] if train_values else []
    losses += [f"eval loss {eval_metrics['loss']:.4g}"] if eval_metrics else []
    writer.text(
        f"Done: steps {start} -> {current} in {time.time() - started:.1f}s "
        f"({writer.elapsed():.1f}s of training over all invocations); {'; '.join(losses) or 'no step run'}; "
        f"checkpoint {checkpoints}/{current}"
    )
    return eval_metrics


def run_cli(config: ml_collections.ConfigDict, workdir: str, **multi_process) -> int:
    """What `python -m lmx.train` does once its flags are parsed (lmx.cli): setup and loop, every ending mapped to at
    most one line on stderr and the documented exit status, which it returns."""
    return cli.run_cli(config, workdir, setup=setup, loop=loop, **multi_process)


def run(argv: list[str] | None = None) -> None:
    """The entry point of `python -m lmx.train` (flags and exit statuses: lmx.cli)."""
    cli.run(run_cli, argv)


if __name__ == "__main__":
    run()
