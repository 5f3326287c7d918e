"""lmx.inference.server through a real HTTP client (httpx) against a real uvicorn server on loopback, serving the
fake engine (fake_engine.py): every endpoint and field, streaming, every bad request, limits, concurrent load."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest
from fake_engine import FAIL, FakeEngine, expected
from live_server import LiveServer

from lmx.inference.requests import GenerationRequest, SamplingParams

MAX_BODY = 4096


@pytest.fixture(scope="module")
def live():
    with LiveServer(
        FakeEngine(max_batch_size=4, max_prompt_tokens=64, max_new_tokens=32), max_body_bytes=MAX_BODY
    ) as s:
        yield s


@pytest.fixture
def client(live):
    with live.client() as c:
        yield c


def reference(prompt, *, max_tokens=16, temperature=1.0, top_k=0, top_p=1.0, seed=0, stop=()):
    return expected(GenerationRequest(prompt, SamplingParams(max_tokens, temperature, top_k, top_p, seed, stop)))


def complete(client, **body) -> dict:
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def sse_events(response: httpx.Response) -> list:
    """The server-sent events of a streamed response: the JSON chunks, then "[DONE]"."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events, data = [], []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and data:  # a blank line ends an event
            payload = "\n".join(data)
            events.append(payload if payload == "[DONE]" else json.loads(payload))
            data = []
    assert not data, "an event was not terminated by a blank line"
    return events


def stream(client, **body) -> list:
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        return sse_events(r)


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    [model] = models["data"]
    assert model["id"] == "fake-model" and model["object"] == "model" and model["owned_by"] == "lmx"
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "fake-model" and health["max_batch_size"] == 4
    assert {"queue_depth", "batches", "rows", "batch_sizes", "completions_served"} <= set(health)


def test_completion_has_openai_shape_and_the_engine_answer(client):
    body = complete(client, model="fake-model", prompt="hello", max_tokens=7, temperature=0.7, top_p=0.9, seed=3)
    assert body["object"] == "text_completion" and body["model"] == "fake-model"
    assert body["id"].startswith("cmpl-") and isinstance(body["created"], int)
    [choice] = body["choices"]
    want = reference("hello", max_tokens=7, temperature=0.7, top_p=0.9, seed=3)
    assert choice == {"index": 0, "text": want.text, "logprobs": None, "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_defaults_match_openai(client):
    [choice] = complete(client, prompt="x", seed=1)["choices"]
    assert choice["text"] == reference("x", max_tokens=16, seed=1).text


def test_prompt_list_and_n_are_prompt_major_with_seeds_seed_plus_copy(client):
    prompts = ["alpha", "beta"]
    body = complete(client, prompt=prompts, n=3, max_tokens=12, seed=40, top_k=3)
    texts = [c["text"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == list(range(6))
    want = [reference(p, max_tokens=12, seed=40 + j, top_k=3).text for p in prompts for j in range(3)]
    assert texts == want
    assert len(set(texts[:3])) > 1  # the copies were sampled with different seeds
    assert body["usage"]["prompt_tokens"] == len("alpha") + len("beta")  # each prompt counted once
    assert body["usage"]["completion_tokens"] == 6 * 12


def test_temperature_zero_gives_identical_copies(client):
    body = complete(client, prompt="same", n=4, temperature=0, max_tokens=10, seed=9)
    texts = {c["text"] for c in body["choices"]}
    assert texts == {reference("same", max_tokens=10, temperature=0).text}


def test_without_a_seed_each_request_draws_one(client):
    a, b = (complete(client, prompt="p", max_tokens=32)["choices"][0]["text"] for _ in range(2))
    assert a != b  # 6**32 possible texts


def _a_stop_string(prompt: str, seed: int) -> str:
    """Two characters that occur in the middle of the prompt's completion."""
    text = reference(prompt, max_tokens=32, seed=seed).text
    return text[10:12]


@pytest.mark.parametrize("as_list", [False, True])
def test_stop_strings_cut_the_completion(client, as_list):
    stop = _a_stop_string("stopper", 2)
    body = complete(client, prompt="stopper", max_tokens=32, seed=2, stop=[stop, "zz"] if as_list else stop)
    [choice] = body["choices"]
    want = reference("stopper", max_tokens=32, seed=2, stop=(stop,))
    assert choice["finish_reason"] == "stop" and choice["text"] == want.text and stop not in choice["text"]


@pytest.mark.parametrize("logprobs", [0, 5])
def test_logprobs_of_the_chosen_tokens(client, logprobs):
    [choice] = complete(client, prompt="lp", max_tokens=9, seed=4, logprobs=logprobs)["choices"]
    want = reference("lp", max_tokens=9, seed=4)
    lp = choice["logprobs"]
    assert lp["tokens"] == list(want.text) and "".join(lp["tokens"]) == choice["text"]
    assert lp["token_logprobs"] == pytest.approx(want.logprobs)
    assert lp["text_offset"] == [len("lp") + i for i in range(9)]  # from the start of the prompt, as OpenAI
    assert lp["top_logprobs"] is None


def test_logprobs_stop_at_the_stop_string(client):
    stop = _a_stop_string("lps", 6)
    [choice] = complete(client, prompt="lps", max_tokens=32, seed=6, stop=stop, logprobs=1)["choices"]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"] and len(lp["token_logprobs"]) == len(choice["text"])


def test_streaming_sends_openai_chunks_then_done(client):
    events = stream(client, prompt="streamed", max_tokens=20, seed=8)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) > 2  # token by token, not one block
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "text_completion" for c in chunks)
    assert all(c["model"] == "fake-model" and len(c["choices"]) == 1 for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == reference("streamed", max_tokens=20, seed=8).text


def test_streaming_several_choices_with_stop_strings_never_sends_cut_text(client):
    prompts = ["one", "two"]
    stops = [_a_stop_string(p, 30 + j) for p in prompts for j in range(2)]
    stop = [s for s in dict.fromkeys(stops)][:4]
    events = stream(client, prompt=prompts, n=2, max_tokens=32, seed=30, stop=stop)
    assert events[-1] == "[DONE]"
    sent = {i: "" for i in range(4)}
    finish = {}
    for chunk in events[:-1]:
        [c] = chunk["choices"]
        assert c["index"] not in finish, "a chunk after the choice finished"
        sent[c["index"]] += c["text"]
        if c["finish_reason"] is not None:
            finish[c["index"]] = c["finish_reason"]
    for i in range(4):
        want = reference(prompts[i // 2], max_tokens=32, seed=30 + i % 2, stop=tuple(stop))
        assert sent[i] == want.text and finish[i] == want.finish_reason
    assert "stop" in finish.values()
    # The same request unstreamed gives the same choices.
    body = complete(client, prompt=prompts, n=2, max_tokens=32, seed=30, stop=stop)
    assert [c["text"] for c in body["choices"]] == [sent[i] for i in range(4)]


BAD_REQUESTS = [
    ({"prompt": "x", "checkpoint": "/etc"}, "checkpoint"),  # nothing can name a file, checkpoint or config
    ({"prompt": "x", "config": "configs/gpt2_tiny.py"}, "config"),
    ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": "x", "best_of": 2}, "best_of"),
    ({"prompt": "x", "model": "gpt-4"}, "model"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["ok", ""]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["x"] * 65}, "prompt"),
    ({"prompt": "y" * 65}, "prompt"),  # over max_prompt_tokens (64)
    ({"prompt": ["ok", "y" * 65]}, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 33}, "max_tokens"),  # over the cap (32)
    ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 5.0}, "max_tokens"),
    ({"prompt": "x", "temperature": -0.1}, "temperature"),
    ({"prompt": "x", "temperature": 2.5}, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "temperature": True}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_p": 1.5}, "top_p"),
    ({"prompt": "x", "top_k": -1}, "top_k"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 9}, "n"),
    ({"prompt": ["x"] * 16, "n": 5}, "n"),  # 80 completions in one request
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "stop": 3}, "stop"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "seed": 2**31}, "seed"),
    ({"prompt": "x", "seed": "1"}, "seed"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": "x", "logprobs": 1, "stream": True}, "logprobs"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
]


@pytest.mark.parametrize("body,param", BAD_REQUESTS, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_REQUESTS)])
def test_bad_requests_are_400s_naming_the_field(live, client, body, param):
    calls = len(live.engine.calls)
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] is None
    assert error["message"]
    assert len(live.engine.calls) == calls  # never reached the engine
    assert complete(client, prompt="still here", max_tokens=2)["choices"][0]["text"]  # the server keeps serving


@pytest.mark.parametrize("raw", [b"{", b"", b'{"prompt": NaN}', b"\xff\xfe", b"[]", b'"prompt"'])
def test_bodies_that_are_not_a_json_object_are_400s(client, raw):
    r = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] is None


def test_nulls_mean_the_defaults(client):
    nulls = dict.fromkeys(["model", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "logprobs", "stream"])
    [choice] = complete(client, prompt="nul", seed=5, **nulls)["choices"]
    assert choice["text"] == reference("nul", seed=5).text and choice["logprobs"] is None


def test_a_body_over_the_limit_is_a_413(live, client):
    calls = len(live.engine.calls)
    big = json.dumps({"prompt": "x", "stop": ["y" * MAX_BODY]}).encode()
    r = client.post("/v1/completions", content=big)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"

    def chunked():  # no Content-Length: the limit applies while reading
        yield b'{"prompt": "'
        for _ in range(MAX_BODY // 100 + 1):
            yield b"z" * 100
        yield b'"}'

    r = client.post("/v1/completions", content=chunked())
    assert r.status_code == 413
    assert len(live.engine.calls) == calls
    with live.client() as fresh:  # the 413 may close its connection; the server goes on
        assert complete(fresh, prompt="after", max_tokens=2)["choices"][0]["text"]


def test_wrong_paths_and_methods_are_openai_errors(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = client.get("/v1/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_an_engine_failure_is_a_500_and_the_server_keeps_serving(client):
    r = client.post("/v1/completions", json={"prompt": FAIL, "max_tokens": 2})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    events = stream(client, prompt=FAIL, max_tokens=2)
    assert events[-1]["error"]["type"] == "server_error"
    assert (
        complete(client, prompt="fine", max_tokens=3, seed=1)["choices"][0]["text"]
        == reference("fine", max_tokens=3, seed=1).text
    )


def test_concurrent_load_is_answered_correctly_and_batched():
    """64 requests from 16 clients (threads, 4 requests each): single prompts, lists, n = 2 and streams."""
    engine = FakeEngine(max_batch_size=8, delay=0.02)

    def body(k: int) -> dict:
        return {"prompt": f"load {k}", "max_tokens": 1 + k % 8, "seed": k, "n": 2 if k % 4 == 1 else 1}

    with LiveServer(engine, max_wait_ms=20) as live:

        def client_thread(first: int) -> list[list[str]]:
            answers = []
            with live.client() as c:
                for k in range(first, 64, 16):
                    if k % 4 == 3:
                        events = stream(c, **body(k))
                        answers.append(["".join(e["choices"][0]["text"] for e in events[:-1])])
                    else:
                        answers.append([choice["text"] for choice in complete(c, **body(k))["choices"]])
            return answers

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            per_client = list(pool.map(client_thread, range(16)))
        health = live.health()
    for first, answers in enumerate(per_client):
        for k, texts in zip(range(first, 64, 16), answers, strict=True):
            b = body(k)
            want = [reference(b["prompt"], max_tokens=b["max_tokens"], seed=k + j).text for j in range(b["n"])]
            assert texts == want, k
    rows = 64 + 16  # the n = 2 requests have two rows
    assert sum(engine.calls) == rows and health["rows"] == rows
    assert max(engine.calls) > 1, engine.calls  # requests were merged into batches
    assert any(int(size) > 1 for size in health["batch_sizes"])
    assert health["completions_served"] == 64


def test_a_full_queue_is_a_503_and_queued_requests_still_finish(tmp_path):
    gate = tmp_path / "gate"  # the fake engine holds its batch until this file exists
    engine = FakeEngine(max_batch_size=1, gate=str(gate))
    with LiveServer(engine, max_wait_ms=0, max_queued=2) as live, live.client() as c1, live.client() as c2:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            try:  # the gate opens whatever happens: a failure must not leave requests (and the test) hanging
                first = pool.submit(complete, c1, prompt="first", max_tokens=3, seed=1)
                live.wait_for(lambda h: h["busy"], "the first request in the engine")
                second = pool.submit(complete, c2, prompt="second", n=2, max_tokens=3, seed=1)
                live.wait_for(lambda h: h["queue_depth"] == 2, "the second request queued")
                with live.client() as c3:
                    r = c3.post("/v1/completions", json={"prompt": "third", "max_tokens": 3})
            finally:
                gate.touch()
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "server_error"
            assert first.result()["choices"][0]["text"] == reference("first", max_tokens=3, seed=1).text
            texts = [c["text"] for c in second.result()["choices"]]
            assert texts == [reference("second", max_tokens=3, seed=s).text for s in (1, 2)]
    assert "third" not in engine.prompts


def test_a_stream_whose_client_left_drops_its_queued_rows(tmp_path):
    gate = tmp_path / "gate"
    engine = FakeEngine(max_batch_size=1, gate=str(gate))
    with LiveServer(engine, max_wait_ms=0) as live, live.client() as c1, live.client() as c2:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                running = pool.submit(complete, c1, prompt="running", max_tokens=2)
                live.wait_for(lambda h: h["busy"], "a batch in the engine")
                with c2.stream("POST", "/v1/completions", json={"prompt": "left", "n": 3, "stream": True}) as r:
                    assert r.status_code == 200
                    live.wait_for(lambda h: h["queue_depth"] == 3, "the stream's rows queued")
                c2.close()  # the client leaves before any text came
                live.wait_for(lambda h: h["queue_depth"] == 0, "the stream's rows dropped")
            finally:
                gate.touch()
            assert running.result()["choices"][0]["text"]
    assert engine.prompts == ["running"]


@pytest.mark.parametrize("streamed", [False, True])
def test_the_load_measurement_script_reports_the_load_it_sent(live, streamed):
    from lmx.inference import loadtest

    body = {"prompt": "measured", "max_tokens": 3, "stream": streamed}
    result = loadtest.measure(live.url, requests=12, concurrency=4, body=body)
    assert result["errors"] == [] and result["requests"] == 12
    assert 1 <= result["batches"] <= 12 and 1 <= result["mean_batch_size"] <= 4
    assert result["batches"] * result["mean_batch_size"] == pytest.approx(12)
    assert 0 < result["p50_s"] <= result["p99_s"] and result["requests_per_s"] > 0
