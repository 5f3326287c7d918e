"""A fake decoding engine with lmx.inference.engine.Engine's interface, for the server and batcher tests.

One token per character (token id = code point). A completion is drawn character by character from a small
alphabet by a PRNG seeded with (prompt, seed), or (prompt, 0) at temperature 0, so it depends on the request only,
never on what else is in the batch; `expected(request)` computes it without the engine, the tests' reference.
Stop strings cut the text as a real engine does, but on_update reports the raw text so far, stop strings and all,
so that the server's streaming must hold back what a stop string could still cut.

It records every generate() call's batch size, raises if two threads call generate() at once, can sleep per call
(`delay`), can wait for a file to exist before decoding (`gate`: the tests hold a batch in flight), and fails a
batch that holds the prompt FAIL.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence

from lmx.inference.requests import Generation, GenerationRequest

ALPHABET = "abcd e"
FAIL = "FAIL"


def _draws(request: GenerationRequest):
    """(character, logprob) pairs of the request's completion, before stop strings and max_tokens."""
    seed = request.params.seed if request.params.temperature > 0 else 0
    rng = random.Random(f"{request.prompt}|{seed}")
    while True:
        yield rng.choice(ALPHABET), -rng.randrange(1, 500) / 100


def expected(request: GenerationRequest) -> Generation:
    """The completion the fake engine gives `request`."""
    return _decode(request)[0]


def _decode(request: GenerationRequest) -> tuple[Generation, list[str]]:
    """The completion, and the raw text after each token (what on_update reports: a stop string may be in it)."""
    text, tokens, logprobs, raw = "", [], [], []
    draws = _draws(request)
    for _ in range(request.params.max_tokens):
        char, logprob = next(draws)
        text += char
        tokens.append(ord(char))
        logprobs.append(logprob)
        raw.append(text)
        cuts = [text.find(s) for s in request.params.stop if s in text]
        if cuts:
            return Generation(text[: min(cuts)], tokens, logprobs, "stop"), raw
    return Generation(text, tokens, logprobs, "length"), raw


class FakeEngine:
    model_name = "fake-model"

    def __init__(
        self,
        *,
        max_batch_size: int = 4,
        max_prompt_tokens: int = 64,
        max_new_tokens: int = 32,
        delay: float = 0.0,
        gate: str | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.delay = delay
        self.gate = gate
        self.calls: list[int] = []  # the batch size of each generate() call
        self.prompts: list[str] = []  # every prompt that reached the engine
        self._generating = threading.Lock()

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(chr(t) for t in tokens)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_update: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]:
        if not self._generating.acquire(blocking=False):
            raise RuntimeError("generate() called from two threads at once")
        try:
            assert 1 <= len(requests) <= self.max_batch_size, len(requests)
            self.calls.append(len(requests))
            self.prompts.extend(r.prompt for r in requests)
            while self.gate and not os.path.exists(self.gate):
                time.sleep(0.01)
            if self.delay:
                time.sleep(self.delay)
            if any(r.prompt == FAIL for r in requests):
                raise RuntimeError("the fake engine fails on FAIL")
            decoded = [_decode(r) for r in requests]
            if on_update is not None:  # every row one token per step, in lockstep like a batched decoder
                for step in range(max(len(raw) for _, raw in decoded)):
                    for i, (_, raw) in enumerate(decoded):
                        if step < len(raw):
                            on_update(i, Generation(raw[step], [ord(c) for c in raw[step]], [], "length"))
            results = [generation for generation, _ in decoded]
            return results
        finally:
            self._generating.release()
