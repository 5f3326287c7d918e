"""lmx.inference.batcher with the fake engine: merging, the wait limit, draining, cancellation, failures, stats."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
from fake_engine import FAIL, FakeEngine, expected

from lmx.inference.batcher import Batcher, Closed, Overloaded
from lmx.inference.requests import GenerationRequest, SamplingParams


def rows(*prompts: str, max_tokens: int = 4) -> list[GenerationRequest]:
    return [GenerationRequest(p, SamplingParams(max_tokens=max_tokens, seed=i)) for i, p in enumerate(prompts)]


def results(futures) -> list[str]:
    return [f.result(timeout=60).text for f in futures]


class Gated:
    """A fake engine whose batches wait for open(): a batch can be held in flight while rows queue behind it."""

    def __init__(self, tmp_path, **kwargs):
        self.path = tmp_path / "gate"
        self.engine = FakeEngine(gate=str(self.path), **kwargs)

    def open(self):
        self.path.touch()


def wait_until(condition, what: str) -> None:
    event = threading.Event()
    for _ in range(6000):  # a guard of about a minute against hanging, not a time limit
        if condition():
            return
        event.wait(0.01)
    raise AssertionError(f"never happened: {what}")


def test_rows_submitted_together_fill_batches_of_max_batch_size():
    engine = FakeEngine(max_batch_size=4)
    # A long wait: the full batches run at once all the same, the last partial one at close().
    batcher = Batcher(engine, max_wait_s=3600, max_queued=100)
    requests = rows(*(f"p{i}" for i in range(10)))
    futures = batcher.submit(requests)
    batcher.start()
    wait_until(lambda: len(engine.calls) == 2, "two full batches")
    batcher.close()
    assert batcher.join(timeout=60)
    assert engine.calls == [4, 4, 2]
    assert results(futures) == [expected(r).text for r in requests]
    stats = batcher.stats()
    assert stats["batches"] == 3 and stats["rows"] == 10 and stats["batch_sizes"] == {"2": 1, "4": 2}
    assert stats["mean_batch_size"] == pytest.approx(10 / 3)


def test_rows_queued_while_a_batch_runs_make_the_next_batch(tmp_path):
    gated = Gated(tmp_path, max_batch_size=8)
    batcher = Batcher(gated.engine, max_wait_s=0, max_queued=100)
    batcher.start()
    first = batcher.submit(rows("first"))
    wait_until(lambda: batcher.stats()["busy"], "the first batch running")
    later = [batcher.submit(rows(f"later {i}")) for i in range(5)]
    assert batcher.stats()["queue_depth"] == 5
    gated.open()
    assert results(first) == [expected(rows("first")[0]).text]
    assert [results(f) for f in later] == [[expected(rows(f"later {i}")[0]).text] for i in range(5)]
    batcher.close()
    assert batcher.join(timeout=60)
    assert gated.engine.calls == [1, 5]  # the five waited behind the first batch and went together


def test_the_wait_for_more_rows_ends_when_the_batch_is_full():
    engine = FakeEngine(max_batch_size=3)
    batcher = Batcher(engine, max_wait_s=3600, max_queued=100)
    batcher.start()
    a = batcher.submit(rows("a"))
    b = batcher.submit(rows("b", "c"))  # fills the batch: no waiting for the hour
    assert results(a) + results(b) == [expected(r).text for r in rows("a") + rows("b", "c")]
    assert engine.calls == [3]
    batcher.close()
    assert batcher.join(timeout=60)


def test_close_drains_the_queue_then_refuses(tmp_path):
    gated = Gated(tmp_path, max_batch_size=2)
    batcher = Batcher(gated.engine, max_wait_s=0, max_queued=100)
    batcher.start()
    first = batcher.submit(rows("x"))
    wait_until(lambda: batcher.stats()["busy"], "the first batch running")
    queued = batcher.submit(rows("y", "z", "w"))
    batcher.close()
    with pytest.raises(Closed):
        batcher.submit(rows("too late"))
    assert not batcher.join(timeout=0.05)  # still draining: the gate is shut
    gated.open()
    assert batcher.join(timeout=60)
    assert results(first) + results(queued) == [expected(r).text for r in rows("x") + rows("y", "z", "w")]
    assert gated.engine.calls == [1, 2, 1]
    assert "too late" not in gated.engine.prompts


def test_a_full_queue_refuses_all_rows_of_a_request(tmp_path):
    gated = Gated(tmp_path, max_batch_size=1)
    batcher = Batcher(gated.engine, max_wait_s=0, max_queued=3)
    batcher.start()
    batcher.submit(rows("running"))
    wait_until(lambda: batcher.stats()["busy"], "a batch running")
    kept = batcher.submit(rows("a", "b"))
    with pytest.raises(Overloaded):
        batcher.submit(rows("c", "d"))  # one would fit: none is taken
    assert batcher.stats()["queue_depth"] == 2
    last = batcher.submit(rows("e"))
    gated.open()
    results(kept + last)
    batcher.close()
    assert batcher.join(timeout=60)
    assert "c" not in gated.engine.prompts and "d" not in gated.engine.prompts


def test_a_cancelled_row_is_dropped_before_the_engine(tmp_path):
    gated = Gated(tmp_path, max_batch_size=4)
    batcher = Batcher(gated.engine, max_wait_s=0, max_queued=100)
    batcher.start()
    batcher.submit(rows("running"))
    wait_until(lambda: batcher.stats()["busy"], "a batch running")
    gone, kept = batcher.submit(rows("gone", "kept"))
    assert gone.cancel()
    gated.open()
    assert kept.result(timeout=60).text == expected(rows("gone", "kept")[1]).text
    batcher.close()
    assert batcher.join(timeout=60)
    assert "gone" not in gated.engine.prompts and gated.engine.calls == [1, 1]


def test_a_failing_batch_fails_its_rows_only():
    engine = FakeEngine(max_batch_size=2)
    batcher = Batcher(engine, max_wait_s=3600, max_queued=100)
    bad = batcher.submit([GenerationRequest(FAIL), GenerationRequest("with it")])
    good = batcher.submit(rows("after"))
    batcher.start()
    for future in bad:
        with pytest.raises(RuntimeError, match="fails on FAIL"):
            future.result(timeout=60)
    batcher.close()
    assert batcher.join(timeout=60)
    assert results(good) == [expected(rows("after")[0]).text]
    stats = batcher.stats()
    assert stats["failed_batches"] == 1 and stats["batches"] == 2 and stats["rows"] == 1


def test_updates_are_forwarded_per_row_and_a_broken_listener_breaks_nothing():
    engine = FakeEngine(max_batch_size=4)
    batcher = Batcher(engine, max_wait_s=3600, max_queued=100)
    seen: dict[int, list[str]] = {0: [], 1: []}

    def listener(i: int, text: str) -> None:
        seen[i].append(text)
        if i == 1:
            raise ValueError("a client went away")

    requests = rows("streamed a", "streamed b", max_tokens=5)
    streamed = batcher.submit(requests, listener)
    plain = batcher.submit(rows("plain"))
    batcher.start()
    batcher.close()
    assert batcher.join(timeout=60)
    assert results(streamed) == [expected(r).text for r in requests]
    assert results(plain) == [expected(rows("plain")[0]).text]
    for i, request in enumerate(requests):  # the text after each token, in order
        text = expected(request).text
        assert seen[i] == [text[: k + 1] for k in range(5)]
    assert engine.calls == [3]


def test_many_threads_submit_while_one_thread_generates():
    engine = FakeEngine(max_batch_size=8, delay=0.005)
    batcher = Batcher(engine, max_wait_s=0.005, max_queued=1000)
    batcher.start()

    def client(k: int) -> list[str]:
        requests = rows(*(f"t{k} r{j}" for j in range(4)))
        out = []
        for r in requests:
            out += results(batcher.submit([r]))
        return out

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(client, range(8)))
    batcher.close()
    assert batcher.join(timeout=60)
    for k, texts in enumerate(answers):
        assert texts == [expected(r).text for r in rows(*(f"t{k} r{j}" for j in range(4)))]
    assert sum(engine.calls) == 32 and max(engine.calls) > 1  # FakeEngine raises on concurrent generate()
