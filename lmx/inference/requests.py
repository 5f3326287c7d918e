"""What a caller asks of the decoding engine and what it gets back; shared by `lmx.infer`, `lmx.serve` and tests.

Text in, text out: the engine owns the vocabulary. Nothing here can name a file, a checkpoint or a config.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How one completion is drawn. temperature 0 = greedy (top_k / top_p ignored); top_k 0 and top_p 1 = off."""

    max_tokens: int = 16  # new tokens at most (the engine's cap is Engine.max_new_tokens)
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0  # per request: the same seed and prompt give the same completion, whatever else is batched
    stop: tuple[str, ...] = ()  # the completion ends before the first of these strings (OpenAI `stop`)


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    params: SamplingParams = SamplingParams()


@dataclasses.dataclass
class Generation:
    """One completion. tokens/logprobs: the generated ids (without the EOS that ended it) and the model's log
    probability of each (log-softmax of the logits at temperature 1, before top-k/top-p), so logprob = sum."""

    text: str
    tokens: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens)

    @property
    def logprob(self) -> float:
        return float(sum(self.logprobs))
