"""lmx.infer's input checks: every bad line is refused with its line number, field and value, before any model
is loaded (read_requests runs first)."""

import pytest

from lmx.infer import BadInput, read_requests


@pytest.mark.parametrize(
    "line, words",
    [
        ('{"prompt": "a", "max_tokens": "abc"}', "line 2: max_tokens='abc' is not an integer >= 1"),
        ('{"prompt": "a", "max_tokens": 0}', "line 2: max_tokens=0 is not an integer >= 1"),
        ('{"prompt": "a", "temperature": -1}', "line 2: temperature=-1 is not a number >= 0"),
        ('{"prompt": "a", "top_p": 1.5}', "line 2: top_p=1.5 is not a number in (0, 1]"),
        ('{"prompt": "a", "top_k": true}', "line 2: top_k=True is not an integer >= 0"),
        ('{"prompt": "a", "stop": [1]}', "line 2: stop=[1] is not a string or a list of strings"),
        ('{"prompt": "a", "checkpoint": "/etc"}', "line 2: unknown fields ['checkpoint']"),
        ('{"prompt": ""}', 'line 2: expected {"prompt": "<non-empty text>", ...}'),
        ("not json", "line 2 is not JSON"),
    ],
)
def test_bad_lines_name_their_line_field_and_value(tmp_path, line, words):
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "fine", "max_tokens": 3, "stop": ["x"]}\n' + line + "\n")
    with pytest.raises(BadInput) as error:
        read_requests(str(path), "generate")
    assert str(error.value).startswith(f"--input={path} {words}")


def test_good_lines_are_read_in_order(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a", "temperature": 0.5, "seed": 3}\n\n{"prompt": "b", "stop": "x"}\n')
    assert [r["prompt"] for r in read_requests(str(path), "generate")] == ["a", "b"]
