"""Does GPT-3's locally banded attention cost grow with length x band rather than length^2?

    python experiments/banded_attention/run.py                  # gpt3_small's layer: 12 heads of 64, band 256
    python experiments/banded_attention/run.py --rounds=9 --lengths=512,1024,2048

Times forward + backward (gradients of the input and, for the layer, of its parameters) of
  - "layer": one MultiHeadAttention (q/k/v/out projections + attention), banded (band > 0) or dense causal;
  - "core":  the attention alone (lmx.models.attention.banded_attention vs dot_product_attention with the causal
             mask as a bias, the mask built once outside, as the model shares it across layers),
at each length, float32, batch 1. Every variant is compiled first; then each round runs every variant once, in an
order that reverses between rounds, and the median over rounds is reported, so a burst of other load on a shared
machine slows all variants alike. Also prints XLA's temp memory of each compiled step.
Goal (issue 10): the banded layer grows at most 4.5x for 4x the length; dense attention's core grows ~16x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from lmx.models.attention import (
    MultiHeadAttention,
    banded_attention,
    dot_product_attention,
    mask_to_bias,
    self_attention_mask,
)
from lmx.models.init import Inits


def layer_step(length: int, band: int, args):
    """A compiled fwd+bwd of one attention layer at `length` (band 0 = dense causal) and its arguments."""
    module = MultiHeadAttention(
        args.heads, args.head_dim, 0.0, use_bias=True, scale_logits=True, inits=Inits("normal", 0.02, 1.0)
    )
    keys = jax.random.split(jax.random.key(length + band), 3)
    x = jax.random.normal(keys[0], (args.batch, length, args.heads * args.head_dim))
    cotangent = jax.random.normal(keys[1], x.shape)
    segments = jnp.ones((args.batch, length), jnp.int32)
    bias = None if band else mask_to_bias(self_attention_mask(segments, causal=True))  # [B, 1, L, L]
    params = module.init(keys[2], x, x, bias, deterministic=True)["params"]

    def loss(params, x, bias):
        out = module.apply({"params": params}, x, x, bias, deterministic=True, band=band, segment_ids=segments)
        return jnp.sum(out * cotangent)

    return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x, bias)


def core_step(length: int, band: int, args):
    """A compiled fwd+bwd of the attention alone (no projections) and its arguments."""
    keys = jax.random.split(jax.random.key(length + band + 1), 4)
    shape = (args.batch, length, args.heads, args.head_dim)
    q, k, v, cotangent = (jax.random.normal(key, shape) for key in keys)
    segments = jnp.ones((args.batch, length), jnp.int32)
    bias = mask_to_bias(self_attention_mask(segments, causal=True))

    def loss(q, k, v, bias):
        out = banded_attention(q, k, v, segments, band) if band else dot_product_attention(q, k, v, bias)
        return jnp.sum(out * cotangent)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2))), (q, k, v, None if band else bias)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="512,2048")
    parser.add_argument("--band", type=int, default=256)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]

    variants = {}  # (part, kind, length) -> (compiled fn, args)
    for part, build in (("layer", layer_step), ("core", core_step)):
        for kind, band in (("banded", args.band), ("dense", 0)):
            for length in lengths:
                fn, fn_args = build(length, band, args)
                compiled = fn.lower(*fn_args).compile()
                temp = compiled.memory_analysis().temp_size_in_bytes
                jax.block_until_ready(compiled(*fn_args))  # warm
                variants[(part, kind, length)] = (compiled, fn_args, temp)

    times = {name: [] for name in variants}
    order = list(variants)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            compiled, fn_args, _ = variants[name]
            start = time.perf_counter()
            jax.block_until_ready(compiled(*fn_args))
            times[name].append(time.perf_counter() - start)

    first, last = lengths[0], lengths[-1]
    print(
        f"fwd+bwd, float32, batch {args.batch}, {args.heads} heads x {args.head_dim}, band {args.band}, "
        f"median of {args.rounds} interleaved rounds ({jax.device_count()} {jax.devices()[0].platform} devices)"
    )
    header = " | ".join(f"{n} tokens ms" for n in lengths)
    print(f"| part  | kind   | {header} | {last}/{first} | temp MiB at {last} |")
    print("|" + "---|" * (4 + len(lengths)))
    for part in ("layer", "core"):
        for kind in ("banded", "dense"):
            medians = [statistics.median(times[(part, kind, n)]) * 1e3 for n in lengths]
            temp = variants[(part, kind, last)][2] / 2**20
            cells = " | ".join(f"{m:.1f}" for m in medians)
            print(f"| {part:5} | {kind:6} | {cells} | {medians[-1] / medians[0]:.2f}x | {temp:.0f} |")


if __name__ == "__main__":
    main()
