"""Beam search over the KV-cached decoder (lmx.inference.decode), scored as T5X does.

Each row keeps K *alive* hypotheses (no EOS yet) and K *finished* ones. Every step:
  1. Expand: the K alive log-probabilities + log p(next token) -> K x V candidates; keep the best 2K (enough that K
     of them are not EOS).
  2. Candidates ending in EOS *among the best K* become finished (as fairseq and Hugging Face do; T5X takes EOS
     from all 2K, so its beam size 1 is not greedy search — here it is), scored log p / length_penalty(length),
     length_penalty(n) = ((5 + n) / 6)^alpha (Wu et al. 2016, GNMT eq. 14; T5X's `brevity_penalty`), n counting
     the EOS; the best K of the old and new finished stay.
  3. The best K candidates that did not end become the alive beams; the cache rows are gathered from their parents.
  4. Stop early when no alive beam can still beat the worst finished one: alpha >= 0 makes a longer hypothesis's
     penalty larger, so the best an alive beam can reach is its log p / length_penalty(T).
A row with no finished hypothesis after T steps returns its best alive one (stopped by length), as T5X does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.inference import decode

Array = jax.Array
NEG_INF = -1e9  # "no hypothesis": below any real log-probability, but finite so comparisons stay exact


def length_penalty(length: Array, alpha: float) -> Array:
    return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def _gather_beams(tree: Any, parents: Array, batch: int, beams: int) -> Any:
    """Reorders the [B * K, ...] rows of every cache leaf (rows on axis 1 under a scanned `layers` stack) by parent
    beam: parents [B, K] -> row b * K + parents[b, k]."""
    rows = (jnp.arange(batch)[:, None] * beams + parents).reshape(-1)  # [B * K]

    def gather(path, leaf):
        scanned = any(getattr(entry, "key", None) == "layers" for entry in path)
        return jnp.take(leaf, rows, axis=1 if scanned else 0)

    return jax.tree_util.tree_map_with_path(gather, tree)


def beam_search(
    model: nn.Module,
    params: Any,
    inputs: Mapping[str, Array],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int,
    alpha: float = 0.6,
    bidirectional_prompt: bool = False,
) -> decode.Generated:
    """The best hypothesis of each row (inputs as decode.start) -> Generated [B, T]; logprobs are per token."""
    batch = next(iter(inputs.values())).shape[0]
    beams, steps = num_beams, max_new_tokens
    repeated = {name: jnp.repeat(value, beams, axis=0) for name, value in inputs.items()}  # [B * K, ...]
    state = decode.start(model, params, repeated, steps, bidirectional_prompt=bidirectional_prompt)

    alive_logp = jnp.full((batch, beams), NEG_INF).at[:, 0].set(0.0)  # one live beam at first: no duplicates
    empty_tokens = jnp.zeros((batch, beams, steps), jnp.int32)
    empty_logprobs = jnp.zeros((batch, beams, steps), jnp.float32)
    carry = dict(
        t=jnp.int32(0),
        state=state,
        alive_tokens=empty_tokens,
        alive_logprobs=empty_logprobs,
        alive_logp=alive_logp,
        finished_tokens=empty_tokens,
        finished_logprobs=empty_logprobs,
        finished_score=jnp.full((batch, beams), NEG_INF),
        finished_length=jnp.zeros((batch, beams), jnp.int32),
    )

    def running(c):
        best_alive = c["alive_logp"][:, 0] / length_penalty(jnp.int32(steps), alpha)
        worst_finished = jnp.min(c["finished_score"], axis=1)
        return (c["t"] < steps) & ~jnp.all(worst_finished >= best_alive)

    def one_step(c):
        t = c["t"]
        vocab = c["state"].logits.shape[-1]
        log_probs = jax.nn.log_softmax(c["state"].logits).reshape(batch, beams, vocab)
        candidates = (c["alive_logp"][:, :, None] + log_probs).reshape(batch, beams * vocab)
        logp, flat = jax.lax.top_k(candidates, 2 * beams)  # [B, 2K]
        parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        token_logp = jnp.take_along_axis(log_probs.reshape(batch, -1), flat, axis=1)  # [B, 2K]

        def extend(tokens, per_token, record):  # parents' histories [B, K, T] + this step's token -> [B, 2K, T]
            tokens = jnp.take_along_axis(tokens, parent[:, :, None], axis=1)
            per_token = jnp.take_along_axis(per_token, parent[:, :, None], axis=1)
            return tokens.at[:, :, t].set(jnp.where(record, token, 0)), per_token.at[:, :, t].set(
                jnp.where(record, token_logp, 0.0)
            )

        is_eos = token == eos_id
        # Finished: EOS candidates (the EOS is not recorded), merged with the finished so far.
        new_tokens, new_logprobs = extend(c["alive_tokens"], c["alive_logprobs"], ~is_eos)
        in_top_k = jnp.arange(2 * beams)[None, :] < beams  # top_k sorts: the first K candidates are the best K
        new_score = jnp.where(is_eos & in_top_k, logp / length_penalty(t + 1, alpha), NEG_INF)
        all_score = jnp.concatenate([c["finished_score"], new_score], axis=1)  # [B, 3K]
        finished_score, keep = jax.lax.top_k(all_score, beams)

        def pick(old, new):
            return jnp.take_along_axis(
                jnp.concatenate([old, new], axis=1), keep.reshape(*keep.shape, *(1,) * (old.ndim - 2)), axis=1
            )

        finished_tokens = pick(c["finished_tokens"], new_tokens)
        finished_logprobs = pick(c["finished_logprobs"], new_logprobs)
        finished_length = pick(c["finished_length"], jnp.full((batch, 2 * beams), t, jnp.int32))

        # Alive: the best K candidates that did not end.
        alive_logp, chosen = jax.lax.top_k(jnp.where(is_eos, NEG_INF, logp), beams)  # [B, K]
        alive_tokens = jnp.take_along_axis(new_tokens, chosen[:, :, None], axis=1)
        alive_logprobs = jnp.take_along_axis(new_logprobs, chosen[:, :, None], axis=1)
        parents = jnp.take_along_axis(parent, chosen, axis=1)
        next_token = jnp.take_along_axis(token, chosen, axis=1).reshape(-1)  # [B * K]
        state = c["state"].replace(cache=_gather_beams(c["state"].cache, parents, batch, beams))
        state = decode.feed(model, params, state, next_token)
        return dict(
            t=t + 1,
            state=state,
            alive_tokens=alive_tokens,
            alive_logprobs=alive_logprobs,
            alive_logp=alive_logp,
            finished_tokens=finished_tokens,
            finished_logprobs=finished_logprobs,
            finished_score=finished_score,
            finished_length=finished_length,
        )

    c = jax.lax.while_loop(running, one_step, carry)
    any_finished = c["finished_score"][:, 0] > NEG_INF / 2  # [B]
    return decode.Generated(
        tokens=jnp.where(any_finished[:, None], c["finished_tokens"][:, 0], c["alive_tokens"][:, 0]),
        logprobs=jnp.where(any_finished[:, None], c["finished_logprobs"][:, 0], c["alive_logprobs"][:, 0]),
        lengths=jnp.where(any_finished, c["finished_length"][:, 0], c["t"]),
        finished=any_finished,
    )
