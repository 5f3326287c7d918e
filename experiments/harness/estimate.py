"""How long a study will take here, from one short timed run of each distinct config (--estimate[=N]).

Each distinct config (a run's stage, config and overrides, its step count and evaluation interval aside) trains N
steps in a temporary workdir, evaluating at N/2 and N, as the study would run it. From that run:
    s/step    median of lmx's train/seconds_per_step (compilation and evaluations excluded)
    eval s    the second evaluation's time (elapsed_s of the eval record minus that of the train record of its step)
    fixed s   the command's wall time minus its steps and evaluations: start-up, data, compilation, checkpoints
and a run of S steps with an evaluation every E steps takes fixed + S x s/step + ceil(S / E) x eval, for each seed.
lmx.bench runs are short: they are run once as they are and their wall time is taken.
Fine-tuning runs are timed from a fresh body (no init_from: the time per step is the same); when their config counts
epochs (finetune.epochs > 0) the number of steps is known only to lmx, so only the per-step numbers are printed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
import subprocess
import tempfile
import time

from experiments.harness import compute, records, runner
from experiments.harness.study import REPO, Run, Study, command, run_overrides

# Overrides that change how long a run is, not what one step costs.
LENGTH_KEYS = ("train.steps", "train.eval_every", "train.log_every", "checkpoint.every_steps", "finetune.epochs")


@dataclasses.dataclass
class Timing:
    seconds_per_step: float = math.nan
    eval_s: float = 0.0
    fixed_s: float = math.nan
    wall_s: float = math.nan
    error: str = ""


def shape_key(study: Study, run: Run) -> str:
    overrides = {k: str(v) for k, v in study.overrides(run).items() if k not in LENGTH_KEYS}
    return json.dumps([run.stage, run.config, sorted(overrides.items())])


def time_run(study: Study, run: Run, steps: int) -> Timing:
    """Runs `steps` steps of `run` (seed of the study's first) in a temporary workdir and measures it."""
    seed = study.seeds[0]
    timed = run
    if run.stage != "bench":
        half = max(1, steps // 2)
        length = {"train.steps": steps, "train.eval_every": half, "train.log_every": max(1, half // 5)}
        length.update({"checkpoint.every_steps": steps, "finetune.epochs": 0.0} if run.stage == "finetune" else {})
        length.update({"checkpoint.every_steps": steps} if run.stage == "pretrain" else {})
        timed = dataclasses.replace(run, overrides={**run.overrides, **length})
    extra = {}
    if run.after:  # the pretrain run's vocabulary (trained and cached by its own timed run, which comes first)
        from lmx.data import vocab

        pretrain = study.run(run.after)
        data = compute.load(pretrain.config, run_overrides(study, pretrain, seed)).data
        extra = {"data.vocab_path": data.vocab_path or vocab.cached_vocab_path(data)}
    with tempfile.TemporaryDirectory(prefix="lmx-estimate-") as tmp:
        workdir = pathlib.Path(tmp) / "w"
        cmd = command(study, timed, seed, workdir, extra)
        started = time.time()
        proc = subprocess.run(cmd, cwd=REPO, env=runner.child_env(), capture_output=True, text=True)
        wall = time.time() - started
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            return Timing(error=f"exit {proc.returncode}: {lines[-1] if lines else ''}")
        if run.stage == "bench":
            return Timing(wall_s=wall)
        metrics = records.read_jsonl(workdir / "metrics.jsonl")
    per_step = [r["train/seconds_per_step"] for r in metrics if "train/seconds_per_step" in r]
    evals = [r for r in metrics if any(k.startswith("eval/") for k in r)]
    eval_s = 0.0
    if len(evals) >= 2:
        last = evals[-1]
        train_at = [r for r in metrics if r["step"] == last["step"] and "train/loss" in r]
        if train_at:
            eval_s = max(0.0, last["elapsed_s"] - train_at[-1]["elapsed_s"])
    seconds = statistics.median(per_step) if per_step else math.nan
    fixed = wall - steps * seconds - len(evals) * eval_s
    return Timing(seconds, eval_s, fixed, wall)


def expected_seconds(study: Study, run: Run, timing: Timing) -> float | None:
    """One seed of `run` in its real length, from the timing of its config (None when lmx decides the length)."""
    if run.stage == "bench":
        return timing.wall_s
    overrides = study.overrides(run)
    config = compute.load(run.config, run_overrides(study, run, study.seeds[0]))
    epochs = overrides.get("finetune.epochs", config.get("finetune", {}).get("epochs", 0.0))
    if run.stage == "finetune" and float(epochs) > 0:
        return None
    steps, every = config.train.steps, config.train.eval_every
    evals = (math.ceil(steps / every) if every else 1) if config.train.eval_steps else 0
    return timing.fixed_s + steps * timing.seconds_per_step + evals * timing.eval_s


def print_estimate(study: Study, steps: int) -> float:
    """Times each distinct config, prints the expected wall time of every run and of the study; returns seconds."""
    timings: dict[str, Timing] = {}
    total, unknown = 0.0, []
    for run in study.runs:
        key = shape_key(study, run)
        if key not in timings:
            print(f"timing {run.name} ({steps} steps) ...", flush=True)
            timings[key] = time_run(study, run, steps)
        t = timings[key]
        if t.error:
            print(f"  {run.name}: cannot time it: {t.error}")
            unknown.append(run.name)
            continue
        one = expected_seconds(study, run, t)
        measured = f"{t.seconds_per_step:.3f} s/step, eval {t.eval_s:.1f} s, fixed {t.fixed_s:.0f} s"
        if run.stage == "bench":
            measured = f"lmx.bench as it is: {t.wall_s:.0f} s"
        if one is None:
            print(f"  {run.name}: {measured}; its length is in epochs, not estimated")
            unknown.append(run.name)
            continue
        total += one * len(study.seeds)
        print(f"  {run.name}: {measured} -> {one / 60:.1f} min per seed x {len(study.seeds)} seeds")
    print(
        f"{study.name}: about {total / 60:.0f} min for {len(study.seeds)} seeds"
        + (f", plus {unknown}" if unknown else "")
    )
    return total
