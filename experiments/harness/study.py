"""A study is a question and a list of named runs of lmx's command line; this module says what each run is and
builds the command line of each (run, seed).

A run is one config file plus overrides, at one stage:
  pretrain  python -m lmx.train --config=FILE --workdir=W --config.a.b=v ...
  finetune  the same CLI with a fine-tuning config (configs/finetune_<task>.py:<pretrained config>), starting from
            the final checkpoint of the pretrain run it names in `after`, seed for seed
  bench     python -m lmx.bench --config=FILE --config.a.b=v ... (compile time, step time, memory of the train step)
Overrides are merged in this order, later ones winning: the study's `common` overrides of the run's stage, the run's
own, the smoke overrides (--smoke), the seed's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence

REPO = pathlib.Path(__file__).resolve().parents[2]

STAGES = ("pretrain", "finetune", "bench")

# The pretraining text of the studies: ../shared/data's Project Gutenberg books (about 21 MB of English prose), as a
# path relative to the repository root, where every run starts (relative, so a run's key is the same in every
# checkout). Documents are paragraphs; lmx holds out a hash-chosen 5% of them for evaluation.
GUTENBERG = {"data.corpus": "text_files", "data.text_files": "../shared/data/pretrain/gutenberg/*.txt"}

# --smoke: every code path of a study in seconds per run. Two steps of four rows, every step logged, one evaluation
# batch at the end (eval_every=0 still evaluates after the last step), synchronous checkpoints. The fine-tuning
# configs count steps in epochs unless finetune.epochs=0 (then train.steps) and evaluate on the whole dev split.
SMOKE_OVERRIDES: dict[str, dict[str, object]] = {
    "pretrain": {
        "train.steps": 2,
        "train.batch_size": 4,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.eval_steps": 1,
        "data.shuffle_buffer": 100,
        "checkpoint.async_save": False,
    },
    "finetune": {  # the batch stays: a fine-tuning evaluation reads the whole dev split, in batches of that size
        "finetune.epochs": 0.0,
        "train.steps": 2,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.eval_steps": 1,
        "checkpoint.async_save": False,
    },
    "bench": {"train.batch_size": 4},
}
# One timed step and a small peak matmul: lmx.bench's defaults time 10 steps against 10 matmuls of 2048 x 2048.
SMOKE_BENCH_ARGS = ("--steps=1", "--warmup=0", "--peak_size=256")


@dataclasses.dataclass(frozen=True)
class Run:
    """One named run of a study, repeated for every seed of the study."""

    name: str  # unique within the study: table rows, plot legends and the run's folder use it
    config: str  # configs/<file>.py[:arg], relative to the repository root
    overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)  # "train.steps" -> 600
    stage: str = "pretrain"  # pretrain | finetune | bench
    after: str = ""  # finetune: the pretrain run whose final checkpoint (of the same seed) it starts from
    # finetune: start from random initialisation instead, with the `after` run's vocabulary: the control that says
    # whether pretraining helped at all
    from_scratch: bool = False
    group: str = ""  # runs of one group share a plot panel and a table section
    bench_args: tuple[str, ...] = ()  # bench: lmx.bench's own flags, e.g. ("--steps=10", "--warmup=2")

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"run {self.name}: stage={self.stage!r} is not one of {STAGES}")
        if (self.stage == "finetune") != bool(self.after):
            raise ValueError(f"run {self.name}: a finetune run names its pretrain run in after=, other stages do not")
        if self.from_scratch and self.stage != "finetune":
            raise ValueError(f"run {self.name}: from_scratch is for finetune runs")


@dataclasses.dataclass(frozen=True)
class Study:
    """A question answered by runs. `tables(results)` turns finished runs into the study's own tables (see
    experiments.harness.records.Results and tables.Table); report.py adds a table of every run and the plots."""

    name: str  # the package name: python -m experiments.<name>
    question: str
    runs: tuple[Run, ...]
    seeds: tuple[int, ...] = (0, 1)
    common: Mapping[str, Mapping[str, object]] = dataclasses.field(default_factory=dict)  # stage -> overrides
    tables: Callable | None = None
    curve_metric: str = "eval/loss"  # the metric of the loss plots (pretrain runs)
    smoke: bool = False

    def __post_init__(self):
        names = [run.name for run in self.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name}: run names repeat: {names}")
        for run in self.runs:
            if run.after and (run.after not in names or self.run(run.after).stage != "pretrain"):
                raise ValueError(f"study {self.name}: run {run.name} follows {run.after!r}, not a pretrain run here")
            if run.after and names.index(run.after) > names.index(run.name):
                raise ValueError(f"study {self.name}: run {run.name} is listed before its pretrain run {run.after}")

    def run(self, name: str) -> Run:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"study {self.name} has no run {name!r}; its runs: {[r.name for r in self.runs]}")

    def as_smoke(self) -> Study:
        """The --smoke version: one seed, SMOKE_OVERRIDES on top of every run."""
        return dataclasses.replace(self, seeds=self.seeds[:1], smoke=True)

    def with_seeds(self, seeds: Sequence[int]) -> Study:
        return dataclasses.replace(self, seeds=tuple(seeds))

    def only(self, names: Sequence[str]) -> Study:
        """The named runs and the pretrain runs they start from, in study order."""
        wanted = set(names)
        for name in names:
            run = self.run(name)  # an unknown name raises, listing the runs
            if run.after:
                wanted.add(run.after)
        return dataclasses.replace(self, runs=tuple(run for run in self.runs if run.name in wanted))

    def overrides(self, run: Run) -> dict[str, object]:
        """The run's overrides, seed excluded: common < the run's own < smoke."""
        merged = dict(self.common.get(run.stage, {}))
        merged.update(run.overrides)
        if self.smoke:
            merged.update(SMOKE_OVERRIDES[run.stage])
        return merged

    def bench_args(self, run: Run) -> tuple[str, ...]:
        return SMOKE_BENCH_ARGS if self.smoke else run.bench_args

    def key(self, run: Run) -> str:
        """A short hash of everything that makes the run what it is (stage, config, overrides, lmx.bench flags, the
        key of the run it starts from). Its folder is named <run>-<key>: a study whose definition changed starts new
        runs instead of resuming or reusing stale ones, and identical runs of two studies given the same --runs
        folder are run once."""
        spec = {
            "stage": run.stage,
            "config": run.config,
            "overrides": {k: format_value(v) for k, v in sorted(self.overrides(run).items())},
            "bench_args": list(self.bench_args(run)),
            "after": self.key(self.run(run.after)) if run.after else "",
        }
        if run.from_scratch:  # only then, so that the keys of every other run stay what they were
            spec["from_scratch"] = True
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def format_value(value: object) -> str:
    """A value as lmx's --config.a.b=VALUE flags parse it (absl: booleans are true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def override_args(overrides: Mapping[str, object]) -> list[str]:
    return [f"--config.{key}={format_value(value)}" for key, value in overrides.items()]


def seed_overrides(run: Run, seed: int) -> dict[str, object]:
    """A seed sets parameter init and dropout (train.seed) and the data order and masking (data.seed); lmx.bench
    times random batches, so there the seed is only a repeat."""
    if run.stage == "bench":
        return {"train.seed": seed}
    return {"train.seed": seed, "data.seed": seed}


def run_overrides(study: Study, run: Run, seed: int, extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """Every override of (run, seed); `extra` (a fine-tune's init_from and vocabulary) wins."""
    merged = study.overrides(run)
    merged.update(seed_overrides(run, seed))
    merged.update(extra or {})
    return merged


def command(
    study: Study, run: Run, seed: int, workdir: pathlib.Path, extra: Mapping[str, object] | None = None
) -> list[str]:
    """The command line of (run, seed), to be started in the repository root."""
    overrides = override_args(run_overrides(study, run, seed, extra))
    if run.stage == "bench":
        return [sys.executable, "-m", "lmx.bench", f"--config={run.config}", *overrides, *study.bench_args(run)]
    return [sys.executable, "-m", "lmx.train", f"--config={run.config}", f"--workdir={workdir}", *overrides]
