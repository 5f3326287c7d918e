"""Dynamic batching: concurrent requests merged into the batches of one engine that a single thread owns.

The engine's `generate` is blocking and not thread-safe, and one call decodes up to `max_batch_size` rows for
about the price of one (the jitted decoder has a fixed batch), so the server funnels every row through here:

  1. `submit(requests)` appends the rows of one HTTP request to a FIFO queue, all or none (a full queue refuses
     them with `Overloaded`; a closing batcher with `Closed`), and returns a `concurrent.futures.Future` per row,
     which an asyncio handler awaits with `asyncio.wrap_future`.
  2. The worker thread takes the oldest row, then waits for more until the batch is full or `max_wait_s` has
     passed since that row was queued (not since the worker woke: a row that already waited behind a running
     batch does not wait again), and takes up to `max_batch_size` rows.
  3. It calls `engine.generate` once for them. Streaming rows get each `on_update` of the engine forwarded (text so
     far), on this thread; each row's future then gets its Generation, or the exception of a failed batch (the
     other batches and the server carry on).
  4. `close()` refuses new rows; the worker drains every queued row, then exits (graceful shutdown).

Statistics (`stats()`): batches run, rows generated, a histogram of rows per batch, failed batches, queue depth.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from lmx.inference.requests import Generation, GenerationRequest

logger = logging.getLogger(__name__)


class BatchEngine(Protocol):
    """What the batcher needs of lmx.inference.engine.Engine."""

    max_batch_size: int

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_update: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]: ...


class Closed(RuntimeError):
    """The batcher is shutting down and takes no new rows."""


class Overloaded(RuntimeError):
    """The queue has no room for the rows of this request."""


@dataclasses.dataclass
class _Row:
    request: GenerationRequest
    future: concurrent.futures.Future
    on_update: Callable[[str], None] | None  # called on the worker thread with the text generated so far
    queued_at: float


class Batcher:
    """Owns `engine` from one worker thread (`start()`); see the module docstring for the algorithm."""

    def __init__(
        self,
        engine: BatchEngine,
        *,
        max_wait_s: float,
        max_queued: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        if engine.max_batch_size < 1:
            raise ValueError(f"engine.max_batch_size={engine.max_batch_size} must be at least 1")
        if max_wait_s < 0 or max_queued < 1:
            raise ValueError(f"max_wait_s={max_wait_s} must be >= 0 and max_queued={max_queued} >= 1")
        self._engine = engine
        self._max_batch = engine.max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queued = max_queued
        self._clock = clock
        self._queue: collections.deque[_Row] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        # A daemon: a forced exit (a second Ctrl-C) must not wait for a generate() call; close() + join() is the
        # graceful path.
        self._thread = threading.Thread(target=self._work, name="lmx-batcher", daemon=True)
        self._batches = 0
        self._rows = 0
        self._failed_batches = 0
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._busy = False

    def start(self) -> None:
        self._thread.start()

    def submit(
        self,
        requests: Sequence[GenerationRequest],
        on_update: Callable[[int, str], None] | None = None,
    ) -> list[concurrent.futures.Future]:
        """Queues `requests` (all or none) and returns a future of each one's Generation. `on_update(i, text)` is
        called on the worker thread with the text so far of requests[i] after each decoded chunk. Cancelling a
        future before the worker takes its row drops the row."""
        now = self._clock()
        rows = []
        for i, request in enumerate(requests):
            listener = None if on_update is None else _bind(on_update, i)
            rows.append(_Row(request, concurrent.futures.Future(), listener, now))
        with self._cond:
            if self._closing:
                raise Closed("the server is shutting down")
            if len(self._queue) + len(rows) > self._max_queued:
                raise Overloaded(
                    f"the queue holds {len(self._queue)} of at most {self._max_queued} completions; retry later"
                )
            self._queue.extend(rows)
            self._cond.notify()
        return [row.future for row in rows]

    def close(self) -> None:
        """Refuses new rows; the worker finishes every queued one, then exits (join() waits for that)."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the worker to exit after close(); True when it has."""
        if self._thread.ident is None:  # never started
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict:
        with self._cond:
            return {
                "queue_depth": sum(not row.future.cancelled() for row in self._queue),  # rows still wanted
                "busy": self._busy,
                "batches": self._batches,
                "rows": self._rows,
                "failed_batches": self._failed_batches,
                "mean_batch_size": self._rows / self._batches if self._batches else 0.0,
                "batch_sizes": {str(size): count for size, count in sorted(self._batch_sizes.items())},
                "max_batch_size": self._max_batch,
                "max_wait_ms": self._max_wait_s * 1000,
            }

    # The worker thread.

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[_Row] | None:
        """The next batch (empty when every row taken was cancelled), or None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].queued_at + self._max_wait_s
            # While closing nothing new can arrive: run what is queued at once.
            while len(self._queue) < self._max_batch and not self._closing:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = []
            while self._queue and len(batch) < self._max_batch:
                row = self._queue.popleft()
                if row.future.set_running_or_notify_cancel():  # False: cancelled (its client has gone)
                    batch.append(row)
            self._busy = bool(batch)
            return batch

    def _run(self, batch: list[_Row]) -> None:
        def forward(i: int, generation: Generation) -> None:
            listener = batch[i].on_update
            if listener is not None:
                try:
                    listener(generation.text)
                except Exception:  # a broken stream must not fail the other rows of the batch
                    logger.exception("on_update listener failed")

        streaming = any(row.on_update is not None for row in batch)
        try:
            # Without streaming rows on_update is None, so the engine need not fetch partial results.
            results = self._engine.generate([row.request for row in batch], forward if streaming else None)
            if len(results) != len(batch):
                raise RuntimeError(f"the engine returned {len(results)} generations for {len(batch)} requests")
        except Exception as e:
            logger.exception("generate() failed for a batch of %d", len(batch))
            with self._cond:
                self._batches += 1
                self._failed_batches += 1
                self._busy = False
            for row in batch:
                row.future.set_exception(e)
            return
        with self._cond:  # counted before the futures resolve, so a client that got its answer sees its batch
            self._batches += 1
            self._rows += len(batch)
            self._batch_sizes[len(batch)] += 1
            self._busy = False
        for row, result in zip(batch, results, strict=True):
            row.future.set_result(result)


def _bind(on_update: Callable[[int, str], None], i: int) -> Callable[[str], None]:
    return lambda text: on_update(i, text)
