"""The workdir: checked before a run builds anything, and held by one run at a time through a lock file.

`check_usable(workdir)` refuses, writing nothing, a workdir that is a file, that cannot be created or written, or
that another live run holds. `WorkdirLock(workdir).acquire()` then takes the lock before the run writes anything.

The lock is the file `workdir/lmx.lock`, created with O_CREAT | O_EXCL (atomic on local filesystems and on NFS v3+,
unlike flock, which network filesystems often ignore). It holds JSON: the holder's host, pid, start time and a
heartbeat that a background thread rewrites every HEARTBEAT_S seconds. A lock is stale, and taken over with a
warning, when its holder ran on this host and that pid is gone, or when its heartbeat is older than STALE_AFTER_S
(a holder on another host that died, or a pid reused after a reboot). Takeover renames the stale file aside (one
contender wins the rename) and creates a fresh one with O_EXCL. In multi-process runs the lead process holds it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid

from lmx.config_lib import ConfigError

LOCK_NAME = "lmx.lock"
HEARTBEAT_S = 30.0  # seconds between heartbeats of the holder
STALE_AFTER_S = 300.0  # a lock whose heartbeat is older than this is stale, whatever its host


class WorkdirError(ConfigError):
    """A workdir that cannot be used (a file, not writable, held by another run): one line, exit status 2."""


def _fallback(workdir: str) -> str:
    return f"pass another --workdir (it is created if missing), or fix {workdir}"


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _read_only_filesystem(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_usable(workdir: str, *, check_lock: bool = True) -> None:
    """Raises WorkdirError if `workdir` cannot be this run's workdir; reads only, so nothing is written.

    (Root passes os.access everywhere: what only the first write can tell is reported by WorkdirLock.acquire.)
    """
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir} is a file, not a directory; {_fallback(workdir)}")
    existing = _nearest_existing(workdir)
    if existing != workdir and not os.path.isdir(existing):
        raise WorkdirError(f"--workdir={workdir} cannot be created: {existing} is a file; {_fallback(workdir)}")
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only_filesystem(existing):
        what = "is not writable" if existing == workdir else f"cannot be created: {existing} is not writable"
        raise WorkdirError(f"--workdir={workdir} {what}; {_fallback(workdir)}")
    if check_lock:
        holder = read_holder(workdir)
        if holder is not None and stale_reason(holder) is None:
            raise WorkdirError(locked_message(workdir, holder))


def agree(error: WorkdirError | None) -> None:
    """Raises on every process when any process failed a workdir check (`error` is this process's failure, or
    None): its own error, or one naming the process that failed. A single process just raises its error."""
    import jax

    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        failed = multihost_utils.process_allgather(np.asarray(error is not None, np.int32))  # [processes]
        if error is None and np.any(failed):
            first = int(np.flatnonzero(failed)[0])
            raise WorkdirError(f"process {first} refused the workdir (see its error); nothing was written")
    if error is not None:
        raise error


def lock_path(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), LOCK_NAME)


def _parse(text: str) -> dict:
    """A lock file's content; text that is not such JSON (a holder that died mid-write) parses as a holder with a
    zero heartbeat, i.e. stale."""
    try:
        holder = json.loads(text)
        if isinstance(holder, dict) and {"host", "pid", "started", "heartbeat", "token"} <= holder.keys():
            return holder
    except ValueError:
        pass
    return {"host": "?", "pid": -1, "started": 0.0, "heartbeat": 0.0, "token": text}


def read_holder(workdir: str) -> dict | None:
    """The lock's content ({"host", "pid", "started", "heartbeat", "token"}); None when there is no lock."""
    try:
        with open(lock_path(workdir)) as f:
            return _parse(f.read())
    except FileNotFoundError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(holder: dict, now: float | None = None) -> str | None:
    """Why the lock of `holder` is stale, or None while its holder may still be running."""
    now = time.time() if now is None else now
    if holder["host"] == socket.gethostname() and not _pid_alive(int(holder["pid"])):
        return f"process {holder['pid']} on this host is gone"
    age = now - float(holder["heartbeat"])
    if age > STALE_AFTER_S:
        return f"its last heartbeat was {age:.0f}s ago (stale after {STALE_AFTER_S:.0f}s)"
    return None


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["started"])))
    return f"pid {holder['pid']} on {holder['host']}, started {started}"


def locked_message(workdir: str, holder: dict) -> str:
    return (
        f"--workdir={os.path.abspath(workdir)} is in use by another lmx.train run ({_describe(holder)}); wait for "
        f"it to finish or stop it, or pass another --workdir (if that run is dead, delete {lock_path(workdir)})"
    )


class WorkdirLock:
    """The lock of one run on `workdir` (see the module docstring). acquire() before writing, release() at the end."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = lock_path(workdir)
        self._holder: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Creates the workdir if needed and takes the lock; raises WorkdirError if it cannot (held by a live run,
        or the directory cannot be created or written). Takes a stale lock over with a warning on stderr."""
        now = time.time()
        self._holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now,
            "heartbeat": now,
            "token": uuid.uuid4().hex,
        }
        try:
            os.makedirs(self.workdir, exist_ok=True)
            for _ in range(3):
                if self._create():
                    break
                holder = read_holder(self.workdir)
                if holder is None:
                    continue  # released between our attempt and our read: try again
                reason = stale_reason(holder)
                if reason is None:
                    raise WorkdirError(locked_message(self.workdir, holder))
                self._take_over(holder, reason)
            else:
                raise WorkdirError(f"could not take the lock {self.path}: other runs keep taking it; retry")
        except OSError as e:
            raise WorkdirError(
                f"--workdir={self.workdir} cannot be created or written ({type(e).__name__}: {e.strerror or e}); "
                f"{_fallback(self.workdir)}"
            ) from e
        self._thread = threading.Thread(target=self._beat, args=(self._holder,), name="lmx-workdir-lock", daemon=True)
        self._thread.start()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self._holder, f)
        return True

    def _take_over(self, holder: dict, reason: str) -> None:
        aside = f"{self.path}.stale-{self._holder['token']}"
        try:
            os.rename(self.path, aside)  # atomic: of several runs taking over, one moves the stale lock
        except FileNotFoundError:
            return  # another run moved it first; our next O_EXCL create decides
        with open(aside) as f:
            moved = _parse(f.read())
        if moved["token"] != holder["token"]:
            os.rename(aside, self.path)  # we moved a fresh lock that another run just created: put it back
            return
        os.remove(aside)
        print(
            f"lmx.train: warning: taking over the stale lock of {self.workdir} ({_describe(holder)}): {reason}",
            file=sys.stderr,
            flush=True,
        )

    def _beat(self, holder: dict) -> None:
        temporary = f"{self.path}.{holder['token']}.tmp"
        while not self._stop.wait(HEARTBEAT_S):
            holder = {**holder, "heartbeat": time.time()}
            try:
                with open(temporary, "w") as f:
                    json.dump(holder, f)
                if not self._stop.is_set():
                    os.replace(temporary, self.path)  # readers see the old or the new content, never half of it
            except OSError:
                pass  # a missed heartbeat is harmless; STALE_AFTER_S allows many
        if os.path.exists(temporary):  # stopped between writing and renaming
            os.remove(temporary)

    def release(self) -> None:
        """Stops the heartbeat and removes the lock if it is still ours (safe to call twice, or from two threads)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        ours, self._holder = self._holder, None
        holder = read_holder(self.workdir) if ours is not None else None
        if holder is not None and holder["token"] == ours["token"]:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
