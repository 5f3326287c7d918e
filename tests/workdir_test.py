"""One writer per workdir: the lock file refuses a second run, stale locks (dead pid on this host, old heartbeat
anywhere) are taken over with a warning, and workdirs that cannot be used are refused before anything is written."""

import json
import os
import socket
import subprocess
import time

import pytest

from lmx import workdir as workdir_lib
from lmx.workdir import WorkdirError, WorkdirLock


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid  # reaped: no process has it (until the kernel reuses it, far later)


def _write_lock(workdir, **fields):
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "heartbeat": time.time()}
    holder.update(token="someone-else", **fields)
    workdir.mkdir(exist_ok=True)
    (workdir / workdir_lib.LOCK_NAME).write_text(json.dumps(holder))


def test_second_holder_is_refused_until_release(tmp_path):
    workdir = tmp_path / "w"
    first = WorkdirLock(str(workdir))
    first.acquire()  # creates the workdir
    holder = json.loads((workdir / "lmx.lock").read_text())
    assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
    expected = rf"--workdir={workdir} is in use by another lmx.train run \(pid {os.getpid()} on {socket.gethostname()}"
    with pytest.raises(WorkdirError, match=expected):
        workdir_lib.check_usable(str(workdir))
    with pytest.raises(WorkdirError, match=expected):
        WorkdirLock(str(workdir)).acquire()
    first.release()
    assert not (workdir / "lmx.lock").exists()
    workdir_lib.check_usable(str(workdir))
    second = WorkdirLock(str(workdir))
    second.acquire()
    second.release()
    second.release()  # twice is harmless


def test_stale_locks_are_taken_over_with_a_warning(tmp_path, capsys):
    workdir = tmp_path / "w"
    # The holder ran on this host and its process is gone.
    _write_lock(workdir, pid=_dead_pid())
    workdir_lib.check_usable(str(workdir))  # stale: not a reason to refuse
    lock = WorkdirLock(str(workdir))
    lock.acquire()
    assert "warning: taking over the stale lock" in capsys.readouterr().err
    assert json.loads((workdir / "lmx.lock").read_text())["pid"] == os.getpid()
    lock.release()

    # Another host, silent for longer than STALE_AFTER_S; and a lock file cut short mid-write.
    for content in (
        {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - workdir_lib.STALE_AFTER_S - 5},
        None,
    ):
        if content is None:
            (workdir / "lmx.lock").write_text('{"host": "elsew')
        else:
            _write_lock(workdir, **content)
        lock = WorkdirLock(str(workdir))
        lock.acquire()
        assert "taking over the stale lock" in capsys.readouterr().err
        lock.release()
        assert not list(workdir.iterdir())  # nothing left behind: no lock, no set-aside copy

    # Another host with a recent heartbeat is alive as far as we can tell.
    _write_lock(workdir, host="elsewhere", pid=1)
    with pytest.raises(WorkdirError, match=r"in use by another lmx.train run \(pid 1 on elsewhere"):
        WorkdirLock(str(workdir)).acquire()


def test_heartbeat_refreshes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lib, "HEARTBEAT_S", 0.05)
    lock = WorkdirLock(str(tmp_path))
    lock.acquire()
    first = json.loads((tmp_path / "lmx.lock").read_text())["heartbeat"]
    deadline = time.time() + 30
    while json.loads((tmp_path / "lmx.lock").read_text())["heartbeat"] == first and time.time() < deadline:
        time.sleep(0.02)
    assert json.loads((tmp_path / "lmx.lock").read_text())["heartbeat"] > first
    lock.release()
    assert not list(tmp_path.iterdir())


def test_unusable_workdirs_are_refused_without_writing(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not a directory")
    with pytest.raises(WorkdirError, match=rf"^--workdir={regular} is a file, not a directory; pass another"):
        workdir_lib.check_usable(str(regular))
    with pytest.raises(WorkdirError, match=rf"^--workdir={regular}/w cannot be created: {regular} is a file"):
        workdir_lib.check_usable(str(regular / "w"))
    # What only the first write can tell (even root cannot create a directory in /proc).
    with pytest.raises(WorkdirError, match=r"^--workdir=/proc/lmx-test/w cannot be created or written \("):
        WorkdirLock("/proc/lmx-test/w").acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
