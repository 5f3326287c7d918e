"""The wire format of OpenAI's legacy completions API: a request body checked field by field, and the JSON of
responses, stream chunks and errors.

Validation is written out here rather than left to a pydantic model: every refusal is a 400 in OpenAI's error
shape naming the one field at fault (`param`), with a message that says what would be accepted, and the checks
that need the model (the prompt's length in tokens, the max_tokens cap, the model's name) sit next to the others.

A request may set only the fields in FIELDS. OpenAI's other completion fields (echo, best_of, suffix, logit_bias,
presence_penalty, frequency_penalty, user, stream_options) are refused as unsupported, anything else as unknown;
so nothing in a request can name a file, a checkpoint or a config. `null` means the default, as in OpenAI's API.
Non-standard: `top_k` (0 = off). n > 1: the copies of a prompt get the seeds seed, seed + 1, ... (mod 2**31), so
they differ when sampling and are identical at temperature 0. Without a seed each request draws a random one.
`logprobs` (0..5) returns the chosen tokens' log probabilities only: top_logprobs is null whatever the number, and
a streamed request cannot ask for them. Prompts are text (not token ids), at most MAX_PROMPTS per request.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from collections.abc import Callable, Sequence

from lmx.inference.requests import Generation, GenerationRequest, SamplingParams

MAX_N = 8  # copies per prompt
MAX_PROMPTS = 64  # prompts in a list
MAX_CHOICES = 64  # prompts x n: the rows one request may queue
MAX_STOP = 4  # stop strings, as in OpenAI's API
MAX_LOGPROBS = 5  # OpenAI's cap on `logprobs`
SEED_MODULUS = 2**31  # seeds are in [0, 2**31): a jax PRNG key takes them without 64-bit mode
DEFAULT_MAX_TOKENS = 16  # OpenAI's default

FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "logprobs", "stream")
UNSUPPORTED = (
    "echo",
    "best_of",
    "suffix",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "stream_options",
)


class RequestError(Exception):
    """A request refused: `status` (4xx, or 503 when the server cannot take it) and the field at fault."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400, kind: str | None = None):
        super().__init__(message)
        self.param = param
        self.status = status
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return error_body(str(self), self.kind, self.param)


def error_body(message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the served model allows."""

    model_name: str
    max_prompt_tokens: int
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    """A checked request: every field in range, every prompt non-empty and short enough."""

    prompts: tuple[str, ...]
    prompt_tokens: tuple[int, ...]  # the length in tokens of each prompt
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    stop: tuple[str, ...]
    logprobs: int | None
    stream: bool

    def generation_requests(self) -> list[GenerationRequest]:
        """One row per choice, prompt-major (choice index = prompt_index * n + copy), as OpenAI orders choices."""
        rows = []
        for prompt in self.prompts:
            for copy in range(self.n):
                params = SamplingParams(
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    top_k=self.top_k,
                    top_p=self.top_p,
                    seed=(self.seed + copy) % SEED_MODULUS,
                    stop=self.stop,
                )
                rows.append(GenerationRequest(prompt, params))
        return rows


def _shown(value) -> str:
    """A value as the request had it, cut short for an error message."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer in [{low}, {high}], got {_shown(value)}", name)
    return value


def _number(body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    lower = "(" if low_open else "["
    ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    if not ok or not (low < value if low_open else low <= value) or value > high:
        raise RequestError(f"{name} must be a number in {lower}{low:g}, {high:g}], got {_shown(value)}", name)
    return float(value)


def _prompts(body: dict) -> tuple[str, ...]:
    if "prompt" not in body or body["prompt"] is None:
        raise RequestError("prompt is required: a string or a list of strings", "prompt")
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        # OpenAI also takes token ids; this server takes text only.
        raise RequestError("prompt must be a string or a list of strings", "prompt")
    if not prompts:
        raise RequestError("prompt is an empty list", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise RequestError(f"prompt is a list of {len(prompts)} strings; at most {MAX_PROMPTS} are taken", "prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise RequestError("prompt is empty" if isinstance(prompt, str) else f"prompt[{i}] is empty", "prompt")
    return tuple(prompts)


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP:
        raise RequestError(f"stop must be a string or a list of at most {MAX_STOP} strings", "stop")
    if not all(stops):
        raise RequestError("stop strings must not be empty", "stop")
    return tuple(stops)


def parse_completion(
    raw: bytes, limits: Limits, tokenize: Callable[[str], list[int]], *, random_seed: Callable[[], int] | None = None
) -> CompletionRequest:
    """The checked request in `raw` (a POST /v1/completions body), or RequestError naming the first bad field."""
    try:
        # parse_constant: JSON has no NaN or Infinity, though Python's parser takes them.
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestError(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    for name in body:
        if name in UNSUPPORTED:
            raise RequestError(f"{name} is not supported by this server", name)
        if name not in FIELDS:
            raise RequestError(f"unknown field {_shown(name)}; the fields are {', '.join(FIELDS)}", name)

    model = body.get("model")
    if model is not None and model != limits.model_name:
        raise RequestError(
            f"model {_shown(model)} is not served here; this server serves {limits.model_name!r}", "model"
        )
    prompts = _prompts(body)
    n = _integer(body, "n", 1, 1, MAX_N)
    if len(prompts) * n > MAX_CHOICES:
        raise RequestError(f"{len(prompts)} prompts x n={n} is over {MAX_CHOICES} completions per request", "n")
    max_tokens = _integer(body, "max_tokens", min(DEFAULT_MAX_TOKENS, limits.max_new_tokens), 1, limits.max_new_tokens)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    top_k = _integer(body, "top_k", 0, 0, 2**31 - 1)
    random_seed = random_seed or (lambda: secrets.randbelow(SEED_MODULUS))
    seed = _integer(body, "seed", None, 0, SEED_MODULUS - 1)
    seed = random_seed() if seed is None else seed
    stop = _stop(body)
    logprobs = _integer(body, "logprobs", None, 0, MAX_LOGPROBS)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(f"stream must be true or false, got {_shown(stream)}", "stream")
    stream = bool(stream)
    if stream and logprobs is not None:
        raise RequestError("logprobs is not supported with stream=true", "logprobs")

    # Last, as it costs the most: every prompt tokenized once, for the length check and for `usage`.
    lengths = []
    for i, p in enumerate(prompts):
        lengths.append(len(tokenize(p)))
        where = "prompt" if isinstance(body["prompt"], str) else f"prompt[{i}]"
        if lengths[-1] > limits.max_prompt_tokens:
            message = f"{where} is {lengths[-1]} tokens; this model takes at most {limits.max_prompt_tokens}"
            raise RequestError(message, "prompt")
        if lengths[-1] == 0:
            raise RequestError(f"{where} has no tokens", "prompt")
    return CompletionRequest(
        prompts, tuple(lengths), n, max_tokens, temperature, top_p, top_k, seed, stop, logprobs, stream
    )


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# Responses.


def completion_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


def choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None = None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def completion_body(
    request_id: str, created: int, model: str, choices: list[dict], *, prompt_tokens: int, completion_tokens: int
) -> dict:
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def chunk_body(request_id: str, created: int, model: str, index: int, text: str, finish_reason: str | None) -> dict:
    """One chunk of a streamed completion: OpenAI's completion shape with one choice and no usage."""
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice(index, text, finish_reason)],
    }


REPLACEMENT = "\ufffd"


def logprobs_body(prompt: str, generation: Generation, detokenize: Callable[[Sequence[int]], str]) -> dict:
    """OpenAI's `logprobs` object for the chosen tokens: tokens (each token's text), token_logprobs, text_offset
    (where each token's text starts, counted in characters from the start of the prompt, as OpenAI counts) and
    top_logprobs null (the engine returns the chosen tokens' log probabilities only).

    A token's text is what it adds to the decoded text of the tokens before it, so the texts join up to the
    completion; a token that ends inside a character (byte-level vocabularies) gets "" and the token that
    completes the character gets all of it. When a stop string cut the text short of its tokens, the tokens that
    start after the cut are left out and the last one's text is cut too."""
    pieces, starts, done = [], [], ""
    for i in range(len(generation.tokens)):
        text = detokenize(generation.tokens[: i + 1]).rstrip(REPLACEMENT)
        starts.append(len(done))
        if text.startswith(done):
            pieces.append(text[len(done) :])
            done = text
        else:  # a decoder whose text of a prefix is not a prefix of the text: nothing to attribute to this token
            pieces.append("")
    keep = len(pieces)
    if done != generation.text:
        keep = sum(1 for start in starts if start < len(generation.text))
        if keep:
            pieces[keep - 1] = pieces[keep - 1][: len(generation.text) - starts[keep - 1]]
    return {
        "tokens": pieces[:keep],
        "token_logprobs": [float(x) for x in generation.logprobs[:keep]],
        "top_logprobs": None,
        "text_offset": [len(prompt) + start for start in starts[:keep]],
    }
