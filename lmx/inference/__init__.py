"""Decoding and serving: KV-cached generation and scoring (`decode`), the request records and the engine that
batches them onto a jitted decoder (`requests`, `engine`), `python -m lmx.infer` and `python -m lmx.serve`."""
