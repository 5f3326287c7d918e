"""python tests/inference/fake_serve.py [lmx.serve's flags]: the real `lmx.serve` CLI serving the fake engine, for
the tests of SIGTERM and exit statuses, and for measuring the server alone. The engine comes in through
lmx.serve.run's `load` argument, which no flag and no request can reach. FAKE_ENGINE_GATE=PATH: every batch waits
until PATH exists; FAKE_ENGINE_DELAY=SECONDS: every batch takes that long more (fake_engine.py)."""

import os
import sys

from fake_engine import FakeEngine

from lmx import serve


def load(config: str, checkpoint: str, *, max_batch_size: int, max_new_tokens: int) -> FakeEngine:
    if config == "missing.py":  # how the real engine refuses a bad config: a ValueError or FileNotFoundError
        raise FileNotFoundError("config file missing.py does not exist")
    return FakeEngine(
        max_batch_size=max_batch_size,
        max_new_tokens=max_new_tokens,
        gate=os.environ.get("FAKE_ENGINE_GATE"),
        delay=float(os.environ.get("FAKE_ENGINE_DELAY", "0")),
    )


if __name__ == "__main__":
    serve.run(sys.argv, load=load)
