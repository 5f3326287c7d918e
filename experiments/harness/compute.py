"""Configs as lmx's command line makes them, and what they cost: model FLOPs per train step and parameter counts from
lmx.flops (PaLM's model FLOPs: 6 x the matmul parameters a token touches x tokens, plus attention; the ELECTRA
generator and MoE routers included, experts counted as the tokens use them).

Studies compare runs at equal compute by giving each run the steps that spend a reference run's FLOPs
(`equal_compute_steps`), and compare architectures at equal parameters by solving one size knob (`match_params`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import ml_collections

from experiments.harness.study import REPO, Run, Study, override_args, run_overrides


def config_spec_path(spec: str) -> str:
    """configs/x.py[:arg] with the file made absolute, so configs load from any working directory."""
    path, sep, arg = spec.partition(":")
    return f"{REPO / path}{sep}{arg}"


def load(spec: str, overrides: Mapping[str, object]) -> ml_collections.ConfigDict:
    """The config `--config=spec --config.a.b=v ...` gives lmx.train, checked field by field as lmx checks it before
    doing anything (lmx.config_lib.check_overrides): a missing file, an unknown key or a value out of range raises
    lmx.config_lib.ConfigError with lmx's own one-line message."""
    from lmx import config_lib

    return config_lib.check_overrides([f"--config={config_spec_path(spec)}", *override_args(overrides)])


def cost(spec: str, overrides: Mapping[str, object] | None = None) -> dict[str, float]:
    """lmx.flops.train_flops_per_step of a config: "total" FLOPs of a train step, "params", "active_params",
    "tokens" (input positions of a step)."""
    from lmx import flops

    return flops.train_flops_per_step(load(spec, overrides or {}))


def equal_compute_steps(reference_flops_per_step: float, reference_steps: int, flops_per_step: float) -> int:
    """Steps of a run whose steps cost `flops_per_step` that spend what `reference_steps` steps of the reference
    spend (rounded to the nearest step)."""
    return max(1, round(reference_steps * reference_flops_per_step / flops_per_step))


def match_params(
    spec: str, overrides_for: Callable[[int], Mapping[str, object]], target: float, candidates: Iterable[int]
) -> int:
    """The candidate size whose config (spec + overrides_for(size)) has the parameter count nearest `target`."""
    return min(candidates, key=lambda size: abs(cost(spec, overrides_for(size))["params"] - target))


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a run is, from its config alone (seed 0; seeds change no size)."""

    steps: int | None = None  # config.train.steps (fine-tuning counts epochs unless finetune.epochs=0)
    flops_per_step: float | None = None  # pretrain and bench runs
    params: float | None = None
    active_params: float | None = None
    tokens_per_step: float | None = None
    error: str = ""  # lmx's refusal of the config (a missing fine-tuning config, an unknown key ...)


def run_info(study: Study, run: Run) -> RunInfo:
    from lmx.config_lib import ConfigError

    try:
        config = load(run.config, run_overrides(study, run, study.seeds[0]))
    except ConfigError as e:
        return RunInfo(error=str(e))
    steps = int(config.train.steps)
    if run.stage == "finetune":  # its FLOPs depend on the task's lengths and head: not counted here
        return RunInfo(steps=steps)
    from lmx import flops

    count = flops.train_flops_per_step(config)
    return RunInfo(steps, count["total"], count["params"], count["active_params"], count["tokens"])
