"""The command line of `python -m lmx.train`: flags, and every way a run ends mapped to one line on stderr and an
exit status (documented in the README):

    0    done (or found done)
    2    bad input, found before compiling: a config value, file, workdir or checkpoint; nothing was written
    3    a non-finite loss or norm with config.train.on_nonfinite=stop (no checkpoint of it)
    130  Ctrl-C (SIGINT): a checkpoint of the step was written; a second Ctrl-C exits at once, also 130
    143  preempted (SIGTERM): a checkpoint of the step was written
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import jax
import ml_collections

from lmx import checkpoint, config_lib, distributed, quiet
from lmx import preemption as preemption_lib
from lmx import workdir as workdir_lib
from lmx.config_lib import ConfigError
from lmx.nonfinite import NonFinite

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130
EXIT_PREEMPTED = 143
USAGE = "python -m lmx.train --config=configs/<name>.py[:arg] --workdir=DIR [--config.a.b=value ...] [--verbose]"


def run_cli(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    setup: Callable,
    loop: Callable,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> int:
    """Trains (`loop(setup(config, workdir))`, lmx.train's) and ends every way a run can end with at most one line
    on stderr and the exit status the README documents, which it returns."""

    def error(message, status: int = EXIT_BAD_INPUT) -> int:
        print(f"lmx.train: error: {message}", file=sys.stderr, flush=True)
        return status

    try:
        distributed.initialize(coordinator_address, num_processes, process_id)
        refused = None
        try:  # read-only checks: a second run on a held workdir stops here, before building anything
            workdir_lib.check_usable(workdir, check_lock=jax.process_index() == 0)
        except workdir_lib.WorkdirError as e:
            refused = e
        workdir_lib.agree(refused)
        run = setup(config, workdir)
    except (ValueError, FileNotFoundError) as e:  # bad input found before compiling: one line, nothing written
        return error(e)
    except KeyboardInterrupt:
        print("lmx.train: interrupted (SIGINT) before training started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        loop(run)
    except checkpoint.UnreadableCheckpoint as e:
        status = error(e)
        if e.reads_started:
            # Nothing was written; skip interpreter teardown, where tensorstore's pending reads of the damaged
            # files would print tracebacks into closed event loops after our one line.
            sys.stdout.flush()
            os._exit(status)
        return status
    except workdir_lib.WorkdirError as e:
        return error(e)
    except NonFinite as e:
        return error(e, EXIT_NONFINITE)
    except preemption_lib.Preempted as e:
        print(f"lmx.train: {e}", file=sys.stderr, flush=True)
        return e.exit_status
    return 0


def _main(run_cli: Callable[..., int]) -> int:
    from absl import flags

    f = flags.FLAGS
    quiet.configure_logging(verbose=f.verbose)
    status = run_cli(
        f.config,
        f.workdir,
        coordinator_address=f.coordinator_address,
        num_processes=f.num_processes,
        process_id=f.process_id,
    )
    if jax.process_count() == 1:
        # Everything the run writes is written and closed by now: skip the interpreter's teardown (seconds of
        # TensorFlow's and XLA's native destructors) so the process ends with its last line. Several processes
        # exit normally, so that jax.distributed shuts down in order.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with its errors (a missing --workdir, a malformed flag) as one line and exit 2."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        problems = "; ".join(line.strip().rstrip(".") for line in str(e).splitlines() if line.strip())
        print(f"lmx.train: error: {problems}; usage: {USAGE}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def run(run_cli: Callable[..., int], argv: list[str] | None = None) -> None:
    """The entry point: checks the config file and its overrides (config_lib.check_overrides: one line and exit 2
    on any problem, before absl parses them), defines the flags and runs `run_cli` (lmx.train's) under absl."""
    from absl import app, flags
    from ml_collections import config_flags

    quiet.release_native_stderr()  # the imports are done
    argv = sys.argv if argv is None else argv
    try:
        config_lib.check_overrides(argv[1:])
    except ConfigError as e:
        print(f"lmx.train: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)

    config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard and config.json.")
    flags.DEFINE_string("coordinator_address", None, "Multi-process: HOST:PORT of process 0's coordinator.")
    flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes take part.")
    flags.DEFINE_integer("process_id", None, "Multi-process: this process's index in [0, num_processes).")
    flags.DEFINE_boolean("verbose", False, "Show TensorFlow's, seqio's, absl's and orbax's logs (hidden by default).")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(lambda _: _main(run_cli), argv=argv, flags_parser=_parse_flags)
