"""Streaming a completion's text as it is decoded, without ever sending text the final answer does not have.

The engine reports the text so far after each decoded chunk, but that text is not final: a stop string may be
completed by the next tokens (the completion then ends before it), and a byte-level tokenizer may end the text in
an incomplete character (decoded as U+FFFD until its last byte arrives). So `StreamedText.update` sends only

  - text before the first stop string found in it (the engine cuts there too),
  - minus the longest end of it that begins a stop string (later tokens could complete the stop string),
  - minus trailing U+FFFD characters;

and `finish(final_text)` sends the rest of the engine's final text, which is authoritative. What was sent is
always a prefix of the final text, provided the engine's final text extends its partial texts as described.
"""

from __future__ import annotations

import json

REPLACEMENT = "\ufffd"
DONE = b"data: [DONE]\n\n"


class StreamedText:
    """The text of one streamed choice: what was sent so far, and what may be sent next."""

    def __init__(self, stop: tuple[str, ...]):
        self._stop = stop
        self.sent = ""

    def update(self, text: str) -> str:
        """The new text that is safe to send, given the engine's text so far ("" when none)."""
        for s in self._stop:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        text = text[: len(text) - _partial_stop(text, self._stop)].rstrip(REPLACEMENT)
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta = text[len(self.sent) :]
        self.sent = text
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of the final text. If the engine's final text does not extend what was sent (an engine that
        broke the contract above), sent text cannot be taken back: the rest is sent from the same offset."""
        delta = final_text[len(self.sent) :]
        self.sent = final_text
        return delta


def _partial_stop(text: str, stop: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that is the start of a stop string (which later text may
    complete); 0 when none."""
    longest = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


def event(payload: dict) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
