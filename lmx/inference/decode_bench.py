"""`python -m lmx.bench --mode=decode`: prefill and KV-cached decode throughput of a config, and cached vs uncached.

For each batch size B (random prompts of P tokens, random parameters, the config's dtype, one device):
  prefill_tokens_per_s   B x P / the prefill (decode.start: the encoder, or the decoder over the prompt, filling the
                         cache), median of `repeats` runs
  decode_tokens_per_s    B x T / (decode.generate - prefill): T new tokens per row, EOS disabled so every row makes T
  kv_cache_bytes         the cache's arrays (keys and values of every layer, [B, C, kv heads, head_dim] each)
  uncached_tokens_per_s  decoding without a cache as a fixed-shape jitted loop does it: every new token reruns the
                         training forward pass over the whole [B, P + T] buffer (causality makes the extra positions
                         harmless); timed over `uncached_tokens` tokens (its cost per token is constant)
  cached_speedup         decode_tokens_per_s / uncached_tokens_per_s
"""

from __future__ import annotations

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.inference import decode
from lmx.models import build_model


def _median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _inputs(model, batch: int, prompt_length: int, key) -> dict:
    tokens = jax.random.randint(key, (batch, prompt_length), 2, model.config.vocab_size, jnp.int32)
    if decode.is_encoder_decoder(model):
        return {"encoder_input_tokens": tokens}
    return {"prompt_tokens": tokens, "prompt_lengths": jnp.full((batch,), prompt_length, jnp.int32)}


def _uncached(model, params, inputs, total: int, steps: int):
    """`steps` greedy tokens, each from a full forward pass over a fixed [B, total] buffer (no cache)."""
    if decode.is_encoder_decoder(model):
        encoder = inputs["encoder_input_tokens"]
        buffer = jnp.zeros((encoder.shape[0], total), jnp.int32)  # decoder inputs: start token 0, then the new ones

        def body(t, buffer):
            logits = model.apply({"params": params}, {"encoder_input_tokens": encoder, "decoder_input_tokens": buffer})
            token = jnp.argmax(logits["logits"][:, t], axis=-1).astype(jnp.int32)
            return buffer.at[:, t + 1].set(token)

        return jax.lax.fori_loop(0, steps, body, buffer)
    prompt = inputs["prompt_tokens"]
    length = prompt.shape[1]
    buffer = jnp.zeros((prompt.shape[0], total), jnp.int32).at[:, :length].set(prompt)

    def body(t, buffer):
        logits = model.apply({"params": params}, {"decoder_input_tokens": buffer})["logits"]
        token = jnp.argmax(logits[:, length - 1 + t], axis=-1).astype(jnp.int32)
        return buffer.at[:, length + t].set(token)

    return jax.lax.fori_loop(0, steps, body, buffer)


def bench_decode(
    config: ml_collections.ConfigDict,
    *,
    batch_sizes: list[int],
    prompt_length: int,
    new_tokens: int,
    uncached_tokens: int,
    repeats: int = 3,
) -> dict:
    model = build_model(config.model)
    decode.is_encoder_decoder(model)  # refuses a model without a decoder
    ones = jnp.ones((1, 8), jnp.int32)
    init = {"encoder_input_tokens": ones, "decoder_input_tokens": ones}
    params = nn.unbox(jax.jit(lambda k: model.init({"params": k}, init))(jax.random.key(0))["params"])
    result: dict = {"mode": "decode", "prompt_length": prompt_length, "new_tokens": new_tokens}
    for batch in batch_sizes:
        row = _bench_batch(model, params, batch, prompt_length, new_tokens, uncached_tokens, repeats)
        result.update({f"batch{batch}/{name}": value for name, value in row.items()})
    return result


def _bench_batch(model, params, batch, prompt_length, new_tokens, uncached_tokens, repeats) -> dict:
    inputs = _inputs(model, batch, prompt_length, jax.random.key(batch))
    prefill = jax.jit(lambda p, i: decode.start(model, p, i, new_tokens))
    generate = jax.jit(lambda p, i: decode.generate(model, p, i, max_new_tokens=new_tokens, eos_id=-1))
    prefill_s = _median_seconds(lambda: prefill(params, inputs).logits, repeats)
    total_s = _median_seconds(lambda: generate(params, inputs).tokens, repeats)
    cache = jax.eval_shape(prefill, params, inputs).cache
    # The uncached buffer: the decoder's every slot (T5: the start token and the new tokens).
    total = decode.cache_length(model, prompt_length, new_tokens)
    uncached = jax.jit(lambda p, i: _uncached(model, p, i, total, uncached_tokens))
    uncached_s = _median_seconds(lambda: uncached(params, inputs), 1)
    row = {
        "prefill_tokens_per_s": batch * prompt_length / prefill_s,
        "decode_tokens_per_s": batch * new_tokens / max(total_s - prefill_s, 1e-9),
        "kv_cache_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache)),
        "uncached_tokens_per_s": batch * uncached_tokens / uncached_s,
        "generate_s": total_s,
    }
    row["cached_speedup"] = row["decode_tokens_per_s"] / row["uncached_tokens_per_s"]
    return row
