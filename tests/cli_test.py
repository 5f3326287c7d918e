"""The real `python -m lmx.train`, as a user meets it. One run trains with a checkpoint every 2 steps; while it
runs, a second run on its workdir is refused; Ctrl-C then stops it with a checkpoint and exit status 130. Copies of
its workdir are then damaged (one line naming the step and the way back, no stray tracebacks, the workdir untouched)
and resumed then interrupted twice (exit at once). Bad input that needs no process of its own:
tests/cli_errors_test.py; resuming, summaries and quiet stderr of complete runs: tests/train_test.py and
tests/resume_test.py."""

import contextlib
import io
import pathlib
import shutil
import signal
import time

import pytest
from lmx_cli import FAST, events, run, start, train_steps, wait_for_step

from lmx import config_lib, train

REPO = pathlib.Path(__file__).resolve().parent.parent
# A constant learning rate: the train step does not depend on config.train.steps, so every run below reuses the
# first run's compilation (shared JAX compilation cache).
COMMON = [*FAST, "--config.checkpoint.every_steps=2", "--config.checkpoint.keep=3", "--config.optim.decay=constant"]


def _snapshot(path: pathlib.Path):
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


def _copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    shutil.copytree(source, target)
    return target


def _checkpoints(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def interrupted(cache, tmp_path_factory):
    """The Ctrl-C'd run: (workdir, its exit status, stdout, stderr, the step of its last checkpoint, what the second
    run on its workdir returned and printed)."""
    workdir = tmp_path_factory.mktemp("interrupted")
    logs = tmp_path_factory.mktemp("logs")
    proc = start(
        [f"--workdir={workdir}", *COMMON, "--config.train.steps=1000", "--config.train.progress_bar=true"],
        cache_dir=cache,
        log_path=logs / "stdout",
        stderr_path=logs / "stderr",
    )
    try:
        wait_for_step(proc, workdir, 5)
        # A second run on the same workdir, through what main() runs (in this process: no second start-up).
        config = config_lib.lock(config_lib.check_overrides([f"--config={REPO}/configs/t5_tiny.py", *COMMON]))
        with contextlib.redirect_stderr(io.StringIO()) as refused_stderr:
            refused = train.run_cli(config, str(workdir))
        refusal = (refused, refused_stderr.getvalue().splitlines(), proc.pid)
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = _checkpoints(workdir)[-1]
    return workdir, status, (logs / "stdout").read_text(), (logs / "stderr").read_text(), saved, refusal


def test_second_run_on_a_held_workdir_is_refused(interrupted):
    workdir, *_, (status, lines, pid) = interrupted
    assert status == 2
    assert len(lines) == 1
    assert lines[0].startswith(
        f"lmx.train: error: --workdir={workdir} is in use by another lmx.train run (pid {pid} on "
    )


def test_ctrl_c_finishes_the_step_checkpoints_and_exits_130(interrupted):
    workdir, status, stdout, stderr, saved, _ = interrupted
    assert status == 130, stderr[-3000:]
    assert stderr.splitlines() == [
        f"lmx.train: interrupted by SIGINT (Ctrl-C): checkpoint written at step {saved}; run the same command to resume"
    ]
    assert saved >= 5 and saved == max(train_steps(workdir))  # the step in flight was finished and saved
    assert f"Checkpoint of step {saved}: {workdir}/checkpoints/{saved}" in stdout
    assert not (workdir / "lmx.lock").exists()
    # Quiet, honest output: plain log lines (no progress bar in a file), rates only once a step was measured.
    assert "\r" not in stdout and "Done:" not in stdout
    records = [e for e in events(workdir) if "train/loss" in e]
    assert "train/tokens_per_s" not in records[0]
    assert all(e["train/tokens_per_s"] > 0 and e["train/seconds_per_step"] > 0 for e in records[1:])
    assert all(e["train/target_tokens"] > 0 for e in records)


def test_damaged_checkpoints_are_one_line_and_left_alone(interrupted, cache, tmp_path, monkeypatch):
    source, _, _, _, saved, _ = interrupted
    previous = f"move {{step}} away to resume from the previous checkpoint (step {_checkpoints(source)[-2]}), or "
    previous += "use a new --workdir"

    # A data position missing from an otherwise complete step: damage, not another input_shards (in process).
    workdir = _copy(source, tmp_path / "index")
    (workdir / "checkpoints" / str(saved) / "data" / "shard_0" / "iterator.index").unlink()
    before = _snapshot(workdir)
    monkeypatch.setenv("LMX_CACHE_DIR", str(cache))  # the vocabulary the CLI runs trained
    config = config_lib.lock(config_lib.check_overrides([f"--config={REPO}/configs/t5_tiny.py", *COMMON]))
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        assert train.run_cli(config, str(workdir)) == 2
    step_dir = f"{workdir}/checkpoints/{saved}"
    assert stderr.getvalue().splitlines() == [
        f"lmx.train: error: checkpoint {step_dir} is damaged: data/shard_0/iterator.index is missing; "
        + previous.format(step=step_dir)
    ]
    assert _snapshot(workdir) == before

    # The state's OCDBT manifest missing: the real CLI, which must print its line and nothing else.
    workdir = _copy(source, tmp_path / "manifest")
    (workdir / "checkpoints" / str(saved) / "state" / "manifest.ocdbt").unlink()
    before = _snapshot(workdir)
    result = run([f"--workdir={workdir}", *COMMON, "--config.train.steps=1000"], cache_dir=cache)
    step_dir = f"{workdir}/checkpoints/{saved}"
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"lmx.train: error: checkpoint {step_dir} is damaged: state/manifest.ocdbt is missing; "
        + previous.format(step=step_dir)
    ]
    assert _snapshot(workdir) == before


def test_second_ctrl_c_exits_at_once(interrupted, cache, tmp_path):
    source, _, _, _, saved, _ = interrupted
    workdir = _copy(source, tmp_path / "w")
    proc = start(
        [f"--workdir={workdir}", *COMMON, "--config.train.steps=1000", "--config.checkpoint.every_steps=1000"],
        cache_dir=cache,
        log_path=tmp_path / "stdout",
        stderr_path=tmp_path / "stderr",
    )
    try:
        wait_for_step(proc, workdir, saved + 2)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)  # two signals sent at once may merge into one
        proc.send_signal(signal.SIGINT)
        # 1,000 steps would take minutes: ending within the wait means the second Ctrl-C ended the run.
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "stderr").read_text().splitlines() == [
        "lmx.train: interrupted again (SIGINT): exiting now, without a checkpoint of this step; run the same "
        "command to resume from the latest complete checkpoint"
    ]
    assert not (workdir / "lmx.lock").exists()  # released on the way out
