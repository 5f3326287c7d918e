"""Runs a study's runs one at a time (so that wall times are comparable), one workdir per (run, seed):

    <runs>/<run>-<key>/seed<N>/     the lmx workdir: checkpoints/, metrics.jsonl, config.json, results.json ...
        harness.log                 the run's stdout and stderr
        harness_done.json           written after the command exited 0: the command, wall time, commit
        harness_failed.json         written when it did not: the exit status and the last lines of its output
        bench.json                  lmx.bench's result (its last stdout line)

A (run, seed) with harness_done.json is skipped; any other is started again with the same command, and lmx.train
resumes it from its latest checkpoint. Seeds are the outer loop, so the first seed of every run finishes first.
A run whose config lmx refuses (e.g. a fine-tuning config that does not exist yet) fails before anything starts,
with lmx's own message; fine-tuning runs wait for their pretrain run of the same seed; the study goes on.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from collections.abc import Callable

from experiments.harness import compute
from experiments.harness.study import REPO, Run, Study, command, run_overrides

DONE, FAILED, LOG, BENCH = "harness_done.json", "harness_failed.json", "harness.log", "bench.json"


def workdir(runs_dir: pathlib.Path, study: Study, run: Run, seed: int) -> pathlib.Path:
    """<runs>/<run>-<key>/seed<N>; a finished run of the same key under another name (another study's, sharing the
    runs folder) is reused."""
    key = study.key(run)
    own = runs_dir / f"{run.name}-{key}" / f"seed{seed}"
    if not (own / DONE).exists():
        for other in sorted(runs_dir.glob(f"*-{key}/seed{seed}")):
            if (other / DONE).exists():
                return other
    return own


def status(path: pathlib.Path) -> str:
    """done | failed | started (a workdir without a verdict: interrupted, or running) | pending."""
    if (path / DONE).exists():
        return "done"
    if (path / FAILED).exists():
        return "failed"
    return "started" if path.exists() else "pending"


def read_marker(path: pathlib.Path) -> dict:
    for name in (DONE, FAILED):
        if (path / name).exists():
            return json.loads((path / name).read_text())
    return {}


def latest_checkpoint(path: pathlib.Path) -> pathlib.Path | None:
    steps = [int(p.name) for p in (path / "checkpoints").glob("*") if p.name.isdigit()]
    return path / "checkpoints" / str(max(steps)) if steps else None


def finetune_inputs(study: Study, run: Run, pretrain_dir: pathlib.Path, seed: int) -> dict[str, object]:
    """init_from = the pretrain run's final checkpoint (none for a from_scratch control); the vocabulary = the one
    the pretrain run used (the fine-tuning config loads its pretrained config's data section, which says nothing of
    our corpus overrides, so the file is named outright: lmx's cache path for the pretrain run's data settings, or its
    own vocab_path)."""
    from lmx.data import vocab

    pretrain = study.run(run.after)
    data = compute.load(pretrain.config, run_overrides(study, pretrain, seed)).data
    inputs = {"data.vocab_path": data.vocab_path or vocab.cached_vocab_path(data)}
    if not run.from_scratch:
        inputs["checkpoint.init_from"] = str(latest_checkpoint(pretrain_dir))
    return inputs


def commit() -> str:
    """The commit the runs ran at, with "+dirty" when the working tree differs from it (read-only git calls)."""

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
        except OSError:  # no git here
            return ""

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def child_env(stage: str = "pretrain") -> dict[str, str]:
    env = dict(os.environ)
    # As the Makefile: XLA:CPU maps its step temporaries afresh every step; huge pages make CPU steps ~5% faster.
    env.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    # One persistent XLA compilation cache for every run: a run's second seed (and a rerun) loads its train and eval
    # steps instead of compiling them again (bert_tiny: 33 s -> 19 s from start to 5 steps). Seeds are arguments,
    # not constants, so seeds share programs. A run's elapsed_s includes its compilation, so a cached seed is
    # faster to its first step than the first seed; comparisons within a seed are unaffected.
    cache = os.environ.get("LMX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lmx")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(cache, "xla"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    if stage == "bench":  # lmx.bench measures compile time: it must compile, not load a cached program
        env.pop("JAX_COMPILATION_CACHE_DIR")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait(proc: subprocess.Popen) -> int:
    """Waits for the child. On Ctrl-C the child (same process group) got the SIGINT too: lmx.train finishes its step
    and writes a checkpoint, so wait for that before stopping (a second Ctrl-C stops both at once)."""
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        raise


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _bench_result(log: pathlib.Path) -> dict | None:
    """lmx.bench prints its whole result as the last JSON line of stdout."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _fail(path: pathlib.Path, rc: int | None, error: str, cmd: list[str] | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / FAILED).write_text(json.dumps({"rc": rc, "error": error, "command": cmd}, indent=2))


def run_one(study: Study, run: Run, seed: int, path: pathlib.Path, extra: dict, revision: str) -> bool:
    """Launches (run, seed) in `path`; True when it exited 0. Its verdict is written next to its output."""
    from lmx.config_lib import ConfigError

    try:  # lmx's own checks of the config, without starting a process
        compute.load(run.config, run_overrides(study, run, seed, extra))
    except ConfigError as e:
        _fail(path, None, f"lmx refuses the config: {e}")
        return False
    cmd = command(study, run, seed, path, extra)
    path.mkdir(parents=True, exist_ok=True)
    (path / FAILED).unlink(missing_ok=True)
    log = path / LOG
    started = time.time()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        rc = _wait(subprocess.Popen(cmd, cwd=REPO, env=child_env(run.stage), stdout=out, stderr=subprocess.STDOUT))
    wall = time.time() - started
    if rc == 0 and run.stage == "bench":
        result = _bench_result(log)
        if result is None:
            _fail(path, rc, "lmx.bench printed no JSON result line", cmd)
            return False
        (path / BENCH).write_text(json.dumps(result, indent=2))
    if rc != 0:
        _fail(path, rc, _tail(log), cmd)
        return False
    marker = {
        "command": cmd,
        "wall_s": round(wall, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": revision,
    }
    (path / DONE).write_text(json.dumps(marker, indent=2))
    return True


def execute(study: Study, runs_dir: pathlib.Path, log: Callable[[str], None] = print) -> dict[str, int]:
    """Runs every (run, seed) not done yet; returns counts of what happened: ran, skipped, failed, waiting."""
    counts = {"ran": 0, "skipped": 0, "failed": 0, "waiting": 0}
    revision = commit()
    total = len(study.runs) * len(study.seeds)
    index = 0
    for seed in study.seeds:
        for run in study.runs:
            index += 1
            path = workdir(runs_dir, study, run, seed)
            where = f"[{index}/{total}] {run.name} seed {seed}"
            if status(path) == "done":
                counts["skipped"] += 1
                log(f"{where}: done already ({path})")
                continue
            extra = {}
            if run.after:
                pretrain_dir = workdir(runs_dir, study, study.run(run.after), seed)
                if status(pretrain_dir) != "done":
                    counts["waiting"] += 1
                    log(f"{where}: waits for {run.after} seed {seed}, which has not finished")
                    continue
                extra = finetune_inputs(study, run, pretrain_dir, seed)
            log(f"{where}: {'resuming' if status(path) != 'pending' else 'starting'} in {path}")
            started = time.time()
            ok = run_one(study, run, seed, path, extra, revision)
            counts["ran" if ok else "failed"] += 1
            error = (read_marker(path).get("error") or "").strip().splitlines()
            verdict = "done" if ok else f"FAILED: {error[-1] if error else 'no message'}"
            log(f"{where}: {verdict} ({time.time() - started:.0f} s)")
    return counts
