"""A real uvicorn server on a free loopback port, serving the lmx app in a thread, for the HTTP tests."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn

from lmx import serve
from lmx.inference import server


class LiveServer:
    """`with LiveServer(engine, ...) as live:` serves `engine` at live.url until the block ends (then shuts down
    the way SIGTERM does: stop accepting, answer what is open, drain the batcher)."""

    def __init__(self, engine, *, max_wait_ms: float = 5, max_body_bytes: int = 4096, max_queued: int = 256):
        self.engine = engine
        self.app = server.create_app(
            engine, max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, max_queued=max_queued
        )
        self._socket = serve._listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join()

    def client(self) -> httpx.Client:
        # verify=False: plain HTTP on loopback; it spares building a TLS context (~40 ms of CPU) per client.
        return httpx.Client(base_url=self.url, timeout=30, verify=False)

    def health(self) -> dict:
        with self.client() as c:
            return c.get("/health").json()

    def wait_for(self, condition, what: str) -> dict:
        """Polls /health until condition(health) holds; a guard of a minute against hanging, not a time limit."""
        give_up = time.monotonic() + 60
        while True:
            health = self.health()
            if condition(health):
                return health
            if time.monotonic() > give_up:
                raise AssertionError(f"the server never reached: {what}; /health: {health}")
            time.sleep(0.01)
