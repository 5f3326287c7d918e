"""Preemption: on SIGTERM the loop finishes its step, writes a checkpoint and exits with status 143.

With several processes every one must stop at the same step (they all take part in the checkpoint), so the flag
is agreed on with a tiny all-reduce across processes at each step; a single process just reads its flag.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(Exception):
    def __init__(self, step: int):
        super().__init__(f"preempted by SIGTERM: checkpoint written at step {step}; run the same command to resume")
        self.step = step


class PreemptionWatcher:
    """Installs a SIGTERM handler (main thread only) and answers `reached(step)` identically on every process."""

    def __init__(self):
        self._event = threading.Event()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self._event.set()

    @property
    def received(self) -> bool:
        return self._event.is_set()

    def reached(self, step: int) -> bool:
        """True (on every process) once any process has received SIGTERM."""
        local = self._event.is_set()
        if jax.process_count() == 1:
            return local
        flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
        if np.any(flags):
            self._event.set()
            return True
        return False

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
