"""The engine: text in, completions out, on the jitted cached decoder — batching, chunks, stop strings, scoring and
sharding, on tiny random models with seqio's byte vocabulary (no files)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
from decode_test import model_and_params, tiny_model_config

from lmx import config_lib, sharding
from lmx.inference import decode
from lmx.inference.engine import CHUNK, Engine
from lmx.inference.requests import GenerationRequest, SamplingParams

BYTES = seqio.ByteVocabulary()  # 259 ids: pad 0, eos 1, unk 2, bytes 3..258
FAMILY_CONFIG = {"gpt2": "gpt2_tiny", "t5_1_1": "t5_tiny"}


@functools.cache
def engine(family: str, mesh: tuple = (("data", 1), ("fsdp", -1), ("tensor", 1), ("expert", 1)), batch: int = 4):
    """An engine over a tiny random model whose vocabulary holds the 259 byte ids."""
    config = config_lib.base_config()
    config.model = tiny_model_config(FAMILY_CONFIG[family], vocab_size=320, max_length=64, scan_layers=True)
    config.mesh.update(dict(mesh))
    config.data.objective = "span_corruption" if family.startswith("t5") else "lm"
    model, params = model_and_params(family, vocab_size=320, max_length=64)
    sizes = [size for _, size in mesh]
    devices = jax.devices() if -1 in sizes else jax.devices()[: int(np.prod(sizes))]  # a mesh of 1: one device
    mesh = sharding.make_mesh(config.mesh, devices)
    return Engine(config, params, BYTES, mesh=mesh, max_batch_size=batch, max_new_tokens=20)


PROMPTS = ["The king", "Once upon a time there", "To be, or"]


@pytest.mark.parametrize("family", ["gpt2"])  # T5 generates through the engine in the scoring test
def test_batched_generation_equals_each_request_alone_and_streams_its_chunks(family):
    e = engine(family)
    requests = [
        GenerationRequest(p, SamplingParams(max_tokens=m, temperature=0.0))
        for p, m in zip(PROMPTS, (20, 7, 13), strict=True)
    ]
    updates = {}
    together = e.generate(requests, on_update=lambda i, g: updates.setdefault(i, []).append(g))
    for i, request in enumerate(requests):
        alone = e.generate([request])[0]
        assert together[i].tokens == alone.tokens and together[i].text == alone.text
        np.testing.assert_allclose(together[i].logprobs, alone.logprobs, rtol=1e-5, atol=1e-5)
        assert len(together[i].tokens) <= request.params.max_tokens
        assert together[i].text == BYTES.decode(together[i].tokens)
        # Streaming: one update per chunk, each extending the last, the final one the result.
        texts = [u.text for u in updates[i]]
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
        assert updates[i][-1].tokens == together[i].tokens
        assert len(updates[i]) == -(-max(len(together[i].tokens) + (together[i].finish_reason == "stop"), 1) // CHUNK)
    # The direct decoder on one unpadded row gives the same tokens: the engine's padding and buckets change nothing.
    model, params = model_and_params(family, vocab_size=320, max_length=64)
    ids = [int(t) for t in BYTES.encode(PROMPTS[1])] + ([1] if family.startswith("t5") else [])
    inputs = (
        {"encoder_input_tokens": jnp.asarray([ids])}
        if family.startswith("t5")
        else {"prompt_tokens": jnp.asarray([ids]), "prompt_lengths": jnp.asarray([len(ids)])}
    )
    sampling = decode.Sampling.make(1, 7, vocab_limit=BYTES.vocab_size)
    direct = decode.generate(model, params, inputs, max_new_tokens=7, eos_id=1, sampling=sampling)
    assert np.asarray(direct.tokens[0, : int(direct.lengths[0])]).tolist() == together[1].tokens


def test_stop_strings_max_tokens_and_finish_reasons():
    e = engine("gpt2")
    free = e.generate([GenerationRequest(PROMPTS[0], SamplingParams(max_tokens=20, temperature=0.0))])[0]
    assert free.finish_reason in ("length", "stop") and len(free.tokens) <= 20
    assert len(free.text) >= 4, free.text  # the noisy tiny model writes bytes; they decode to some text
    stop = free.text[3:5]
    cut = free.text.find(stop)
    stopped = e.generate([GenerationRequest(PROMPTS[0], SamplingParams(max_tokens=20, temperature=0.0, stop=(stop,)))])
    assert stopped[0].text == free.text[:cut] and stopped[0].finish_reason == "stop"
    assert BYTES.decode(stopped[0].tokens) == stopped[0].text
    short = e.generate([GenerationRequest(PROMPTS[0], SamplingParams(max_tokens=3, temperature=0.0))])[0]
    assert short.tokens == free.tokens[:3] and short.finish_reason == (
        "length" if len(free.tokens) > 3 else free.finish_reason
    )
    with pytest.raises(ValueError, match="max_tokens"):
        e.generate([GenerationRequest(PROMPTS[0], SamplingParams(max_tokens=21))])
    with pytest.raises(ValueError, match="prompt"):
        e.generate([GenerationRequest("x" * 100)])


@pytest.mark.parametrize("family", ["gpt2", "t5_1_1"])
def test_score_equals_the_decoders_log_probabilities(family):
    """Teacher-forced scoring (no cache) of a greedy completion = the log-probabilities the cached decoder gave it."""
    e = engine(family)
    done = e.generate([GenerationRequest(p, SamplingParams(max_tokens=9, temperature=0.0)) for p in PROMPTS[:2]])
    prompts = [e._prompt_ids(p) for p in PROMPTS[:2]]
    scored = e.score_tokens(prompts, [g.tokens for g in done])
    for g, s in zip(done, scored, strict=True):
        np.testing.assert_allclose(s.token_logprobs, g.logprobs, rtol=1e-4, atol=1e-4)
        assert s.logprob == pytest.approx(g.logprob, rel=1e-4)
    # The text API: ASCII targets round-trip through the byte vocabulary, so their scores are those of their ids.
    text = e.score(PROMPTS[:1], ["ok then"])[0]
    ids = [int(t) for t in BYTES.encode("ok then")] + ([1] if family.startswith("t5") else [])
    assert text.logprob == pytest.approx(e.score_tokens(prompts[:1], [ids])[0].logprob, rel=1e-5)
    assert len(text.token_logprobs) == len(ids) and text.logprob < 0


def test_sharded_engine_decodes_like_a_single_device_one():
    requests = [GenerationRequest(p, SamplingParams(max_tokens=10, temperature=0.9, seed=5)) for p in PROMPTS]
    one = engine("gpt2", (("data", 1), ("fsdp", 1), ("tensor", 1), ("expert", 1)), 3)
    sharded = engine("gpt2", (("data", 2), ("fsdp", 2), ("tensor", 2), ("expert", 1)), 3)
    assert len(jax.devices()) == 8 and sharded.rows == 4  # 3 requests padded to a multiple of the 4 data ways
    a, b = one.generate(requests), sharded.generate(requests)
    assert [g.tokens for g in a] == [g.tokens for g in b]
