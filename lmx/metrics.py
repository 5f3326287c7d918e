"""Where metrics go: stdout (log lines, and a progress bar on a terminal), `metrics.jsonl`, TensorBoard; and the
rates of a run: seconds per step, tokens/s and MFU against the device's published peak."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

# Fields every metrics.jsonl record has besides its metrics.
RECORD_FIELDS = ("step", "time", "elapsed_s")


def to_python(metrics: Mapping[str, object]) -> dict[str, float]:
    """Device scalars -> Python floats (a host sync point: call only on log steps)."""
    return {name: float(np.asarray(value)) for name, value in jax.device_get(dict(metrics)).items()}


def _read(path: str) -> tuple[list[dict], int]:
    """(the records of a metrics.jsonl, its number of non-empty lines); a line that is not a record (cut short by a
    crash mid-write) is skipped."""
    if not os.path.exists(path):
        return [], 0
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records, len(lines)


def read_records(path: str) -> list[dict]:
    return _read(path)[0]


def keep_records_through(path: str, step: int) -> list[dict]:
    """Drops the records of steps after `step` (and broken lines) from metrics.jsonl, atomically: a new file is
    renamed over the old one, so a crash leaves one or the other. Returns the records kept."""
    records, lines = _read(path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) != lines:
        temporary = f"{path}.tmp"
        with open(temporary, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(temporary, path)
    return kept


class MetricWriter:
    """Writes log events to metrics.jsonl and TensorBoard (process 0 only) and prints them.

    Each event is one JSON object: {"step": N, "time": unix seconds, "elapsed_s": ..., "train/loss": ..., ...}.
    The run resumed from the checkpoint of `start_step` (0: a fresh run) owns every step after it: records of
    later steps, left by an invocation that stopped after that checkpoint, are dropped before appending, and
    TensorBoard hides its events of those steps (purge_step). `elapsed_s` counts the seconds the run has spent
    since `started` (unix time; the loop's start: restoring and compiling included), summed over invocations: a
    resumed invocation continues from the elapsed_s of the last record it keeps, so the time between invocations
    is not counted.
    """

    def __init__(self, workdir: str, *, enabled: bool, start_step: int = 0, started: float | None = None):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        self._started = time.time() if started is None else started
        self._elapsed_before = 0.0
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.jsonl")
            kept = keep_records_through(path, start_step)
            self._elapsed_before = max((float(r.get("elapsed_s", 0.0)) for r in kept), default=0.0)
            self._jsonl = open(path, "a")  # noqa: SIM115 (closed in close())
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

    def elapsed(self) -> float:
        return self._elapsed_before + time.time() - self._started

    def write(self, step: int, metrics: Mapping[str, float], *, prefix: str) -> None:
        if not self.enabled:
            return
        now = time.time()
        values = {f"{prefix}/{name}": float(value) for name, value in metrics.items()}
        event = {"step": int(step), "time": round(now, 3), "elapsed_s": round(self.elapsed(), 3), **values}
        self._jsonl.write(json.dumps(event) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        tqdm.tqdm.write(f"step {step}: {shown}", file=sys.stdout)

    def text(self, message: str) -> None:
        if self.enabled:
            tqdm.tqdm.write(message, file=sys.stdout)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._tb.close()


# Published dense (not sparse) peak FLOP/s of one device, by a pattern of jax's `device_kind`, for the dtype of
# the matmuls (config.model.dtype). float32 runs at JAX's default matmul precision: one bfloat16 pass on TPUs,
# TF32 tensor cores on NVIDIA GPUs, so those are the float32 peaks here.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"^TPU v4$", {"bfloat16": 275e12, "float32": 275e12}),
    (r"^TPU v5 ?(lite|e)$", {"bfloat16": 197e12, "float32": 197e12}),
    (r"^TPU v5p?$", {"bfloat16": 459e12, "float32": 459e12}),
    (r"^TPU v6 ?(lite|e)$", {"bfloat16": 918e12, "float32": 918e12}),
    (r"A100", {"bfloat16": 312e12, "float32": 156e12}),
    (r"H100.*PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    (r"H100|H200", {"bfloat16": 989e12, "float32": 494e12}),  # SXM parts
)


def peak_flops_per_device(device_kind: str, dtype: str) -> float | None:
    """The published peak of `device_kind` for `dtype` matmuls, None when unknown (e.g. CPUs): MFU is omitted."""
    for pattern, peaks in PEAK_FLOPS:
        if re.search(pattern, device_kind):
            return peaks.get(dtype)
    return None


class Throughput:
    """Seconds per step, tokens/s and MFU over the steps since the last restart(), measured on the host clock at
    log steps (which sync with the devices). Nothing is reported until at least one step was measured.

    tokens_per_step: input positions of a step (padding included); flops_per_step: model FLOPs of a step
    (lmx.flops); peak_flops: the peak of all devices together, None when unknown (then no MFU).
    """

    def __init__(self, step: int, *, tokens_per_step: int, flops_per_step: float, peak_flops: float | None):
        self.tokens_per_step, self.flops_per_step, self.peak_flops = tokens_per_step, flops_per_step, peak_flops
        self.restart(step)

    def restart(self, step: int) -> None:
        self._step, self._time = step, time.perf_counter()

    def update(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps = step - self._step
        if steps < 1:
            return {}
        seconds = max(now - self._time, 1e-9) / steps
        self._step, self._time = step, now
        rates = {"seconds_per_step": seconds, "tokens_per_s": self.tokens_per_step / seconds}
        if self.peak_flops:
            rates["mfu"] = self.flops_per_step / seconds / self.peak_flops
        return rates


def progress_bar(start: int, total: int, *, enabled: bool) -> tqdm.tqdm:
    """A bar with steps/s (tqdm's rate), ETA and a postfix for tokens/s and loss; on a terminal only (in a log
    file its redraws are noise: the log lines say the same)."""
    return tqdm.tqdm(
        initial=start,
        total=total,
        disable=not (enabled and sys.stdout.isatty()),
        unit="step",
        dynamic_ncols=True,
        file=sys.stdout,
        mininterval=1.0,
    )
