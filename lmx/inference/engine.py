"""The decoding engine: text requests in, completions out, on a jitted KV-cached decoder (lmx.inference.decode)
sharded over the training mesh; used by `lmx.infer` (files) and `lmx.serve` (HTTP).

Fixed shapes, few compiles: every call runs `max_batch_size` rows (empty rows pad a smaller batch), the prompt
length is rounded up to a power of two (>= 16) and the cache holds that + max_new_tokens slots. Decoding advances in
chunks of CHUNK tokens, so between chunks the engine can report partial text (streaming), end rows whose text hit a
stop string, and stop early once every row is done.

Stop strings are text, not tokens (one string tokenizes many ways): after each chunk a row's text is decoded and cut
before the first stop string; the kept tokens are those whose text lies before the cut.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmx import checkpoint, config_lib, sharding
from lmx.inference import decode
from lmx.inference.requests import Generation, GenerationRequest, SamplingParams
from lmx.models import build_model

CHUNK = 8  # tokens per jitted call between host checks (stop strings, streaming)
MIN_PROMPT_BUCKET = 16


@dataclasses.dataclass
class Scored:
    """log p(target | prompt): the sum and each target token's log-probability."""

    logprob: float
    token_logprobs: list[float]


def _bucket(length: int, cap: int) -> int:
    return min(cap, max(MIN_PROMPT_BUCKET, 1 << math.ceil(math.log2(max(length, 1)))))


class Engine:
    """See the module docstring. Not thread-safe: one caller (lmx.inference.batcher's worker) at a time."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        params: Any,
        vocabulary,
        *,
        mesh=None,
        max_batch_size: int = 8,
        max_new_tokens: int = 256,
        model_name: str = "lmx",
    ):
        self.config, self.params, self.vocabulary = config, params, vocabulary
        self.model = build_model(config.model)
        self.encoder_decoder = decode.is_encoder_decoder(self.model)
        self.mesh = mesh or sharding.make_mesh(config.mesh)
        self.rules = sharding.rules_of(config)
        # Rows per call: a multiple of the data-parallel ways, so the batch splits evenly over the mesh.
        ways = sharding.data_parallel_size(self.mesh, self.rules)
        self.max_batch_size = max_batch_size
        self.rows = -(-max_batch_size // ways) * ways
        self.model_name = model_name
        self.eos_id = int(vocabulary.eos_id)
        self.bidirectional_prompt = config.data.objective == "decoder_prefix_lm"
        max_length = config.model.max_length
        if not self.encoder_decoder and config.model.position_embedding == "learned":
            # Learned positions end at max_length: the prompt and the new tokens share them.
            if max_new_tokens >= max_length:
                raise ValueError(
                    f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                    f"config.model.max_length={max_length} learned positions; use at most {max_length // 2}"
                )
            self.max_prompt_tokens = max_length - max_new_tokens
        else:
            self.max_prompt_tokens = max_length
        self.max_new_tokens = max_new_tokens
        self._batch_sharding = sharding.batch_sharding(self.mesh, self.rules)
        self._compiled: dict[tuple, Callable] = {}

    # ----------------------------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, config: str, checkpoint_dir: str, *, max_batch_size: int = 8, max_new_tokens: int = 256) -> Engine:
        """config: a config spec (configs/x.py[:arg]) as lmx.train took it; checkpoint_dir: WORKDIR/checkpoints/<step>
        (or WORKDIR: its latest step). Raises ValueError / FileNotFoundError with one line on bad input."""
        from lmx.data import vocab as vocab_lib  # TensorFlow loads only once the flags are known to be good

        cfg = config_lib.load_config_file(config)
        step_dir = checkpoint.resolve_init_from(checkpoint_dir)
        if not os.path.isdir(os.path.join(step_dir, "state")):
            raise FileNotFoundError(
                f"--checkpoint={checkpoint_dir} is not a checkpoint step directory (no state/ inside); "
                "pass WORKDIR/checkpoints/<step> of a training run, or WORKDIR for its latest step"
            )
        checkpoint.check_init_from(step_dir, cfg.model)
        mesh = sharding.make_mesh(cfg.mesh)
        rules = sharding.rules_of(cfg)
        model = build_model(cfg.model)
        decode.is_encoder_decoder(model)  # refuses a model without a decoder before reading anything
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            boxed = jax.eval_shape(lambda key: tensors_boxed(cfg.model, key), jax.random.key(0))
            shardings = sharding.param_shardings(boxed, mesh, rules)
        params = checkpoint.read_params(step_dir, nn.unbox(boxed), shardings)
        name = f"{os.path.splitext(os.path.basename(config.split(':')[0]))[0]}@{os.path.basename(step_dir)}"
        engine = cls(
            cfg,
            params,
            vocab_lib.get_vocabulary(cfg.data),
            mesh=mesh,
            max_batch_size=max_batch_size,
            max_new_tokens=max_new_tokens,
            model_name=name,
        )
        # Compiles the smallest prompt bucket before the first request.
        engine.generate([GenerationRequest("warm up", SamplingParams(max_tokens=1, temperature=0.0))])
        return engine

    # ----------------------------------------------------------------------------------------------- text

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.vocabulary.encode(text)]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.vocabulary.decode([int(t) for t in ids])

    # ----------------------------------------------------------------------------------------------- compiled

    def _jit(self, key: tuple, fn: Callable) -> Callable:
        if key not in self._compiled:
            self._compiled[key] = jax.jit(fn)
        return self._compiled[key]

    def _run(self, fn: Callable, *args):
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return fn(*args)

    def _inputs(self, prompts: list[list[int]], width: int) -> dict[str, jax.Array]:
        tokens = np.zeros((self.rows, width), np.int32)
        lengths = np.ones((self.rows,), np.int32)  # empty rows: one pad token, decoded and thrown away
        for row, ids in enumerate(prompts):
            tokens[row, : len(ids)] = ids
            lengths[row] = len(ids)
        if self.encoder_decoder:
            features = {"encoder_input_tokens": tokens}
        else:
            features = {"prompt_tokens": tokens, "prompt_lengths": lengths}
        put = {
            name: jax.device_put(value, self._batch_sharding if value.ndim == 2 else self._row_sharding())
            for name, value in features.items()
        }
        return put

    def _row_sharding(self):
        return sharding.logical_sharding(self.mesh, self.rules, "batch")

    # ----------------------------------------------------------------------------------------------- generate

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self.tokenize(prompt)
        if self.encoder_decoder:
            ids = ids[: self.max_prompt_tokens - 1] + [self.eos_id]  # T5 inputs end with EOS, as in training
        if not ids:
            raise ValueError("prompt: an empty prompt has nothing to condition on; send at least one character")
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(f"prompt: {len(ids)} tokens > the limit of {self.max_prompt_tokens}")
        return ids

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_update: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]:
        """Completions of up to max_batch_size requests, decoded together; on_update(i, partial) after each chunk."""
        if not 0 < len(requests) <= self.max_batch_size:
            raise ValueError(f"generate takes 1 to {self.max_batch_size} requests, got {len(requests)}")
        prompts = [self._prompt_ids(r.prompt) for r in requests]
        for r in requests:
            if not 1 <= r.params.max_tokens <= self.max_new_tokens:
                raise ValueError(f"max_tokens: {r.params.max_tokens} is outside 1..{self.max_new_tokens}")
        width = _bucket(max(len(p) for p in prompts), self.max_prompt_tokens)
        steps = self.max_new_tokens
        # Padding rows start done (inside the jitted call: the state then has the same shardings the advance
        # calls return, and the second advance does not compile again).
        start = self._jit(
            ("start", width),
            lambda params, inputs, live: decode.start(
                self.model, params, inputs, steps, bidirectional_prompt=self.bidirectional_prompt
            ).replace(done=~live),
        )
        advance = self._jit(
            ("advance", width),
            lambda params, state, sampling: decode.advance(self.model, params, state, sampling, self.eos_id, CHUNK),
        )
        sampling = self._sampling(requests)
        live = np.zeros((self.rows,), bool)
        live[: len(requests)] = True
        state = self._run(start, self.params, self._inputs(prompts, width), jax.device_put(live, self._row_sharding()))
        results: list[Generation | None] = [None] * len(requests)
        while True:
            state = self._run(advance, self.params, state, sampling)
            tokens, logprobs = np.asarray(state.tokens), np.asarray(state.logprobs)
            lengths, done, finished = np.asarray(state.lengths), np.asarray(state.done), np.asarray(state.finished)
            stopped = []
            for i, request in enumerate(requests):
                if results[i] is not None:
                    continue
                n = int(lengths[i])
                generation, hit_stop = self._generation(tokens[i, :n], logprobs[i, :n], request.params.stop)
                if hit_stop or done[i]:
                    generation.finish_reason = "stop" if hit_stop or finished[i] else "length"
                    results[i] = generation
                    stopped.append(i)
                if on_update is not None:
                    on_update(i, generation)
            if all(r is not None for r in results):
                return results  # type: ignore[return-value]
            if stopped:  # rows that hit a stop string end here (same sharding as before: no new compile)
                ended = np.zeros((self.rows,), bool)
                ended[stopped] = True
                state = state.replace(done=state.done | jax.device_put(ended, state.done.sharding))

    def beam_generate(self, prompts: Sequence[str], *, num_beams: int, max_tokens: int, alpha: float = 0.6):
        """The best beam-search hypothesis of each prompt (lmx.inference.beam_search), up to max_batch_size."""
        from lmx.inference.beam_search import beam_search

        if not 0 < len(prompts) <= self.max_batch_size:
            raise ValueError(f"beam_generate takes 1 to {self.max_batch_size} prompts, got {len(prompts)}")
        if not 1 <= max_tokens <= self.max_new_tokens:
            raise ValueError(f"max_tokens: {max_tokens} is outside 1..{self.max_new_tokens}")
        ids = [self._prompt_ids(p) for p in prompts]
        width = _bucket(max(map(len, ids)), self.max_prompt_tokens)
        fn = self._jit(
            ("beam", width, num_beams, max_tokens, alpha),
            lambda params, inputs: beam_search(
                self.model,
                params,
                inputs,
                num_beams=num_beams,
                max_new_tokens=max_tokens,
                eos_id=self.eos_id,
                alpha=alpha,
                bidirectional_prompt=self.bidirectional_prompt,
            ),
        )
        out = self._run(fn, self.params, self._inputs(ids, width))
        tokens, logprobs = np.asarray(out.tokens), np.asarray(out.logprobs)
        lengths, finished = np.asarray(out.lengths), np.asarray(out.finished)
        return [
            Generation(
                self.detokenize(tokens[i, : lengths[i]]),
                tokens[i, : lengths[i]].tolist(),
                logprobs[i, : lengths[i]].tolist(),
                "stop" if finished[i] else "length",
            )
            for i in range(len(prompts))
        ]

    def _generation(self, tokens: np.ndarray, logprobs: np.ndarray, stop: Sequence[str]) -> tuple[Generation, bool]:
        text = self.detokenize(tokens)
        cuts = [text.find(s) for s in stop if s and s in text]
        if not cuts:
            return Generation(text, tokens.tolist(), logprobs.tolist(), "length"), False
        cut = min(cuts)
        keep = 0  # the longest prefix of tokens whose text ends before the stop string
        while keep < len(tokens) and len(self.detokenize(tokens[: keep + 1])) <= cut:
            keep += 1
        return Generation(text[:cut], tokens[:keep].tolist(), logprobs[:keep].tolist(), "stop"), True

    def _sampling(self, requests: Sequence[GenerationRequest]) -> decode.Sampling:
        def column(get, dtype, fill):
            values = np.full((self.rows,), fill, dtype)
            values[: len(requests)] = [get(r.params) for r in requests]
            return jax.device_put(values, self._row_sharding())

        return decode.Sampling(
            temperature=column(lambda p: p.temperature, np.float32, 0.0),
            top_k=column(lambda p: p.top_k, np.int32, 0),
            top_p=column(lambda p: p.top_p, np.float32, 1.0),
            seed=column(lambda p: p.seed % 2**32, np.uint32, 0),
            max_new=column(lambda p: p.max_tokens, np.int32, 1),
            vocab_limit=column(lambda p: self.vocabulary.vocab_size, np.int32, 1),
        )

    # ----------------------------------------------------------------------------------------------- score

    def score(self, prompts: Sequence[str], targets: Sequence[str]) -> list[Scored]:
        """log p(target | prompt) of each pair under the model (teacher forcing), up to max_batch_size pairs; T5
        targets end with EOS, as in training."""
        eos = [self.eos_id] if self.encoder_decoder else []
        return self.score_tokens([self._prompt_ids(p) for p in prompts], [self.tokenize(t) + eos for t in targets])

    def score_tokens(self, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> list[Scored]:
        """`score` of token ids (prompts as the model reads them: T5 inputs with their EOS)."""
        from lmx.inference import scoring

        if not 0 < len(prompts) == len(targets) <= self.max_batch_size:
            raise ValueError(f"score takes 1 to {self.max_batch_size} prompt/target pairs")
        if not all(targets):
            raise ValueError("target: an empty target has no tokens to score")
        features, weights = scoring.features(prompts, targets, rows=self.rows, encoder_decoder=self.encoder_decoder)
        key = ("score", *(v.shape for v in features.values()))
        limit = self.vocabulary.vocab_size
        fn = self._jit(key, lambda params, f: scoring.token_logprobs(self.model, params, f, vocab_limit=limit))
        token_logprobs = np.asarray(self._run(fn, self.params, features))
        out = []
        for row in range(len(prompts)):
            values = token_logprobs[row][weights[row] > 0].tolist()
            out.append(Scored(float(sum(values)), values))
        return out


def tensors_boxed(model_config: ml_collections.ConfigDict, key: jax.Array) -> Any:
    """The model's boxed parameters (logical axis names) at init: their shapes and names give the shardings."""
    model = build_model(model_config)
    ones = jnp.ones((1, 2), jnp.int32)  # shapes do not matter to the parameters; each family reads its own features
    batch = {"encoder_input_tokens": ones, "decoder_input_tokens": ones}
    return model.init({"params": key}, batch, enable_dropout=False)["params"]
