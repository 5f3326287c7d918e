"""python -m lmx.serve --config=configs/gpt2_tiny.py --checkpoint=DIR/checkpoints/<step> [--host=127.0.0.1]
    [--port=8000] [--max_batch_size=8] [--max_wait_ms=10] [--max_new_tokens=256] [--max_body_bytes=65536]
    [--max_queued=1024] [--verbose]

An OpenAI-compatible completions server (POST /v1/completions, GET /v1/models, GET /health; lmx.inference.server)
on 127.0.0.1 by default. Concurrent requests are batched into the engine's jitted decoder (lmx.inference.batcher).

The stack is Starlette on uvicorn. uvicorn is the standard asyncio ASGI server and does what a server that holds
requests for seconds needs: on SIGTERM it stops accepting, waits for the requests in flight, then runs the app's
shutdown. Starlette gives routing, streaming responses and a lifespan, and nothing more: FastAPI (Starlette plus
pydantic models and OpenAPI pages) would answer bad bodies with its own 422s and publish /docs, while the requests
here are checked field by field into OpenAI's 400s (lmx.inference.openai_schema).

Exit statuses:
    0    stopped by SIGTERM or Ctrl-C after answering every request in flight (new connections are refused)
    2    bad input, found before serving: a flag, the config, the checkpoint, or an address that cannot be bound
    130  a second Ctrl-C while draining (requests in flight are dropped), or Ctrl-C while loading the model
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable

from lmx import quiet

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
USAGE = "python -m lmx.serve --config=configs/<name>.py --checkpoint=DIR/checkpoints/<step> [--port=8000] ..."


def load_engine(config: str, checkpoint: str, *, max_batch_size: int, max_new_tokens: int):
    """The real engine (imported here: JAX and the model load only once the flags are known to be good)."""
    from lmx.inference.engine import Engine

    return Engine.load(config, checkpoint, max_batch_size=max_batch_size, max_new_tokens=max_new_tokens)


def _error(message) -> int:
    print(f"lmx.serve: error: {message}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), bound here so that the address is known (and a
    clash reported) before serving starts."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class _Stop(Exception):
    """SIGTERM or SIGINT, raised by our handler: uvicorn re-raises the signals it handled once it has stopped."""


def _raise_stop(signum, frame):
    raise _Stop(signum)


def serve(engine, *, host: str, port: int, max_wait_ms: float, max_body_bytes: int, max_queued: int, verbose: bool):
    """Serves `engine` until SIGTERM or Ctrl-C; returns the exit status (module docstring)."""
    import uvicorn

    from lmx.inference import server as server_lib

    app = server_lib.create_app(engine, max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, max_queued=max_queued)
    try:
        sock = _listen(host, port)
    except OSError as e:
        return _error(f"cannot listen on {host}:{port}: {e.strerror or e}")
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(
        app,
        log_level="info" if verbose else "warning",
        access_log=verbose,
        lifespan="on",
        timeout_graceful_shutdown=None,  # requests in flight are always finished; a second Ctrl-C forces the exit
    )
    server = uvicorn.Server(config)
    # uvicorn replaces these while it serves and, once it has shut down gracefully, raises the signal again under
    # them: the process then ends with status 0 instead of dying of the signal. Before uvicorn takes over they stop
    # the process the same way (nothing is in flight yet).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_stop)
    print(
        f"lmx.serve: serving {engine.model_name} on http://{url_host}:{bound_port} (batches of up to "
        f"{engine.max_batch_size}, waiting up to {max_wait_ms:g} ms; SIGTERM or Ctrl-C stops after the requests in "
        "flight)",
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    except _Stop:
        pass
    stats = app.state.batcher.stats()
    api = app.state.api
    summary = (
        f"{api.served} completions served, {api.refused} refused, {api.failed} failed; {stats['batches']} batches, "
        f"mean batch size {stats['mean_batch_size']:.2f}"
    )
    if server.force_exit:
        print(f"lmx.serve: stopped at once by a second Ctrl-C, requests in flight dropped; {summary}", flush=True)
        return EXIT_INTERRUPTED
    print(f"lmx.serve: stopped after the requests in flight; {summary}", flush=True)
    return 0


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with its errors as one line and exit 2."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        problems = "; ".join(line.strip().rstrip(".") for line in str(e).splitlines() if line.strip())
        print(f"lmx.serve: error: {problems}; usage: {USAGE}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _main(load: Callable) -> int:
    from absl import flags

    f = flags.FLAGS
    quiet.configure_logging(verbose=f.verbose)
    if not f.verbose:
        quiet.hold_native_stderr()  # TensorFlow's and XLA's start-up lines while the model loads
    try:
        engine = load(f.config, f.checkpoint, max_batch_size=f.max_batch_size, max_new_tokens=f.max_new_tokens)
    except (ValueError, FileNotFoundError) as e:  # a bad config or checkpoint: one line
        quiet.release_native_stderr()
        return _error(e)
    except KeyboardInterrupt:
        quiet.release_native_stderr()
        print("lmx.serve: interrupted (SIGINT) while loading the model", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    quiet.release_native_stderr()
    return serve(
        engine,
        host=f.host,
        port=f.port,
        max_wait_ms=f.max_wait_ms,
        max_body_bytes=f.max_body_bytes,
        max_queued=f.max_queued,
        verbose=f.verbose,
    )


def _exit(status: int) -> None:
    # Everything is answered and the batcher has stopped: skip the interpreter's teardown (seconds of XLA's and
    # TensorFlow's native destructors), as lmx.train does.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run(argv: list[str] | None = None, load: Callable = load_engine) -> None:
    """The entry point. `load(config, checkpoint, max_batch_size=, max_new_tokens=)` makes the engine: tests pass
    a fake one here (there is no flag for it)."""
    from absl import app, flags

    argv = sys.argv if argv is None else argv
    flags.DEFINE_string("config", None, "The model's config file (configs/*.py[:arg]), as lmx.train took it.")
    flags.DEFINE_string("checkpoint", None, "A checkpoint of that config: DIR/checkpoints/<step>.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface; there is no auth).")
    flags.DEFINE_integer(
        "port", 8000, "Port to listen on (0: a free one, printed at start).", lower_bound=0, upper_bound=65535
    )
    flags.DEFINE_integer("max_batch_size", 8, "Rows per engine batch (the jitted decoder's batch).", lower_bound=1)
    flags.DEFINE_float("max_wait_ms", 10.0, "How long a batch waits for more rows after its first.", lower_bound=0)
    flags.DEFINE_integer("max_new_tokens", 256, "The cap on a request's max_tokens.", lower_bound=1)
    flags.DEFINE_integer("max_body_bytes", 65536, "Larger request bodies are refused (413).", lower_bound=1)
    flags.DEFINE_integer(
        "max_queued", 1024, "Rows (prompts x n) waiting at most; more are refused (503).", lower_bound=1
    )
    flags.DEFINE_boolean("verbose", False, "uvicorn's access log and info lines; TensorFlow's and absl's logs.")
    flags.mark_flags_as_required(["config", "checkpoint"])
    app.run(lambda _: _exit(_main(load)), argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
