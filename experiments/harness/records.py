"""What the runs of a study left behind, read back for tables and plots.

metrics.jsonl (lmx.metrics): one JSON object per log event, {"step", "time", "elapsed_s", "train/...": ...} or
{"step", ..., "eval/...": ...}; `elapsed_s` is the run's training time summed over invocations (restore and
compilation included, the time between invocations not). Fine-tuning runs also write results.json
({"task", "metric", "best": {metric: value}, "best_step", "final", "steps", "epochs", "wall_s", "seed",
"init_from"}); lmx.bench's result is kept as bench.json by the runner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
from collections.abc import Callable, Sequence

from experiments.harness import compute, runner
from experiments.harness.study import Run, Study


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a crash is skipped, as lmx itself does."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _json(path: pathlib.Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def first_reach(points: Sequence[tuple[float, float, float]], target: float) -> tuple[float, float] | None:
    """(step, elapsed_s) at which a falling curve of (step, value, elapsed_s) points, in step order, first reaches
    `target` (value <= target), linearly interpolated between the two points that bracket the crossing: between
    evaluations the curve is unknown, and a straight line is the least assuming guess. A first point already at or
    below the target gives that point (the run got there no later). None when the curve never reaches it."""
    previous = None
    for step, value, elapsed in points:
        if value <= target:
            if previous is None or previous[1] == value:
                return float(step), float(elapsed)
            p_step, p_value, p_elapsed = previous
            fraction = (p_value - target) / (p_value - value)
            return p_step + fraction * (step - p_step), p_elapsed + fraction * (elapsed - p_elapsed)
        previous = (step, value, elapsed)
    return None


@dataclasses.dataclass
class Outcome:
    """One (run, seed): its status and what it wrote."""

    run: Run
    seed: int
    workdir: pathlib.Path
    status: str  # done | failed | started | pending (runner.status)
    marker: dict
    records: list[dict]
    results: dict | None  # results.json of a fine-tuning run
    bench: dict | None  # lmx.bench's result

    @property
    def error(self) -> str:
        return str(self.marker.get("error") or "")

    def series(self, metric: str) -> list[tuple[int, float, float]]:
        """(step, value, elapsed_s) of every record holding `metric`, in step order."""
        points = [
            (r["step"], float(r[metric]), float(r.get("elapsed_s", math.nan))) for r in self.records if metric in r
        ]
        return sorted(points)

    def final(self, metric: str) -> float | None:
        points = self.series(metric)
        return points[-1][1] if points else None

    def median(self, metric: str) -> float | None:
        values = [value for _, value, _ in self.series(metric)]
        return statistics.median(values) if values else None

    def late_mean(self, metric: str, fraction: float = 0.5) -> float | None:
        """Mean of `metric` over the logged steps of the last `fraction` of training (routing statistics settle
        after the first steps; the last log alone is one batch)."""
        points = self.series(metric)
        if not points:
            return None
        last = points[-1][0]
        late = [value for step, value, _ in points if step >= last * (1 - fraction)]
        return sum(late) / len(late)

    def wall_s(self) -> float | None:
        """Seconds of training (lmx's elapsed_s at the last record); for bench and failed-early runs, the
        command's own wall time."""
        elapsed = [float(r["elapsed_s"]) for r in self.records if "elapsed_s" in r]
        if elapsed:
            return max(elapsed)
        return self.marker.get("wall_s")

    def best(self) -> float | None:
        """A fine-tuning run's best value of its selection metric (results.json)."""
        if not self.results:
            return None
        return self.results.get("best", {}).get(self.results.get("metric"))


def load_outcome(runs_dir: pathlib.Path, study: Study, run: Run, seed: int) -> Outcome:
    path = runner.workdir(runs_dir, study, run, seed)
    return Outcome(
        run=run,
        seed=seed,
        workdir=path,
        status=runner.status(path),
        marker=runner.read_marker(path),
        records=read_jsonl(path / "metrics.jsonl"),
        results=_json(path / "results.json"),
        bench=_json(path / runner.BENCH),
    )


class Results:
    """Every (run, seed) of a study and what each run is (compute.RunInfo)."""

    def __init__(self, study: Study, runs_dir: pathlib.Path):
        self.study = study
        self.outcomes = {
            (run.name, seed): load_outcome(runs_dir, study, run, seed) for run in study.runs for seed in study.seeds
        }
        self.info = {run.name: compute.run_info(study, run) for run in study.runs}

    def done(self, name: str) -> list[Outcome]:
        """The finished seeds of a run, in seed order."""
        found = (self.outcomes.get((name, s)) for s in self.study.seeds)  # a run left out by --only: none
        return [o for o in found if o is not None and o.status == "done"]

    def values(self, name: str, value: Callable[[Outcome], float | None]) -> list[float]:
        """value(outcome) of every finished seed of `name` (seeds where it is None are left out)."""
        found = (value(outcome) for outcome in self.done(name))
        return [float(v) for v in found if v is not None]

    def paired(self, name: str, reference: str, value: Callable[[Outcome, Outcome], float | None]) -> list[float]:
        """value(outcome, the reference run's outcome of the same seed) over the seeds both finished."""
        theirs = {o.seed: o for o in self.done(reference)}
        found = (value(o, theirs[o.seed]) for o in self.done(name) if o.seed in theirs)
        return [float(v) for v in found if v is not None]
