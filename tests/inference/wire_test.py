"""The pieces of the wire format without a server: streamed text held back, the logprobs object, parsing."""

from __future__ import annotations

import json

import pytest

from lmx.inference import openai_schema as schema
from lmx.inference.requests import Generation
from lmx.inference.streaming import StreamedText, event


def test_streamed_text_holds_back_what_a_stop_string_could_still_cut():
    s = StreamedText(stop=("STOP", "xy"))
    assert s.update("ab") == "ab"
    assert s.update("abcdef") == "cdef"
    assert s.update("abcdefST") == ""  # "ST" may become "STOP"
    assert s.update("abcdefSTx") == "ST"  # "STx" cannot become "STOP", but "x" may become "xy"
    assert s.update("abcdefSTxz") == "xz"
    assert s.update("abcdefSTxzSTO") == ""
    assert s.update("abcdefSTxzSTOP and more") == ""  # cut at the stop string
    assert s.finish("abcdefSTxz") == ""  # the engine's final text
    assert s.sent == "abcdefSTxz"


def test_streamed_text_without_stop_strings_sends_everything_but_incomplete_characters():
    s = StreamedText(stop=())
    assert s.update("caf") == "caf"
    assert s.update("caf\ufffd") == ""  # the first byte of "é": not a character yet
    assert s.update("café") == "é"
    assert s.finish("café!") == "!"


def test_streamed_text_is_a_prefix_of_the_final_text_however_the_updates_split():
    stop = ("ee", "two t")
    raw = "one two three!"  # the engine's text so far runs past its final text, "one " (cut at "two t")
    for step in range(1, 6):
        s = StreamedText(stop)
        sent = ""
        for end in [*range(step, len(raw), step), len(raw)]:
            sent += s.update(raw[:end])
            assert "one ".startswith(sent), (step, end, sent)
        assert sent + s.finish("one ") == "one "


def test_event_is_one_server_sent_event():
    assert event({"a": [1, "é"]}) == b'data: {"a":[1,"\\u00e9"]}\n\n'
    assert json.loads(event({"x": 1})[len(b"data: ") : -2]) == {"x": 1}


def test_logprobs_body_token_texts_join_to_the_completion():
    # A sentencepiece-like vocabulary: a token's text depends on what comes before (no leading space at the start).
    vocab = {1: "▁hello", 2: "▁world", 3: "!"}

    def detokenize(ids):
        return "".join(vocab[i] for i in ids).replace("▁", " ").lstrip(" ")

    generation = Generation("hello world!", [1, 2, 3], [-1.0, -2.0, -0.5], "length")
    body = schema.logprobs_body("Say:", generation, detokenize)
    assert body == {
        "tokens": ["hello", " world", "!"],
        "token_logprobs": [-1.0, -2.0, -0.5],
        "top_logprobs": None,
        "text_offset": [4, 9, 15],
    }


def test_logprobs_body_with_partial_characters_and_a_stop_string():
    # Byte-level tokens: 10 and 11 are the two bytes of "é"; the text stopped at "x" (the stop string).
    pieces = {10: b"\xc3", 11: b"\xa9", 12: b"a", 13: b"xy"}

    def detokenize(ids):
        return b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")

    generation = Generation("éa", [10, 11, 12, 13], [-1.0, -2.0, -3.0, -4.0], "stop")
    body = schema.logprobs_body("", generation, detokenize)
    assert body["tokens"] == ["", "é", "a"]  # the token that completes the character carries it
    assert body["token_logprobs"] == [-1.0, -2.0, -3.0]  # the token past the stop string is left out
    assert body["text_offset"] == [0, 0, 1]


LIMITS = schema.Limits("m", max_prompt_tokens=8, max_new_tokens=20)


def parse(body: dict, **kwargs) -> schema.CompletionRequest:
    return schema.parse_completion(json.dumps(body).encode(), LIMITS, list, **kwargs)


def test_parse_fills_openai_defaults_and_draws_a_seed():
    request = parse({"prompt": "abc"}, random_seed=lambda: 77)
    assert request.prompts == ("abc",) and request.prompt_tokens == (3,)
    assert (request.n, request.max_tokens, request.temperature, request.top_p, request.top_k) == (1, 16, 1.0, 1.0, 0)
    assert request.seed == 77 and request.stop == () and request.logprobs is None and request.stream is False


def test_rows_are_prompt_major_with_consecutive_seeds_that_wrap():
    request = parse({"prompt": ["a", "b"], "n": 3, "seed": 2**31 - 2, "stop": "x", "temperature": 0})
    got = [(r.prompt, r.params.seed, r.params.stop, r.params.temperature) for r in request.generation_requests()]
    seeds = [2**31 - 2, 2**31 - 1, 0]
    assert got == [(p, s, ("x",), 0.0) for p in "ab" for s in seeds]


def test_the_default_max_tokens_respects_a_smaller_cap():
    limits = schema.Limits("m", max_prompt_tokens=8, max_new_tokens=4)
    assert schema.parse_completion(b'{"prompt": "a"}', limits, list).max_tokens == 4


@pytest.mark.parametrize("raw", [b'{"prompt": "a", "temperature": Infinity}', b'{"prompt": "a", "top_p": -Infinity}'])
def test_json_constants_outside_the_standard_are_refused(raw):
    with pytest.raises(schema.RequestError, match="not valid JSON"):
        schema.parse_completion(raw, LIMITS, list)


def test_a_prompt_without_tokens_is_refused():
    with pytest.raises(schema.RequestError) as e:
        schema.parse_completion(b'{"prompt": ["ok", " "]}', LIMITS, lambda text: list(text.strip()))
    assert e.value.param == "prompt" and "prompt[1] has no tokens" in str(e.value)
