"""Stopping cleanly: on SIGTERM (preemption) or SIGINT (Ctrl-C) the loop finishes its step, writes a checkpoint and
exits with status 128 + the signal number (143, 130). A second Ctrl-C exits at once with status 130.

With several processes every one must stop at the same step (they all take part in the checkpoint), so the flag
is agreed on with a tiny all-reduce across processes at each step; a single process just reads its flag.

The second Ctrl-C must work even while the main thread is inside a long native call (an XLA compile, a blocking
device transfer), where Python signal handlers wait for it to return. So the handlers also have the interpreter's
C-level signal handler write each signal number to a pipe (signal.set_wakeup_fd), and a watcher thread exits the
process as soon as it reads the second SIGINT.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WHY = {signal.SIGTERM: "preempted by SIGTERM", signal.SIGINT: "interrupted by SIGINT (Ctrl-C)"}


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; `exit_status` is 128 + the signal number."""

    def __init__(self, step: int, signum: int):
        super().__init__(
            f"{_WHY.get(signum, f'stopped by signal {signum}')}: checkpoint written at step {step}; run the same "
            "command to resume"
        )
        self.step = step
        self.exit_status = 128 + signum


class PreemptionWatcher:
    """Handles SIGTERM and SIGINT (installed from the main thread only) and answers `reached(step)` identically on
    every process. `before_exit` runs before a second Ctrl-C ends the process. close() restores the handlers."""

    def __init__(self, before_exit: Callable[[], None] | None = None):
        self._before_exit = before_exit
        self._event = threading.Event()
        self.signum: int | None = None  # the first signal received
        self._previous: dict[int, object] = {}
        self._wakeup: tuple[int, int] | None = None
        self._previous_wakeup_fd = -1
        self._interrupts = 0
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd requires it: a signal must never block on a full pipe
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._wakeup = (read_fd, write_fd)
        threading.Thread(target=self._watch, args=(read_fd,), name="lmx-signals", daemon=True).start()

    def _received(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self._event.set()

    def _handle(self, signum, frame) -> None:  # Python-level handler (main thread, between bytecodes)
        self._received(signum)

    def _watch(self, read_fd: int) -> None:  # reads the signal numbers the C-level handler writes, immediately
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while data := pipe.read(64):  # b"" once close() closed the write end
                self._count(data)

    def _count(self, data: bytes) -> None:
        for signum in data:
            if signum in SIGNALS:
                self._received(signum)
            if signum == signal.SIGINT:
                self._interrupts += 1
                if self._interrupts >= 2:
                    self._exit_now()

    def _exit_now(self) -> None:
        def last_words():  # in a thread of its own: the main thread may hold a stream's lock mid-write
            if self._before_exit is not None:
                self._before_exit()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass

        finisher = threading.Thread(target=last_words, daemon=True)
        finisher.start()
        finisher.join(timeout=1.0)
        os.write(
            2,
            b"lmx.train: interrupted again (SIGINT): exiting now, without a checkpoint of this step; run the same "
            b"command to resume from the latest complete checkpoint\n",
        )
        os._exit(128 + signal.SIGINT)

    @property
    def received(self) -> bool:
        return self._event.is_set()

    def reached(self, step: int) -> bool:
        """True (on every process) once any process has received SIGTERM or SIGINT."""
        if jax.process_count() == 1:
            return self._event.is_set()
        received = multihost_utils.process_allgather(np.asarray(self.signum or 0, np.int32))  # [processes]
        if np.any(received):
            self._received(int(received[np.flatnonzero(received)[0]]))  # every process exits with the same status
            return True
        return False

    def stopped(self, step: int) -> Preempted:
        """The exception that ends the run after the checkpoint of `step`."""
        return Preempted(step, self.signum)

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            read_fd, write_fd = self._wakeup
            os.close(write_fd)  # the watcher reads end-of-file and returns
            self._wakeup = None
