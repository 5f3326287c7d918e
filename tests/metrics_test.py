"""Honest output: a resumed run owns the steps after its checkpoint (no step logged twice), every record has its
wall-clock time and elapsed seconds, rates appear only once a step was measured, MFU uses the device's peak."""

import json
import time

import pytest

from lmx import metrics


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resumed_writer_drops_the_steps_after_its_checkpoint(tmp_path):
    first = metrics.MetricWriter(str(tmp_path), enabled=True, start_step=0, started=time.time() - 100)
    for step in (1, 2, 3, 4, 5):
        first.write(step, {"loss": 10.0 - step}, prefix="train")
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "train/lo')  # a crash mid-write
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()[:5]]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(set(r) == {"step", "time", "elapsed_s", "train/loss"} for r in records)
    assert all(100 <= r["elapsed_s"] < 200 and abs(r["time"] - time.time()) < 100 for r in records)

    # Resumed from the checkpoint of step 3: steps 4 and 5 are this run's to log again.
    resumed = metrics.MetricWriter(str(tmp_path), enabled=True, start_step=3, started=time.time())
    resumed.write(4, {"loss": 0.5}, prefix="train")
    resumed.close()
    records = _records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[3]["train/loss"] == 0.5
    # elapsed_s goes on from the last record kept (step 3), not from zero and not counting the gap between runs.
    assert records[2]["elapsed_s"] <= records[3]["elapsed_s"] < records[2]["elapsed_s"] + 60
    assert not (tmp_path / "metrics.jsonl.tmp").exists()


def test_writer_of_other_processes_writes_nothing(tmp_path):
    writer = metrics.MetricWriter(str(tmp_path / "w"), enabled=False, start_step=0)
    writer.write(1, {"loss": 1.0}, prefix="train")
    writer.close()
    assert not (tmp_path / "w").exists()


def test_throughput_reports_only_measured_steps_and_mfu_against_the_peak(monkeypatch):
    clock = iter([100.0, 100.0, 100.5, 102.0, 200.0, 201.0])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    rates = metrics.Throughput(0, tokens_per_step=1000, flops_per_step=2e11, peak_flops=1e12)
    rates.restart(1)  # after the first step (compilation)
    assert rates.update(1) == {}  # no step measured: no rate rather than a zero
    measured = rates.update(5)  # 4 steps in 2 s
    assert measured == pytest.approx({"seconds_per_step": 0.5, "tokens_per_s": 2000.0, "mfu": 0.4})
    unknown_peak = metrics.Throughput(0, tokens_per_step=10, flops_per_step=1.0, peak_flops=None)
    assert "mfu" not in unknown_peak.update(4)


@pytest.mark.parametrize(
    "kind, dtype, peak",
    [
        ("TPU v4", "bfloat16", 275e12),
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5", "bfloat16", 459e12),
        ("TPU v5p", "bfloat16", 459e12),
        ("TPU v6 lite", "bfloat16", 918e12),
        ("NVIDIA A100-SXM4-80GB", "float32", 156e12),
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("NVIDIA H200", "bfloat16", 989e12),
        ("cpu", "float32", None),
        ("NVIDIA GeForce RTX 3090", "bfloat16", None),
    ],
)
def test_peak_table(kind, dtype, peak):
    assert metrics.peak_flops_per_device(kind, dtype) == peak
