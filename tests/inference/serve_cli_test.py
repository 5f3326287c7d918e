"""The `lmx.serve` CLI as a subprocess (serving the fake engine through tests/inference/fake_serve.py): SIGTERM
finishes the requests in flight and exits 0, a second Ctrl-C exits at once, bad input is one line and exit 2."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx
from fake_engine import expected

from lmx.inference.requests import GenerationRequest, SamplingParams

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent


def start(*flags: str, gate: pathlib.Path | None = None) -> tuple[subprocess.Popen, str]:
    """The CLI on a free port and its URL (from the line it prints once it listens)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if gate is not None:
        env["FAKE_ENGINE_GATE"] = str(gate)
    command = [sys.executable, str(HERE / "fake_serve.py"), "--config=c.py", "--checkpoint=ckpt", "--port=0", *flags]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("lmx.serve: serving fake-model on http://127.0.0.1:"), (line, proc.stderr.read())
    return proc, line.split(" on ")[1].split()[0]


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=30, verify=False).json()


def wait_for(url: str, condition, what: str) -> None:
    give_up = time.monotonic() + 60  # a guard against hanging, not a time limit
    while not condition(health(url)):
        assert time.monotonic() < give_up, f"the server never reached: {what}"
        time.sleep(0.01)


def wait_until_refused(url: str) -> None:
    """Polls with new connections until one is refused: the server has stopped accepting."""
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        try:
            health(url)
        except httpx.ConnectError:
            return
        except httpx.TransportError:  # a connection accepted just before the listener closed, then shut
            pass
        time.sleep(0.01)
    raise AssertionError("new connections were still accepted")


def post(url: str, body: dict) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60, verify=False) as c:
        return c.post("/v1/completions", json=body)


def post_streamed(url: str, body: dict) -> list[str]:
    with httpx.Client(base_url=url, timeout=60, verify=False) as c:
        with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            return [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]


def reference(prompt: str, **params) -> str:
    return expected(GenerationRequest(prompt, SamplingParams(**params))).text


def test_sigterm_answers_the_requests_in_flight_then_exits_0(tmp_path):
    gate = tmp_path / "gate"  # the fake engine holds each batch until this file exists
    proc, url = start("--max_batch_size=1", "--max_wait_ms=0", gate=gate)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(post, url, {"prompt": "in flight", "max_tokens": 6, "seed": 1})
            wait_for(url, lambda h: h["busy"], "a batch in the engine")
            queued = pool.submit(post_streamed, url, {"prompt": "queued", "max_tokens": 5, "seed": 2})
            wait_for(url, lambda h: h["queue_depth"] == 1, "a streamed request queued behind it")

            proc.send_signal(signal.SIGTERM)
            wait_until_refused(url)  # new connections are refused while the two are still open
            assert not running.done() and not queued.done()
            gate.touch()

            r = running.result()
            assert r.status_code == 200
            assert r.json()["choices"][0]["text"] == reference("in flight", max_tokens=6, seed=1)
            events = queued.result()
            assert events[-1] == "[DONE]"
            assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == reference(
                "queued", max_tokens=5, seed=2
            )
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped after the requests in flight; 2 completions served" in out
    assert err == ""


def test_a_second_ctrl_c_exits_at_once_with_130(tmp_path):
    proc, url = start(gate=tmp_path / "never")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(post, url, {"prompt": "stuck", "max_tokens": 2})
            wait_for(url, lambda h: h["busy"], "a batch in the engine")
            proc.send_signal(signal.SIGINT)
            wait_until_refused(url)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
            try:  # dropped: a 500 (uvicorn's, for a cancelled request) or a closed connection
                status = stuck.result().status_code
            except httpx.TransportError:
                status = None
            assert status in (500, None)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "stopped at once by a second Ctrl-C" in out


def _run(*flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(HERE / "fake_serve.py"), *flags]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_bad_input_is_one_line_and_exit_2():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cases = {
            "cannot listen on 127.0.0.1": ["--config=c.py", "--checkpoint=x", f"--port={busy.getsockname()[1]}"],
            "config file missing.py does not exist": ["--config=missing.py", "--checkpoint=x", "--port=0"],
            "--checkpoint must have a value": ["--config=c.py"],
            "--port": ["--config=c.py", "--checkpoint=x", "--port=-1"],
        }
        for message, flags in cases.items():
            result = _run(*flags)
            assert result.returncode == 2, (flags, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("lmx.serve: error: ") and message in lines[0], lines
    finally:
        busy.close()
