"""Running the real `python -m lmx.train` CLI from tests: subprocesses, metrics and checkpoint readers."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent

# t5_tiny on the embedded corpus, shrunk so a CLI run takes seconds: every step logged, no evaluation.
FAST = [
    "--config.data.inputs_length=64",
    "--config.data.targets_length=16",
    "--config.data.shuffle_buffer=200",
    "--config.train.batch_size=8",
    "--config.train.log_every=1",
    "--config.train.eval_every=0",
    "--config.train.eval_steps=0",
    "--config.train.progress_bar=false",
    "--config.optim.warmup_steps=2",
    "--config.model.dropout_rate=0.1",  # dropout keys must resume exactly too
]


# One JAX compilation cache for every CLI run of the session: runs with the same shapes compile once.
COMPILATION_CACHE = tempfile.mkdtemp(prefix="lmx-test-jax-cache-")


def xla_flags(devices: int) -> str:
    """This test session's XLA flags (conftest.py's) with `devices` simulated CPU devices instead of 8."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])


def env_for(cache_dir, devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices)
    env["LMX_CACHE_DIR"] = str(cache_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env["JAX_COMPILATION_CACHE_DIR"] = COMPILATION_CACHE
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    return env


def command(args, config="configs/t5_tiny.py") -> list[str]:
    return [sys.executable, "-m", "lmx.train", f"--config={config}", *args]


def run(args, *, cache_dir, devices=1, timeout=600, config="configs/t5_tiny.py") -> subprocess.CompletedProcess:
    return subprocess.run(
        command(args, config),
        cwd=REPO,
        env=env_for(cache_dir, devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(args, *, cache_dir, devices=1, log_path=None, stderr_path=None) -> subprocess.Popen:
    """Starts the CLI; stdout (and stderr, unless stderr_path is given) go to log_path."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    err = open(stderr_path, "w") if stderr_path else out  # noqa: SIM115
    return subprocess.Popen(command(args), cwd=REPO, env=env_for(cache_dir, devices), stdout=out, stderr=err)


def events(workdir) -> list[dict]:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_steps(workdir) -> list[int]:
    """The steps of the train records of metrics.jsonl, in file order (a resumed run never repeats one)."""
    return [e["step"] for e in events(workdir) if "train/loss" in e]


def train_losses(workdir) -> dict[int, float]:
    """step -> train loss."""
    return {e["step"]: e["train/loss"] for e in events(workdir) if "train/loss" in e}


def wait_for_step(proc: subprocess.Popen, workdir, step: int, timeout=300) -> int:
    """Waits until metrics.jsonl shows `step` (or later); returns the step seen then."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen = max(train_steps(workdir), default=0)
        if seen >= step:
            return seen
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before step {step}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"step {step} not reached in {timeout}s")


def signal_at_step(proc: subprocess.Popen, workdir, step: int, sig=signal.SIGKILL, timeout=300) -> int:
    """Sends `sig` to the training process once metrics.jsonl shows `step`; returns the step seen then."""
    seen = wait_for_step(proc, workdir, step, timeout)
    proc.send_signal(sig)
    return seen


def checkpoint_params(workdir, step: int) -> dict:
    """The parameters saved at `step`, as host numpy arrays keyed by path."""
    import jax
    import orbax.checkpoint as ocp

    path = pathlib.Path(workdir).resolve() / "checkpoints" / str(step) / "state"
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata
        single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=single), tree)
        restored = checkpointer.restore(path, target)
    flat = jax.tree_util.tree_flatten_with_path(restored["params"])[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}
