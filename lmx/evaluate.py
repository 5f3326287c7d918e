"""python -m lmx.evaluate --config=configs/finetune_<task>.py[:arg] --checkpoint=WORKDIR/checkpoints/<step>
       [--split=validation|train] [--output=FILE.json] [--config.a.b=value ...] [--verbose]

Evaluation only: scores the checkpoint's model on config.finetune.task's split with the task's metrics (the same
Evaluator as lmx.train's fine-tuning evaluations: lmx.finetune.evaluation), prints a table (metric | value) and, with
--output, writes {"task", "split", "checkpoint", "metrics": {...}} as JSON. --checkpoint may also be a run's workdir
(its latest step). A classifier needs a fine-tuned checkpoint (with its `classifier_head`); a text-to-text model
can be scored from any checkpoint of its architecture, a pretraining one included (zero-shot). Nothing is written
next to the checkpoint.

Bad input (a config without a task, a checkpoint that is missing, of another architecture or without a head) is one
line `lmx.evaluate: error: ...` and exit status 2.
"""

# ruff: noqa: E402 (the CLI hides TensorFlow's native start-up logs before the imports below load it)
from __future__ import annotations

import sys

from lmx import quiet

if __name__ == "__main__" and not any(arg.split("=")[0] in ("--verbose", "-verbose") for arg in sys.argv):
    quiet.hold_native_stderr()

import json
import os

import jax
import ml_collections

from lmx import checkpoint, cli, config_lib, train
from lmx.config_lib import ConfigError
from lmx.data import vocab
from lmx.finetune import session
from lmx.models.heads import HEAD

PROG = "lmx.evaluate"
SPLITS = ("validation", "train")


def evaluate(config: ml_collections.ConfigDict, checkpoint_path: str, split: str = "validation") -> dict[str, float]:
    """{metric: value, "loss", "examples"} of the checkpoint's params on `split` of config.finetune.task. Raises
    ValueError / FileNotFoundError (one line) for bad input, before compiling anything."""
    if not config.finetune.task:
        raise ConfigError(
            "config.finetune.task is empty: lmx.evaluate scores a downstream task; pass a fine-tuning config "
            "(configs/finetune_<task>.py:<model>) or set --config.finetune.task"
        )
    if split not in SPLITS:
        raise ConfigError(f"--split={split!r} is unknown; choose one of {list(SPLITS)}")
    step_dir = checkpoint.resolve_init_from(checkpoint_path)
    if not os.path.isdir(os.path.join(step_dir, "state")) or not os.path.basename(step_dir).isdigit():
        raise FileNotFoundError(
            f"--checkpoint={checkpoint_path} is not a checkpoint step directory (no {step_dir}/state); pass "
            "WORKDIR/checkpoints/<step> of a fine-tuning run, or WORKDIR for its latest step"
        )
    config = ml_collections.ConfigDict(config.to_dict())
    config.checkpoint.init_from = ""  # the pretraining checkpoint a fine-tuning config names is not needed here
    workdir, step = os.path.dirname(os.path.dirname(step_dir)), int(os.path.basename(step_dir))
    session.check_family(step_dir, config.model.name, "--checkpoint")
    checkpoint.check_compatible(workdir, step, config.model)
    run = train.setup(config_lib.lock(config), workdir, with_data=False)  # reads nothing of the run, writes nothing
    flat = jax.tree_util.tree_flatten_with_path(run.abstract_state.params)[0]
    wanted = {"/".join(str(k.key) for k in keys): tuple(leaf.shape) for keys, leaf in flat}
    if run.finetune.fresh and not any(p.startswith(f"{HEAD}/") for p in checkpoint.saved_param_shapes(step_dir)):
        raise ValueError(
            f"--checkpoint={step_dir} has no {HEAD}: it is not a fine-tuned classifier (a pretraining checkpoint?); "
            "evaluate WORKDIR/checkpoints/<step> of `lmx.train` with this fine-tuning config"
        )
    checkpoint.check_params_match(step_dir, wanted, "--checkpoint")
    params = checkpoint.read_params(step_dir, run.abstract_state.params, run.state_shardings.params)
    vocabulary = vocab.get_vocabulary(run.config.data)
    evaluator = run.finetune.attach_evaluator(
        vocabulary, run.model, (run.mesh, run.rules, run.batch_sharding, run.state_shardings.params)
    )
    return evaluator(params, split)


def table(values: dict[str, float]) -> str:
    """The metrics as a two-column table (metric | value)."""
    width = max(len("metric"), *(len(name) for name in values))
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 10}"]
    lines += [
        f"{name:<{width}}  {value:.4f}" if name != "examples" else f"{name:<{width}}  {int(value)}"
        for name, value in values.items()
    ]
    return "\n".join(lines)


def run_cli(config: ml_collections.ConfigDict, checkpoint_path: str, split: str, output: str | None) -> int:
    """Evaluates and prints; every bad input is one line on stderr and exit status 2 (returned)."""
    try:
        values = evaluate(config, checkpoint_path, split)
    except (ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return cli.EXIT_BAD_INPUT
    if jax.process_index() == 0:
        print(f"{config.finetune.task} {split}, checkpoint {checkpoint.resolve_init_from(checkpoint_path)}")
        print(table(values))
        if output:
            record = {
                "task": config.finetune.task,
                "split": split,
                "checkpoint": checkpoint.resolve_init_from(checkpoint_path),
                "metrics": values,
            }
            with open(output, "w") as f:
                json.dump(record, f, indent=2)
                f.write("\n")
    return 0


def run(argv: list[str] | None = None) -> None:
    """The entry point of `python -m lmx.evaluate`."""
    from absl import app, flags
    from ml_collections import config_flags

    quiet.release_native_stderr()
    argv = sys.argv if argv is None else argv
    try:
        config_lib.check_overrides(argv[1:])
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(cli.EXIT_BAD_INPUT)
    config_flags.DEFINE_config_file(
        "config", None, "A fine-tuning config (configs/finetune_*.py:arg).", lock_config=True
    )
    flags.DEFINE_string("checkpoint", None, "WORKDIR/checkpoints/<step> (or WORKDIR: its latest step).")
    flags.DEFINE_string("split", "validation", f"The split to score: one of {list(SPLITS)}.")
    flags.DEFINE_string("output", None, "Also write the metrics as JSON to this file.")
    flags.DEFINE_boolean("verbose", False, "Show TensorFlow's, seqio's, absl's and orbax's logs (hidden by default).")
    flags.mark_flags_as_required(["config", "checkpoint"])

    def main(_):
        f = flags.FLAGS
        quiet.configure_logging(verbose=f.verbose)
        status = run_cli(f.config, f.checkpoint, f.split, f.output)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # skip TensorFlow's and XLA's slow native teardown (as lmx.train)

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            problems = "; ".join(line.strip().rstrip(".") for line in str(e).splitlines() if line.strip())
            print(f"{PROG}: error: {problems}", file=sys.stderr)
            sys.exit(cli.EXIT_BAD_INPUT)

    app.run(main, argv=argv, flags_parser=parse)


if __name__ == "__main__":
    run()
