"""Best-checkpoint tracking and early stopping on scripted metric sequences (lmx.finetune.results), the checkpoint
manager keeping the best step however old (lmx.checkpoint.make_manager(keep_best=True)), and results.json."""

import json

import numpy as np
import pytest
from finetune_tiny import NoData

from lmx import checkpoint, config_lib
from lmx.finetune import results


def _run(values, patience):
    """Feeds the evaluations (one every 10 steps) until the tracker says stop; returns (tracker, steps evaluated)."""
    tracker = results.BestTracker("mcc", patience)
    steps = []
    for i, value in enumerate(values):
        steps.append(10 * (i + 1))
        tracker.add(steps[-1], {"mcc": value, "loss": 1.0 - value})
        if tracker.should_stop:
            break
    return tracker, steps


@pytest.mark.parametrize(
    "values, patience, best_step, last_step, stops",
    [
        ([0.1, 0.3, 0.2, 0.25, 0.29, 0.5], 3, 20, 50, True),  # three evaluations without beating 0.3: stop at 50
        ([0.1, 0.3, 0.2, 0.25, 0.31, 0.2], 3, 50, 60, False),  # 0.31 resets the count; the sequence ends at 60
        ([0.1, 0.3, 0.3, 0.3, 0.2], 3, 20, 50, True),  # equal is not better: the earliest of equal values is the best
        ([0.5, 0.4, 0.3, 0.2, 0.1], 0, 10, 50, False),  # patience 0: never stops
        ([0.0, -0.2, 0.0, 0.4], 1, 10, 20, True),  # patience 1: the first evaluation that is not better stops
    ],
)
def test_best_and_early_stopping_on_a_scripted_sequence(values, patience, best_step, last_step, stops):
    tracker, steps = _run(values, patience)
    assert tracker.best_step == best_step
    assert tracker.best == {
        "mcc": values[best_step // 10 - 1],
        "loss": pytest.approx(1.0 - values[best_step // 10 - 1]),
    }
    assert steps[-1] == tracker.last_step == last_step
    assert tracker.last["mcc"] == values[last_step // 10 - 1]
    assert tracker.should_stop == stops


def test_a_resumed_run_rebuilds_the_same_tracker_from_metrics_jsonl_records():
    values = [0.1, 0.3, 0.2, 0.25, 0.29]
    records = [{"step": 10 * (i + 1), "eval/mcc": v, "eval/loss": 1 - v} for i, v in enumerate(values)]
    records += [{"step": s, "train/loss": 2.0} for s in range(5, 60, 5)]  # train records are ignored
    resumed = results.BestTracker.from_records(records, "mcc", 3, through_step=40)  # resumed from checkpoint 40
    direct, _ = _run(values[:4], 3)
    assert (resumed.best_step, resumed.since_best, resumed.last_step) == (direct.best_step, direct.since_best, 40)
    assert not resumed.should_stop
    stopped = results.BestTracker.from_records(records, "mcc", 3, through_step=50)
    assert stopped.should_stop  # a run that stopped early stays stopped when its command runs again


def test_the_manager_keeps_the_best_step_besides_the_latest(tmp_path):
    config = config_lib.base_config()
    config.checkpoint.keep, config.checkpoint.async_save = 1, False
    manager = checkpoint.make_manager(str(tmp_path), config.checkpoint, keep_best=True)
    metric = {2: 0.5, 4: 0.7, 6: 0.6, 8: 0.7, 10: 0.65}  # 4 and 8 tie: the earlier one is the best
    for step in range(1, 11):
        state = {"x": np.full((2,), step, np.float32)}
        checkpoint.save(manager, step, state, NoData(), config, best_metric=metric.get(step))
    manager.wait_until_finished()
    manager.close()
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [4, 10]
    assert checkpoint.latest_step(str(tmp_path)) == 10


def test_results_json_has_the_harness_keys(tmp_path):
    tracker, _ = _run([0.1, 0.3, 0.2], 0)
    record = results.results(tracker, task="cola", steps=30, epochs=0.25, wall_s=12.5, seed=3, init_from="")
    path = results.write_results(str(tmp_path), record)
    saved = json.loads(open(path).read())
    assert list(saved) == [
        "task",
        "metric",
        "best",
        "best_step",
        "final",
        "steps",
        "epochs",
        "wall_s",
        "seed",
        "init_from",
    ]
    assert saved["best"] == {"mcc": 0.3, "loss": pytest.approx(0.7)} and saved["best_step"] == 20
    assert saved["final"]["mcc"] == 0.2 and saved["init_from"] is None and saved["seed"] == 3
