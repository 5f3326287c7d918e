"""The command line every study shares: python -m experiments.<study> [flags].

    (no flag)         run every (run, seed) not finished yet, then write results.md and the plots
    --smoke           two steps per run, first seed only, into experiments/<study>/smoke/ (not the real results)
    --out=DIR         where results.md and the plots go (default experiments/<study>, or .../smoke with --smoke)
    --runs=DIR        the runs' folder (default experiments/runs, shared by the studies: an identical run of two
                      studies runs once; with --out or --smoke, OUT/runs)
    --only=A,B        just these runs (and the pretrain runs they start from)
    --seeds=0,1,2     other seeds than the study's
    --plan            print each run's steps, FLOPs, parameters and command line; run nothing
    --report          rewrite results.md and the plots from what has finished; run nothing
    --estimate[=N]    time N steps (default 20) of each distinct config and print the study's expected wall time

Exit status: 0 when every (run, seed) finished, 1 when some failed or wait on a failed run, 130 on Ctrl-C (rerun
the same command to resume).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Callable, Sequence

from experiments.harness import compute, estimate, runner
from experiments.harness.records import Results
from experiments.harness.report import write_report
from experiments.harness.study import REPO, Study, command


def parse_args(name: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="two steps per run, one seed (into .../smoke/)")
    parser.add_argument("--out", type=pathlib.Path, help="folder of results.md and the plots")
    parser.add_argument("--runs", type=pathlib.Path, help="folder of the runs' workdirs (default experiments/runs)")
    parser.add_argument("--only", default="", help="comma-separated run names")
    parser.add_argument("--seeds", default="", help="comma-separated seeds instead of the study's")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print the runs and their commands; run nothing")
    mode.add_argument("--report", action="store_true", help="rewrite results.md from finished runs; run nothing")
    mode.add_argument("--estimate", nargs="?", type=int, const=20, help="time N steps of each distinct config")
    return parser.parse_args(list(argv))


def select(study: Study, args: argparse.Namespace) -> Study:
    if args.smoke:
        study = study.as_smoke()
    if args.seeds:
        study = study.with_seeds([int(s) for s in args.seeds.split(",")])
    if args.only:
        study = study.only([name.strip() for name in args.only.split(",") if name.strip()])
    return study


def print_plan(study: Study, runs_dir: pathlib.Path) -> None:
    for run in study.runs:
        info = compute.run_info(study, run)
        if info.error:
            print(f"{run.name} [{run.stage}]: lmx refuses its config: {info.error}")
            continue
        cost = ""
        if info.flops_per_step:
            total = (info.steps or 0) * info.flops_per_step if run.stage == "pretrain" else None
            cost = f", {info.flops_per_step / 1e9:.2f} GFLOP/step" + (f" = {total / 1e15:.3f} PFLOP" if total else "")
            cost += f", {info.params / 1e6:.3f}M parameters ({info.active_params / 1e6:.3f}M active)"
        length = "" if run.stage == "bench" else f"{info.steps} steps"
        print(f"{run.name} [{run.stage}]: {length}{cost}")
        seed = study.seeds[0]
        start = run.after and not run.from_scratch
        extra = {"checkpoint.init_from": f"<{run.after} seed {seed}>/checkpoints/<last>"} if start else None
        print("    " + " ".join(command(study, run, seed, runner.workdir(runs_dir, study, run, seed), extra)))


def main(build: Callable[[], Study], argv: Sequence[str] | None = None) -> int:
    """Builds the study and does what the flags say; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The study's package is the module of its build(): flags are parsed (and --help answered) before building,
    # which loads lmx to count FLOPs.
    args = parse_args(build.__module__.rsplit(".", 1)[0].split(".")[-1], argv)
    full = build()
    study = select(full, args)
    out = args.out or REPO / "experiments" / full.name / ("smoke" if args.smoke else "")
    # The studies share one runs folder: electra_vs_mlm's bert_tiny is objectives' MLM run, architectures' T5.1.0
    # is switch_vs_dense's dense T5 (runner.workdir finds a finished run of the same key under another name).
    shared = REPO / "experiments" / "runs" if not (args.out or args.smoke) else out / "runs"
    runs_dir = (args.runs or shared).resolve()
    if args.plan:
        print_plan(study, runs_dir)
        return 0
    if args.estimate is not None:
        estimate.print_estimate(study, args.estimate)
        return 0
    shown = " ".join(["python -m", f"experiments.{full.name}", *argv])
    if not args.report:
        try:
            counts = runner.execute(study, runs_dir)
        except KeyboardInterrupt:
            print("Interrupted: the run in flight wrote a checkpoint; the same command resumes the study.")
            return 130
        print(f"{study.name}: {counts}")
    results = Results(study, runs_dir)
    path = write_report(results, out, shown)
    print(f"Wrote {path}")
    unfinished = [o for o in results.outcomes.values() if o.status != "done"]
    return 1 if unfinished else 0


def entry(build: Callable[[], Study]) -> None:
    """What each study's __main__.py calls."""
    sys.exit(main(build))
