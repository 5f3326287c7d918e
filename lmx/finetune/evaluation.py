"""Scoring a model on a downstream task's split with the task's metrics (lmx.finetune.metrics).

  classify      the head's logits on every example: the argmax class (or the regression score) is the prediction;
                the loss is the mean cross-entropy (squared error) of the examples.
  text_to_text  the text the model generates greedily for every example (lmx.inference.decode.generate, at most
                config.data.targets_length tokens), read back as a label (task.text_to_label) or kept as a
                translation; the loss is the teacher-forced target cross-entropy per token.

The split is read in its order (downstream's eval_targets order) and padded to whole global batches; each process
feeds its rows of a batch and receives every row's outputs (replicated), so every process computes the same
metrics and takes the same best-checkpoint and early-stopping decisions.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from lmx import sharding, step
from lmx.data import pipeline, vocab
from lmx.finetune import batches, downstream, metrics


class Evaluator:
    """`evaluator(params) -> {metric: value, "loss": ..., "examples": n}` on `split` of config.finetune.task."""

    def __init__(self, config, task, vocabulary: seqio.Vocabulary, model: nn.Module, objective, run_shardings):
        """run_shardings: (mesh, logical rules, batch sharding, parameter shardings) of the run."""
        self.config, self.task, self.vocabulary, self.model, self.objective = config, task, vocabulary, model, objective
        self.mesh, self.rules, self.batch_sharding, self.param_shardings = run_shardings
        self._jitted: dict[str, Any] = {}

    def __call__(self, params, split: str = "validation") -> dict[str, float]:
        f = self.config.finetune
        dataset = batches.features(self.config, self.task, self.vocabulary, split)
        targets = downstream.eval_targets(self.task, split, source=f.source, data_dir=f.data_dir)
        rows = pipeline.process_rows(self.batch_sharding, self.config.train.batch_size)
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            if f.format == "classify":
                predictions, loss = self._classify(params, dataset, rows, targets)
            else:
                predictions, loss = self._generate(params, dataset, rows)
        if len(predictions) != len(targets):
            raise ValueError(f"{split} of {self.task.name} gave {len(predictions)} rows but has {len(targets)} targets")
        return {**metrics.compute(self.task, targets, predictions), "loss": loss, "examples": float(len(targets))}

    def _jit(self, name: str, fn, out_shardings=None):
        if name not in self._jitted:
            replicated = sharding.replicated(self.mesh)
            self._jitted[name] = jax.jit(
                fn,
                in_shardings=(self.param_shardings, self.batch_sharding),
                out_shardings=replicated if out_shardings is None else out_shardings,
            )
        return self._jitted[name]

    def _classify(self, params, dataset, rows, targets: list) -> tuple[list, float]:
        def logits_of(params, batch):
            return self.model.apply({"params": params}, batch, enable_dropout=False)["logits"]  # [B, C]

        logits_fn = self._jit("logits", logits_of)
        parts = []
        for host_rows, real in batches.eval_batches(dataset, self.config.train.batch_size, rows):
            host_rows.pop("labels")  # the targets are eval_targets', in the same order
            parts.append(np.asarray(jax.device_get(logits_fn(params, self._global(host_rows))))[:real])
        logits = np.concatenate(parts)  # [n, C] float32
        labels = np.asarray(targets[: len(logits)])
        if logits.shape[-1] == 1:  # regression: the score, and its squared error
            return [float(x) for x in logits[:, 0]], float(np.mean(np.square(logits[:, 0] - labels)))
        log_probs = logits - _logsumexp(logits)  # [n, C]
        xent = -np.take_along_axis(log_probs, labels.astype(np.int64)[:, None], axis=-1)[:, 0]
        return [int(x) for x in np.argmax(logits, axis=-1)], float(np.mean(xent))

    def _global(self, host_rows: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return sharding.global_batch_from_host(host_rows, self.batch_sharding)

    def _generate(self, params, dataset, rows) -> tuple[list, float]:
        from lmx.inference import decode  # decoding serves only the text-to-text format

        d = self.config.data
        eos = vocab.special_ids(self.vocabulary).eos
        decoder_only = self.config.model.name == "decoder_only"

        def generate(params, batch):
            if decoder_only:
                inputs = decoder_only_prompt(batch, d.inputs_length)
            else:
                inputs = {"encoder_input_tokens": batch["encoder_input_tokens"]}
            out = decode.generate(
                self.model,
                params,
                inputs,
                max_new_tokens=d.targets_length,
                eos_id=eos,
                bidirectional_prompt=decoder_only,
            )
            return out.tokens, out.lengths  # [B, T], [B]

        def loss_sums(params, batch):
            sums = step.eval_step(
                params, batch, model=self.model, objective=self.objective, train_config=self.config.train
            )
            return sums["terms"]["cross_entropy"]  # (sum over target tokens, their count)

        generate_fn = self._jit("generate", generate)
        loss_fn = self._jit("loss", loss_sums)
        texts, total, count = [], 0.0, 0.0
        for host_rows, real in batches.eval_batches(dataset, self.config.train.batch_size, rows):
            batch = self._global(host_rows)
            tokens, lengths = jax.device_get(generate_fn(params, batch))
            for row_tokens, length in zip(tokens[:real], lengths[:real], strict=True):
                texts.append(self.vocabulary.decode([int(t) for t in row_tokens[:length]]))
            value, weight = jax.device_get(loss_fn(params, batch))  # padding rows have no loss weight
            total, count = total + float(value), count + float(weight)
        if self.task.kind != "translation":
            texts = [self.task.text_to_label(text) for text in texts]
        return texts, total / max(count, 1.0)


def decoder_only_prompt(batch, inputs_length: int) -> dict:
    """The prompt of a prefix-LM row (seqio's PrefixLMFeatureConverter layout): decoder_input_tokens = 0, inputs,
    EOS, targets..., and decoder_causal_attention 1 on the first len(inputs) + 2 positions, at the last of which the
    model predicts the first target token. -> {"prompt_tokens": [B, inputs_length + 1] (0 after each row's
    prompt), "prompt_lengths": [B]} for lmx.inference.decode.generate (with bidirectional_prompt)."""
    lengths = jnp.sum(batch["decoder_causal_attention"], axis=1).astype(jnp.int32)  # [B]
    width = inputs_length + 1  # 0 + at most inputs_length input tokens (their EOS included)
    tokens = batch["decoder_input_tokens"][:, :width]
    return {
        "prompt_tokens": jnp.where(jnp.arange(width)[None, :] < lengths[:, None], tokens, 0),
        "prompt_lengths": lengths,
    }


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = np.max(logits, axis=-1, keepdims=True)
    return top + np.log(np.sum(np.exp(logits - top), axis=-1, keepdims=True))
