"""Best-checkpoint tracking, early stopping and `<workdir>/results.json` of a fine-tuning run.

The selection metric is the task's first metric (catalog: accuracy for SST-2, MCC for CoLA, BLEU for Multi30k...);
every metric there is higher-is-better. An evaluation improves on the best only when strictly higher, so of equal
values the earliest step stays the best (the checkpoint manager keeps that step: lmx.checkpoint.make_manager).
Early stopping (config.finetune.patience = P > 0): the run stops after P evaluations in a row without improvement.

The tracker is rebuilt on resume from the eval records of metrics.jsonl up to the checkpoint resumed from (the
records of later steps belong to the abandoned continuation), so a resumed run takes the same decisions, and a run
that stopped early stays stopped when its command is run again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping

EVAL_PREFIX = "eval/"


@dataclasses.dataclass
class BestTracker:
    metric: str  # the selection metric (higher is better)
    patience: int  # evaluations without improvement before stopping; 0 = never
    best: dict[str, float] | None = None  # every eval value at the best step
    best_step: int | None = None
    last: dict[str, float] | None = None  # the latest evaluation's values
    last_step: int | None = None
    since_best: int = 0  # evaluations after the best one

    def add(self, step: int, values: Mapping[str, float]) -> bool:
        """Records the evaluation of `step`; True when it is the new best."""
        if self.metric not in values:
            raise KeyError(f"the evaluation of step {step} has no {self.metric!r}: {sorted(values)}")
        self.last, self.last_step = dict(values), step
        if self.best is None or values[self.metric] > self.best[self.metric]:
            self.best, self.best_step, self.since_best = dict(values), step, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def describe(self) -> str:
        if self.best is None:
            return "no evaluation yet"
        text = f"best {self.metric} {self.best[self.metric]:.4f} at step {self.best_step}"
        if self.patience:
            text += f"; {self.since_best} of {self.patience} evaluations without improvement"
        return text

    @classmethod
    def from_records(cls, records: Iterable[Mapping], metric: str, patience: int, through_step: int) -> BestTracker:
        """The tracker after the eval records (metrics.jsonl lines with eval/<metric>) of steps <= through_step."""
        tracker = cls(metric, patience)
        for record in sorted(records, key=lambda r: r["step"]):
            if record["step"] <= through_step and f"{EVAL_PREFIX}{metric}" in record:
                values = {k[len(EVAL_PREFIX) :]: v for k, v in record.items() if k.startswith(EVAL_PREFIX)}
                tracker.add(record["step"], values)
        return tracker


def results(
    tracker: BestTracker,
    *,
    task: str,
    steps: int,
    epochs: float,
    wall_s: float,
    seed: int,
    init_from: str | None,
) -> dict:
    """The record a study harness reads (experiments/): these keys exactly."""
    return {
        "task": task,
        "metric": tracker.metric,
        "best": tracker.best or {},
        "best_step": tracker.best_step,
        "final": tracker.last or {},
        "steps": int(steps),
        "epochs": float(epochs),
        "wall_s": float(wall_s),
        "seed": int(seed),
        "init_from": init_from or None,
    }


def write_results(workdir: str, record: Mapping) -> str:
    """Writes `<workdir>/results.json` atomically (a reader never sees half a file); returns its path."""
    path = os.path.join(workdir, "results.json")
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(temporary, path)
    return path
