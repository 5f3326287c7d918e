"""The HTTP API of `python -m lmx.serve`: a Starlette app in front of one engine and its batcher.

  POST /v1/completions  OpenAI's legacy completions (fields and limits: openai_schema), plain or streamed as
                        server-sent events (`data: {chunk}` ... `data: [DONE]`); every row of every request goes
                        through the batcher, so concurrent requests share the engine's batches.
  GET  /v1/models       the one served model
  GET  /health          {"status": "ok", ...}: queue depth, batches run, rows per batch, requests served/refused

Every error is JSON in OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 for a bad field (named
in `param`), 413 for a body over the size limit, 404/405 for a wrong path or method, 503 when the queue is full or
the server is shutting down, 500 when the engine failed on the batch (the server keeps serving). A refused request
never reaches the engine. The app's lifespan starts the batcher and, at shutdown (after the server has stopped
accepting and every open request has been answered), drains and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lmx.inference import openai_schema as schema
from lmx.inference import streaming
from lmx.inference.batcher import BatchEngine, Batcher, Closed, Overloaded
from lmx.inference.openai_schema import RequestError

logger = logging.getLogger(__name__)


class ServedEngine(BatchEngine, Protocol):
    """What the server needs of lmx.inference.engine.Engine (the batcher needs max_batch_size and generate)."""

    model_name: str
    max_prompt_tokens: int
    max_new_tokens: int

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...  # for the token texts of `logprobs`


REQUIRED = ("model_name", "max_batch_size", "max_prompt_tokens", "max_new_tokens", "tokenize", "detokenize", "generate")


def create_app(engine: ServedEngine, *, max_wait_ms: float, max_body_bytes: int, max_queued: int) -> Starlette:
    """The app serving `engine`: rows batched for at most `max_wait_ms` after the first, bodies of at most
    `max_body_bytes`, at most `max_queued` rows waiting (more is a 503). app.state.batcher and app.state.api
    (request counters) are there for tests and /health."""
    missing = [name for name in REQUIRED if not hasattr(engine, name)]
    if missing:
        raise TypeError(f"{type(engine).__name__} cannot be served: it has no {', '.join(missing)}")
    batcher = Batcher(engine, max_wait_s=max_wait_ms / 1000, max_queued=max_queued)
    api = _Api(engine, batcher, max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        except asyncio.CancelledError:  # a forced exit (a second Ctrl-C): refuse rows, wait for nothing
            batcher.close()
            raise
        # uvicorn gets here once every open request has been answered: drain what is left, if anything.
        batcher.close()
        await asyncio.to_thread(batcher.join)

    app = Starlette(
        routes=[
            Route("/v1/completions", api.completions, methods=["POST"]),
            Route("/v1/models", api.models, methods=["GET"]),
            Route("/health", api.health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.api = api
    return app


class _Api:
    def __init__(self, engine: ServedEngine, batcher: Batcher, max_body_bytes: int):
        self.engine = engine
        self.batcher = batcher
        self.max_body_bytes = max_body_bytes
        self.limits = schema.Limits(engine.model_name, engine.max_prompt_tokens, engine.max_new_tokens)
        self.started = int(time.time())
        # Counters, touched on the event loop only.
        self.served = 0  # completions answered in full
        self.refused = 0  # 4xx and 503 answers to POST /v1/completions
        self.failed = 0  # 500s: the engine failed on the batch

    async def completions(self, request: Request) -> Response:
        try:
            raw = await _read_body(request, self.max_body_bytes)
            parsed = schema.parse_completion(raw, self.limits, self.engine.tokenize)
            if parsed.stream:
                return self._stream(parsed)
            return await self._complete(parsed)
        except RequestError as e:
            self.refused += 1
            headers = {"Retry-After": "1"} if e.status == 503 else None
            return JSONResponse(e.body(), status_code=e.status, headers=headers)

    def _submit(self, parsed: schema.CompletionRequest, on_update=None):
        try:
            return self.batcher.submit(parsed.generation_requests(), on_update)
        except (Overloaded, Closed) as e:  # a full queue, or shutting down
            raise RequestError(str(e), status=503) from None

    async def _complete(self, parsed: schema.CompletionRequest) -> Response:
        futures = self._submit(parsed)
        try:
            generations = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except asyncio.CancelledError:
            for f in futures:  # rows not taken yet are dropped
                f.cancel()
            raise
        except Exception as e:  # the engine failed on a batch: logged by the batcher
            self.failed += 1
            return JSONResponse(schema.error_body(f"generation failed: {e}", "server_error"), status_code=500)
        choices = []
        for index, generation in enumerate(generations):
            prompt = parsed.prompts[index // parsed.n]
            logprobs = None
            if parsed.logprobs is not None:
                logprobs = schema.logprobs_body(prompt, generation, self.engine.detokenize)
            choices.append(schema.choice(index, generation.text, generation.finish_reason, logprobs))
        self.served += 1
        body = schema.completion_body(
            schema.completion_id(),
            int(time.time()),
            self.limits.model_name,
            choices,
            prompt_tokens=sum(parsed.prompt_tokens),  # each prompt once, however many copies (as OpenAI counts)
            completion_tokens=sum(len(g.tokens) for g in generations),
        )
        return JSONResponse(body)

    def _stream(self, parsed: schema.CompletionRequest) -> Response:
        # The worker thread reports through the event loop: updates (i, text, None) and results (i, None, future)
        # land in one queue in the order they happened, as every result follows its row's updates.
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_update(i: int, text: str) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (i, text, None))

        futures = self._submit(parsed, on_update)  # a full queue is still a plain 503, before the stream starts
        for i, future in enumerate(futures):
            future.add_done_callback(functools.partial(_when_done, loop, events, i))
        return StreamingResponse(
            self._events(parsed, futures, events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def _events(self, parsed: schema.CompletionRequest, futures, events: asyncio.Queue):
        request_id, created, model = schema.completion_id(), int(time.time()), self.limits.model_name
        texts = [streaming.StreamedText(parsed.stop) for _ in futures]
        left = len(futures)
        try:
            while left:
                i, text, future = await events.get()
                if future is None:
                    delta = texts[i].update(text)
                    if delta:
                        yield streaming.event(schema.chunk_body(request_id, created, model, i, delta, None))
                    continue
                left -= 1
                if future.exception() is not None:
                    self.failed += 1
                    message = f"generation failed: {future.exception()}"
                    yield streaming.event(schema.error_body(message, "server_error"))
                    return
                generation = future.result()
                rest = texts[i].finish(generation.text)
                yield streaming.event(schema.chunk_body(request_id, created, model, i, rest, generation.finish_reason))
            self.served += 1
            yield streaming.DONE
        finally:  # also when the client went away: its rows not taken yet are dropped
            for future in futures:
                future.cancel()

    async def models(self, request: Request) -> Response:
        model = {"id": self.limits.model_name, "object": "model", "created": self.started, "owned_by": "lmx"}
        return JSONResponse({"object": "list", "data": [model]})

    async def health(self, request: Request) -> Response:
        body = {
            "status": "ok",
            "model": self.limits.model_name,
            "completions_served": self.served,
            "completions_refused": self.refused,
            "completions_failed": self.failed,
        }
        body.update(self.batcher.stats())
        return JSONResponse(body)


def _when_done(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, i: int, future) -> None:
    if future.cancelled():  # cancelled by the stream itself, which is over
        return
    loop.call_soon_threadsafe(events.put_nowait, (i, None, future))


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it is known to be over `limit` bytes: from Content-Length before reading
    anything, else while reading a chunked body."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body is {int(declared)} bytes; at most {limit} are taken", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is over {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own errors (404 no such path, 405 wrong method) in OpenAI's shape."""
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return JSONResponse(
        schema.error_body(message, "invalid_request_error"), status_code=exc.status_code, headers=exc.headers
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(schema.error_body("internal server error", "server_error"), status_code=500)
