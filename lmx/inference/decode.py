"""KV-cached autoregressive decoding of every family with a decoder (T5 1.0/1.1, GPT-2/3, the modern decoder, their
Switch versions): greedy and temperature / top-k / top-p sampling, per row; beam search is `beam_search.py`.

Data flow (all jitted, fixed shapes; `generate` = `start` + `advance` + `result`):
  start:   the prompt in one call (the prefill) fills the cache and gives the first next-token logits.
           Decoder-only prompts arrive right-padded ([B, P] + lengths) and are *left*-padded here, so every row's
           last prompt token sits at slot P - 1 and all rows write slot P, P + 1, ... together (one cache index for
           the batch); positions count each row's own tokens (left padding does not count), so learned and rotary
           positions see what an unpadded row would; the padding slots are masked out of the keys.
           Encoder-decoder: the encoder runs once; the decoder starts from token 0 at slot 0 and its cross-attention
           keys/values are computed in that first call and cached.
  advance: a `jax.lax.while_loop` over new tokens: choose a token from the logits (per row: greedy when
           temperature is 0, else sampled from softmax(logits / T) restricted to the top k and the top-p nucleus,
           with a key from the row's seed and the step, so a row's completion does not depend on its batch), record
           it and its log-probability, feed it through the cache at the next slot. A row ends at EOS (not recorded)
           or after its max_new tokens. `advance` stops after `steps` tokens, so callers can stream chunks.
  Cache length C = P + T (decoder-only) or 1 + T (T5 decoder): the slot of every token fed.
Sharding: the cache's leaves carry logical axes (batch, length, heads, kv) like the activations, so a caller that jits
under the training mesh and rules (lmx.inference.engine) decodes a model sharded the way it trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.models.decoder_only import DecoderOnly
from lmx.models.encoder_decoder import EncoderDecoder

Array = jax.Array


@flax.struct.dataclass
class Sampling:
    """Per-row decoding settings, arrays [B]: temperature (0 = greedy), top_k (0 = off), top_p (1 = off), seed,
    max_new (new tokens at most, <= the compiled T), vocab_limit (ids >= it are never chosen: the rows that pad the
    model's table beyond the vocabulary, e.g. 2,000 pieces in a 2,048-row table)."""

    temperature: Array
    top_k: Array
    top_p: Array
    seed: Array
    max_new: Array
    vocab_limit: Array

    @classmethod
    def make(
        cls, batch: int, max_new: int, *, temperature=0.0, top_k=0, top_p=1.0, seed=0, vocab_limit=2**31 - 1
    ) -> Sampling:
        """The same settings for every row (scalars broadcast; arrays [B] pass through)."""

        def rows(value, dtype):
            return jnp.broadcast_to(jnp.asarray(value, dtype), (batch,))

        return cls(
            rows(temperature, jnp.float32),
            rows(top_k, jnp.int32),
            rows(top_p, jnp.float32),
            rows(seed, jnp.uint32),
            rows(max_new, jnp.int32),
            rows(vocab_limit, jnp.int32),
        )


@flax.struct.dataclass
class DecodeState:
    cache: Any  # the "cache" collection: per layer key/value [B, C, M, H] (stacked [layers, ...] when scanned)
    logits: Array  # [B, V] float32: the next token's logits
    cache_index: Array  # int32 scalar: the slot the next token is written to
    positions: Array  # [B] int32: the next token's position in its row
    key_mask: Array  # [B, C] bool: slots holding a real token
    prefix: Array | None  # [B, C] bool: a prefix LM's bidirectional prompt slots (None: causal prompt)
    encoder_segments: Array | None  # [B, S] int32: the encoder's non-padding (encoder-decoder only)
    step: Array  # int32 scalar: tokens chosen so far
    tokens: Array  # [B, T] int32: chosen tokens, 0 after the row's end
    logprobs: Array  # [B, T] float32: log p(token) under the model (temperature 1, before top-k/top-p)
    lengths: Array  # [B] int32: tokens recorded (EOS excluded)
    done: Array  # [B] bool
    finished: Array  # [B] bool: ended at EOS (else at max_new, or still running)


@flax.struct.dataclass
class Generated:
    tokens: Array  # [B, T] int32, 0 after each row's end
    logprobs: Array  # [B, T] float32, 0 after the end
    lengths: Array  # [B] int32 generated tokens (EOS excluded)
    finished: Array  # [B] bool: ended at EOS; False: stopped at max_new


def is_encoder_decoder(model: nn.Module) -> bool:
    if isinstance(model, EncoderDecoder):
        return True
    if isinstance(model, DecoderOnly):
        return False
    raise ValueError(
        f"config.model.name={model.config.name!r} has no decoder to generate with; decoding serves "
        "encoder_decoder (T5) and decoder_only (GPT) models"
    )


def cache_length(model: nn.Module, prompt_length: int, max_new_tokens: int) -> int:
    """C: the slots one row uses (see the module docstring)."""
    return (1 if is_encoder_decoder(model) else prompt_length) + max_new_tokens


def init_cache(model: nn.Module, params: Any, batch: int, length: int, encoder_length: int = 0) -> Any:
    """Zeros of the cache's shapes: traced (not run) through a decode_step over all `length` slots."""

    def shapes():
        tokens = jnp.zeros((batch, length), jnp.int32)
        key_mask = jnp.ones((batch, length), bool)
        if is_encoder_decoder(model):
            encoded = jnp.zeros((batch, encoder_length, model.config.embed_dim), jnp.float32)
            segments = jnp.ones((batch, encoder_length), jnp.int32)
            args = (encoded, segments, tokens, key_mask, 0)
        else:
            args = (tokens, tokens, key_mask, 0)
        _, variables = model.apply({"params": params}, *args, method="decode_step", mutable=["cache"])
        return variables["cache"]

    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes))


def _step(model, params, state: DecodeState, tokens: Array, positions: Array, encoded: Array | None = None):
    """tokens [B, Q] through the cache at state.cache_index (marked in key_mask) -> (logits [B, Q, V], cache)."""
    variables = {"params": params, "cache": state.cache}
    if state.encoder_segments is not None:
        args = (encoded, state.encoder_segments, tokens, state.key_mask, state.cache_index)
    else:
        args = (tokens, positions, state.key_mask, state.cache_index, state.prefix)
    logits, updated = model.apply(variables, *args, method="decode_step", mutable=["cache"])
    return logits, updated["cache"]


def start(
    model: nn.Module,
    params: Any,
    inputs: Mapping[str, Array],
    max_new_tokens: int,
    *,
    bidirectional_prompt: bool = False,
) -> DecodeState:
    """Prefill: the state before the first new token.

    inputs, decoder-only: prompt_tokens [B, P] right-padded, prompt_lengths [B] (>= 1: a row needs a token to
    condition on; GPT-2 prompts may start with <|endoftext|>). Encoder-decoder: encoder_input_tokens [B, S] (0 =
    padding). bidirectional_prompt: the prompt attends both ways (a decoder trained as a prefix LM).
    """
    if is_encoder_decoder(model):
        encoder_tokens = inputs["encoder_input_tokens"]
        batch = encoder_tokens.shape[0]
        encoded, _ = model.apply({"params": params}, {"encoder_input_tokens": encoder_tokens}, method="encode")
        length = 1 + max_new_tokens
        key_mask = jnp.zeros((batch, length), bool).at[:, 0].set(True)
        start_tokens = jnp.zeros((batch, 1), jnp.int32)  # T5's decoder starts from the pad id 0
        state = _empty_state(
            init_cache(model, params, batch, length, encoder_tokens.shape[1]),
            key_mask,
            None,
            (encoder_tokens != 0).astype(jnp.int32),
            batch,
            max_new_tokens,
        )
        logits, cache = _step(model, params, state, start_tokens, None, encoded)
        return state.replace(cache=cache, logits=logits[:, -1], cache_index=jnp.int32(1))

    prompt, lengths = inputs["prompt_tokens"], inputs["prompt_lengths"].astype(jnp.int32)
    batch, prompt_length = prompt.shape
    length = prompt_length + max_new_tokens
    if model.config.position_embedding == "learned" and length > model.config.max_length:
        raise ValueError(
            f"a prompt of {prompt_length} tokens + {max_new_tokens} new tokens exceeds the learned positions of "
            f"config.model.max_length={model.config.max_length}; shorten the prompt or max_tokens"
        )
    pad = prompt_length - lengths  # [B] left padding of each row
    slot = jnp.arange(prompt_length)[None, :]  # [1, P]
    source = jnp.clip(slot - pad[:, None], 0, prompt_length - 1)  # [B, P] the right-padded index of each slot
    real = slot >= pad[:, None]  # [B, P]
    left_padded = jnp.where(real, jnp.take_along_axis(prompt, source, axis=1), 0)
    positions = jnp.where(real, slot - pad[:, None], 0)
    key_mask = jnp.zeros((batch, length), bool).at[:, :prompt_length].set(real)
    prefix = key_mask if bidirectional_prompt else None
    state = _empty_state(init_cache(model, params, batch, length), key_mask, prefix, None, batch, max_new_tokens)
    logits, cache = _step(model, params, state, left_padded, positions)
    return state.replace(cache=cache, logits=logits[:, -1], cache_index=jnp.int32(prompt_length), positions=lengths)


def _empty_state(cache, key_mask, prefix, encoder_segments, batch, max_new_tokens) -> DecodeState:
    return DecodeState(
        cache=cache,
        logits=jnp.zeros((batch, 1), jnp.float32),
        cache_index=jnp.int32(0),
        positions=jnp.zeros((batch,), jnp.int32),
        key_mask=key_mask,
        prefix=prefix,
        encoder_segments=encoder_segments,
        step=jnp.int32(0),
        tokens=jnp.zeros((batch, max_new_tokens), jnp.int32),
        logprobs=jnp.zeros((batch, max_new_tokens), jnp.float32),
        lengths=jnp.zeros((batch,), jnp.int32),
        done=jnp.zeros((batch,), bool),
        finished=jnp.zeros((batch,), bool),
    )


def filter_logits(logits: Array, top_k: Array, top_p: Array) -> Array:
    """logits [B, V] with everything outside each row's top_k [B] (0 = all) and top-p [B] nucleus (the fewest
    highest-probability tokens whose probabilities sum to >= p; Holtzman et al. 2020) set to -inf. Tokens tied
    with the last one kept are kept too."""
    ordered = -jnp.sort(-logits, axis=-1)  # [B, V] descending
    vocab = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)  # [B]
    kth = jnp.take_along_axis(ordered, (k - 1)[:, None], axis=-1)  # [B, 1]
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability mass of the tokens ranked above each
    in_nucleus = jnp.sum(before < top_p[:, None], axis=-1)  # [B] >= 1: the first token is always kept
    pth = jnp.take_along_axis(ordered, (in_nucleus - 1)[:, None], axis=-1)  # [B, 1]
    return jnp.where(logits >= jnp.maximum(kth, pth), logits, -jnp.inf)


def choose_tokens(logits: Array, sampling: Sampling, step: Array) -> Array:
    """[B, V] logits -> [B] tokens: argmax where temperature is 0, else a sample (key: the row's seed, the step)."""
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def sample():
        keys = jax.vmap(lambda seed: jax.random.fold_in(jax.random.key(seed), step))(sampling.seed)
        scaled = logits / jnp.maximum(sampling.temperature, 1e-6)[:, None]
        needs_filter = jnp.any((sampling.top_k > 0) | (sampling.top_p < 1.0))
        scaled = jax.lax.cond(needs_filter, filter_logits, lambda x, *_: x, scaled, sampling.top_k, sampling.top_p)
        drawn = jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
        return jnp.where(sampling.temperature > 0, drawn, greedy)

    return jax.lax.cond(jnp.any(sampling.temperature > 0), sample, lambda: greedy)


def advance(model: nn.Module, params: Any, state: DecodeState, sampling: Sampling, eos_id: int, steps: int):
    """Up to `steps` more tokens (fewer when every row is done or T is reached) -> the new state."""
    max_new_tokens = state.tokens.shape[1]
    limit = jnp.minimum(state.step + steps, max_new_tokens)

    def running(state):
        return (state.step < limit) & ~jnp.all(state.done)

    def one_token(state):
        in_vocab = jnp.arange(state.logits.shape[-1])[None, :] < sampling.vocab_limit[:, None]
        logits = jnp.where(in_vocab, state.logits, -jnp.inf)  # [B, V]
        token = choose_tokens(logits, sampling, state.step)  # [B]
        logprob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]
        active = ~state.done
        is_eos = token == eos_id
        record = active & ~is_eos
        tokens = state.tokens.at[:, state.step].set(jnp.where(record, token, 0))
        logprobs = state.logprobs.at[:, state.step].set(jnp.where(record, logprob, 0.0))
        lengths = state.lengths + record
        finished = state.finished | (active & is_eos)
        done = state.done | finished | (lengths >= sampling.max_new)
        state = feed(model, params, state, token)
        return state.replace(
            step=state.step + 1, tokens=tokens, logprobs=logprobs, lengths=lengths, done=done, finished=finished
        )

    return jax.lax.while_loop(running, one_token, state)


def feed(model: nn.Module, params: Any, state: DecodeState, token: Array) -> DecodeState:
    """One token per row [B] through the cache at the next slot -> the state with the logits after it."""
    state = state.replace(key_mask=state.key_mask.at[:, state.cache_index].set(True))
    logits, cache = _step(model, params, state, token[:, None], state.positions[:, None])
    return state.replace(
        cache=cache, logits=logits[:, -1], cache_index=state.cache_index + 1, positions=state.positions + 1
    )


def result(state: DecodeState) -> Generated:
    return Generated(state.tokens, state.logprobs, state.lengths, state.finished)


def generate(
    model: nn.Module,
    params: Any,
    inputs: Mapping[str, Array],
    *,
    max_new_tokens: int,
    eos_id: int,
    sampling: Sampling | None = None,
    bidirectional_prompt: bool = False,
) -> Generated:
    """Up to max_new_tokens new tokens per row (greedy unless `sampling` says otherwise); see `start` for inputs.
    Jit it with max_new_tokens, eos_id and bidirectional_prompt static."""
    batch = next(iter(inputs.values())).shape[0]
    sampling = sampling or Sampling.make(batch, max_new_tokens)
    state = start(model, params, inputs, max_new_tokens, bidirectional_prompt=bidirectional_prompt)
    return result(advance(model, params, state, sampling, eos_id, max_new_tokens))
