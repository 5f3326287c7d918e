"""`lmx.infer` and `lmx.serve` on a real checkpoint: a random gpt2_tiny written in-process, then one lmx.infer run
(generate) and one lmx.serve run answered over HTTP, plain and streamed, stopped by SIGTERM — checked against the
vocabulary and against each other (greedy decoding is deterministic, so the server and the file agree)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import httpx
import jax
from lmx_cli import env_for

from lmx import config_lib
from lmx.convert import lmx_files, tensors
from lmx.data import vocab as vocab_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = "configs/gpt2_tiny.py"
PROMPTS = ["The king said", "Once upon a time", "To be, or not to be"]


def test_infer_and_serve_answer_from_a_real_checkpoint(tmp_path):
    config = config_lib.load_config_file(str(REPO / CONFIG))
    params = jax.tree.map(lambda x: x, tensors.init_params(config.model, jax.random.key(3), abstract=False))
    step_dir = lmx_files.write_checkpoint(params, config, str(tmp_path / "run"))
    env = env_for(tmp_path / "cache", devices=1)
    vocabulary = vocab_lib.get_vocabulary(config.data)

    # Bad input: one line, exit 2, before any model is loaded; the output file is not created.
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmx.infer",
            f"--config={CONFIG}",
            f"--checkpoint={step_dir}",
            f"--input={tmp_path / 'bad.jsonl'}",
            f"--output={tmp_path / 'never.jsonl'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f'lmx.infer: error: --input={tmp_path / "bad.jsonl"} line 2: expected {{"prompt": "<non-empty text>", ...}}'
    ]
    assert not (tmp_path / "never.jsonl").exists()

    # lmx.infer, greedy.
    lines = [{"prompt": p} for p in PROMPTS] + [{"prompt": PROMPTS[0], "max_tokens": 3}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmx.infer",
            f"--config={CONFIG}",
            f"--checkpoint={step_dir}",
            f"--input={tmp_path / 'in.jsonl'}",
            f"--output={tmp_path / 'out.jsonl'}",
            "--max_tokens=12",
            "--batch_size=2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "tokens generated in" in done.stderr.splitlines()[-1] and "tokens/s" in done.stderr
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["prompt"] for o in out] == [x["prompt"] for x in lines]
    for o in out:
        assert set(o) == {"prompt", "completion", "tokens", "logprob", "finish_reason"}
        assert o["completion"] == vocabulary.decode(o["tokens"]) and o["logprob"] < 0
    assert len(out[0]["tokens"]) == 12 and out[3]["tokens"] == out[0]["tokens"][:3]  # per-line max_tokens

    # lmx.serve on the same checkpoint: the same greedy completions over HTTP, plain and streamed.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmx.serve",
            f"--config={CONFIG}",
            f"--checkpoint={step_dir}",
            "--port=0",
            "--max_new_tokens=32",
            "--max_batch_size=4",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("lmx.serve: serving gpt2_tiny@0 on http://127.0.0.1:"), (line, server.stderr.read())
        url = line.split(" on ")[1].split()[0]
        body = {"prompt": PROMPTS, "max_tokens": 12, "temperature": 0}
        reply = httpx.post(url + "/v1/completions", json=body, timeout=300).json()
        assert [c["text"] for c in reply["choices"]] == [o["completion"] for o in out[:3]]
        assert reply["usage"]["completion_tokens"] == sum(len(o["tokens"]) for o in out[:3])
        streamed = ""
        with httpx.stream(
            "POST", url + "/v1/completions", json={**body, "prompt": PROMPTS[1], "stream": True}, timeout=300
        ) as response:
            events = [x[len("data: ") :] for x in response.iter_lines() if x.startswith("data: ")]
        assert events[-1] == "[DONE]"
        streamed = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        assert streamed == out[1]["completion"]
        too_long = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 33}, timeout=60)
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"
        assert httpx.get(url + "/v1/models", timeout=60).json()["data"][0]["id"] == "gpt2_tiny@0"
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=300)
    assert server.returncode == 0, stderr
    assert "stopped after the requests in flight" in stdout
    os.sync()
