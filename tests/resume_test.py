"""Exact resume: a run killed at an arbitrary step (SIGKILL, also while a checkpoint is being written) or
preempted (SIGTERM) and started again with the same command gives the same per-step losses and bitwise-identical
final parameters as an uninterrupted run (float32, CPU)."""

import shutil
import signal

import numpy as np
import pytest
from lmx_cli import FAST, checkpoint_params, run, signal_at_step, start, train_losses, train_steps

STEPS = 12


def _args(workdir, every):
    return [f"--workdir={workdir}", *FAST, f"--config.train.steps={STEPS}", f"--config.checkpoint.every_steps={every}"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """The uninterrupted run: checkpoints at steps 6 and 12."""
    workdir = tmp_path_factory.mktemp("reference")
    result = run(_args(workdir, every=6), cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _assert_same_run(workdir, reference):
    losses, expected = train_losses(workdir), train_losses(reference)
    assert train_steps(workdir) == list(range(1, STEPS + 1))  # the resumed run replaced the steps after its checkpoint
    assert losses == expected  # exactly: same data, same dropout keys, same arithmetic
    ours, theirs = checkpoint_params(workdir, STEPS), checkpoint_params(reference, STEPS)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@pytest.mark.parametrize("kill_step", [8])
def test_sigkill_then_rerun_is_the_uninterrupted_run(reference, cache, tmp_path, kill_step):
    # A checkpoint every step: the kill usually lands while an asynchronous save is in flight.
    args = _args(tmp_path, every=1)
    proc = start(args, cache_dir=cache, log_path=tmp_path / "killed.log")
    signal_at_step(proc, tmp_path, kill_step, signal.SIGKILL)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    result = run(args, cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout
    _assert_same_run(tmp_path, reference)


def test_sigterm_checkpoints_exits_143_and_resumes(reference, cache, tmp_path):
    args = _args(tmp_path, every=100)  # no periodic checkpoint: the one written is the preemption's
    proc = start(args, cache_dir=cache, log_path=tmp_path / "preempted.log")
    signal_at_step(proc, tmp_path, 5, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    log = (tmp_path / "preempted.log").read_text()
    assert "preempted by SIGTERM: checkpoint written at step" in log
    saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 5 <= saved[0] < STEPS
    result = run(args, cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from {tmp_path}/checkpoints/{saved[0]}" in result.stdout
    _assert_same_run(tmp_path, reference)


def test_crash_during_final_save_resumes_from_previous(reference, cache, tmp_path):
    # Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete: a crash mid-write
    # leaves such a directory. Recreate that state for step 12 and check the run resumes from step 6.
    workdir = tmp_path / "w"
    shutil.copytree(reference, workdir)
    partial = workdir / "checkpoints" / f"{STEPS}.orbax-checkpoint-tmp-1795000000"
    (workdir / "checkpoints" / str(STEPS)).rename(partial)
    shutil.rmtree(partial / "state")
    result = run(_args(workdir, every=6), cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from {workdir}/checkpoints/6" in result.stdout
    _assert_same_run(workdir, reference)
