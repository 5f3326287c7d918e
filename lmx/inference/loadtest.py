"""python -m lmx.inference.loadtest --url=http://127.0.0.1:8000 [--requests=64] [--concurrency=16]
    [--max_tokens=16] [--temperature=0] [--prompt=TEXT] [--stream]

A bounded load against a running `lmx.serve`: `--requests` completions from `--concurrency` clients (threads, each
with its own HTTP connection, sending its next request as soon as the last is answered). Prints requests/s,
latency percentiles, errors, and the server's batches over the run with their mean size (from /health before
and after, so run it against a server no one else is using).
"""

from __future__ import annotations

import concurrent.futures
import math
import sys
import threading
import time

import httpx


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (p in (0, 100])."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _one(client: httpx.Client, body: dict) -> str | None:
    """Sends one completion; None when it was answered in full, else what went wrong."""
    try:
        if not body.get("stream"):
            r = client.post("/v1/completions", json=body)
            if r.status_code != 200:
                return f"HTTP {r.status_code}: {r.text[:200]}"
            return None if r.json().get("choices") else "no choices"
        with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return f"HTTP {r.status_code}: {r.read()[:200]!r}"
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        return None if lines and lines[-1] == "data: [DONE]" else f"stream ended without [DONE]: {lines[-1:]}"
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"


def measure(url: str, *, requests: int, concurrency: int, body: dict) -> dict:
    """Runs the load; returns requests, seconds, requests_per_s, p50_s, p99_s, errors (a list), batches and
    mean_batch_size (the server's, during the run)."""
    with httpx.Client(base_url=url, timeout=600) as c:
        before = c.get("/health").json()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client_loop(client: httpx.Client) -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            error = _one(client, {**body, "seed": i})
            with lock:
                latencies.append(time.perf_counter() - started)
                if error:
                    errors.append(error)

    # Clients made before the clock starts: making one costs tens of milliseconds (its TLS context).
    clients = [httpx.Client(base_url=url, timeout=600) for _ in range(concurrency)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client_loop, client) for client in clients]:
            future.result()
    seconds = time.perf_counter() - started
    for client in clients:
        client.close()
    with httpx.Client(base_url=url, timeout=600) as c:
        after = c.get("/health").json()
    batches = after["batches"] - before["batches"]
    rows = after["rows"] - before["rows"]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "errors": errors,
        "batches": batches,
        "mean_batch_size": rows / batches if batches else 0.0,
    }


def main(argv: list[str]) -> None:
    from absl import flags

    from lmx import quiet

    quiet.configure_logging(verbose=False)  # absl would print httpx's line per request
    f = flags.FLAGS
    body = {"prompt": f.prompt, "max_tokens": f.max_tokens, "temperature": f.temperature, "stream": f.stream}
    result = measure(f.url, requests=f.requests, concurrency=f.concurrency, body=body)
    print(
        f"{result['requests']} requests from {result['concurrency']} clients in {result['seconds']:.2f} s: "
        f"{result['requests_per_s']:.1f} requests/s; latency p50 {result['p50_s'] * 1000:.0f} ms, "
        f"p99 {result['p99_s'] * 1000:.0f} ms; {len(result['errors'])} errors; server: {result['batches']} batches, "
        f"mean batch size {result['mean_batch_size']:.2f}"
    )
    for error in result["errors"][:5]:
        print(f"  error: {error}")
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("url", "http://127.0.0.1:8000", "The server (lmx.serve).")
    flags.DEFINE_integer("requests", 64, "Completions to send in all.", lower_bound=1)
    flags.DEFINE_integer("concurrency", 16, "Clients sending at once.", lower_bound=1)
    flags.DEFINE_integer("max_tokens", 16, "max_tokens of each completion.", lower_bound=1)
    flags.DEFINE_float("temperature", 0.0, "temperature of each completion (0: greedy).")
    flags.DEFINE_string("prompt", "The meaning of life is", "The prompt of every request (seeds differ).")
    flags.DEFINE_boolean("stream", False, "Stream the completions (server-sent events).")
    app.run(main)
