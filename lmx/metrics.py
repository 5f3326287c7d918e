"""Where metrics go: stdout (a progress bar and log lines), `metrics.jsonl`, TensorBoard. Throughput helpers."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter


def to_python(metrics: Mapping[str, object]) -> dict[str, float]:
    """Device scalars -> Python floats (a host sync point: call only on log steps)."""
    return {name: float(np.asarray(value)) for name, value in jax.device_get(dict(metrics)).items()}


class MetricWriter:
    """Writes log events to metrics.jsonl and TensorBoard (process 0 only) and prints them.

    Each event is one JSON object: {"step": N, "train/loss": ..., ...}. Appends, so a resumed run continues the
    same file.
    """

    def __init__(self, workdir: str, *, enabled: bool):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115 (closed in close())
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float], *, prefix: str) -> None:
        if not self.enabled:
            return
        event = {"step": int(step), **{f"{prefix}/{name}": float(value) for name, value in metrics.items()}}
        self._jsonl.write(json.dumps(event) + "\n")
        self._jsonl.flush()
        for name, value in event.items():
            if name != "step":
                self._tb.add_scalar(name, value, step)
        self._tb.flush()
        shown = " ".join(f"{k}={v:.4g}" for k, v in event.items() if k != "step")
        tqdm.tqdm.write(f"step {step}: {shown}", file=sys.stdout)

    def text(self, message: str) -> None:
        if self.enabled:
            tqdm.tqdm.write(message, file=sys.stdout)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._tb.close()


class Throughput:
    """Steps/s and tokens/s between two log events (measured on the host around synced steps)."""

    def __init__(self, start_step: int):
        self._step = start_step
        self._time = time.perf_counter()

    def update(self, step: int, tokens_per_step: int) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self._time, 1e-9)
        steps = step - self._step
        self._step, self._time = step, now
        return {"steps_per_s": steps / elapsed, "tokens_per_s": steps * tokens_per_step / elapsed}


def progress_bar(start: int, total: int, *, enabled: bool) -> tqdm.tqdm:
    """A bar with steps/s (tqdm's rate), ETA and a postfix for tokens/s and loss."""
    return tqdm.tqdm(
        initial=start,
        total=total,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        file=sys.stdout,
        mininterval=1.0,
    )
