"""The non-finite guard of the loop: a NaN or Inf loss, gradient norm or parameter norm stops the run (naming the
step and the value) or, with config.train.on_nonfinite=skip, is dropped and training goes on.

The train step itself never applies such an update (lmx.step); this guard decides whether the run goes on.
"""

from __future__ import annotations

import math

from lmx import metrics
from lmx.config_lib import ConfigError


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
