"""The data side of permutation language modelling (XLNet, Yang et al. 2019; objective "plm", model "xlnet").

Examples are chunks of the concatenated document stream (`language_modeling.lm`: EOS after every document, chunks of
data.inputs_length tokens; XLNet's pretraining stream also ran across documents, separated by <eod>). For each chunk
`permutation_targets` draws a factorization order and the tokens to predict (partial prediction, section 2.3):
  {"targets": the chunk's tokens (the model reads them unchanged), "target_positions": the positions to predict,
   in factorization order}.
`PlmFeatureConverter` turns these into the model features of lmx.models.xlnet:
  encoder_input_tokens [L]; encoder_perm_rank [L] (0 = context, k = the k-th target of the order);
  encoder_target_positions, encoder_target_tokens, encoder_loss_weights [P] (P = L // K query-stream slots, the
  targets in row order, padding slots with weight 0); encoder_segment_ids, encoder_positions when packed.
Packed rows keep their examples apart by segment ids (the model never attends across them); a row's targets never
exceed P, since floor(a / K) + floor(b / K) <= floor((a + b) / K).

Randomness: stateless ops seeded per example by `seqio.map_over_dataset` after the repeat, with the chunk's tokens
folded in (lmx.data.masking.fold_in_content): deterministic for data.seed and the example's position in the stream,
fresh on every epoch, reproduced exactly by a restored iterator checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import seqio
import tensorflow as tf

from lmx.config_lib import ConfigError
from lmx.data.masking import fold_in_content
from lmx.data.special_tokens import SpecialIds

# XLNet's span-based prediction (section 3.1; the released code's distribution): span lengths 1..5 tokens with
# probability proportional to 1 / length.
MAX_SPAN = 5
SPAN_PROBS = tuple((1 / n) / sum(1 / m for m in range(1, MAX_SPAN + 1)) for n in range(1, MAX_SPAN + 1))
TARGET_KINDS = ("tokens", "spans")  # config.data.plm_targets


def task_lengths(length: int, k: int) -> dict[str, int]:
    """Task feature lengths for chunks of `length` tokens: the chunk and its length // k predictions."""
    if k < 1 or length < k:
        raise ConfigError(
            f"config.data.plm_k={k} must be at least 1 and at most config.data.inputs_length={length} (the model "
            "predicts inputs_length // plm_k tokens of each row; XLNet used K = 6)"
        )
    return {"targets": length, "target_positions": length // k}


def protected_ids(special: SpecialIds) -> tuple[int, ...]:
    """Ids never predicted (they stay in the context): padding, every special role and the sentinels."""
    roles = (special.pad, special.eos, special.unk, special.bos, special.cls, special.mask, *special.sentinels)
    return tuple(sorted({i for i in roles if i is not None}))


def span_candidates(maskable: tf.Tensor, goal: tf.Tensor, k: int, seeds: tf.Tensor) -> tf.Tensor:
    """[n] bool: exactly `goal` maskable tokens chosen in spans (XLNet section 3.1). `seeds`: [3, 2].

    1. Span lengths l_i from SPAN_PROBS; span i lies in its own context window of k l_i tokens, the windows tiling
       the chunk from its start; inside its window the span starts uniformly at one of the (k - 1) l_i + 1 offsets
       ("randomly select a consecutive span of L tokens as prediction targets within a context of KL tokens").
    2. The spans' maskable tokens, kept in position order up to `goal` (the last span may be cut short, as the
       released code caps the last n-gram).
    3. Short of `goal` (windows past the end, special tokens inside spans): the rest drawn uniformly from the
       other maskable tokens (the released code's top-up).
    Each span covers l_i of k l_i tokens, so spans alone select about 1 / k of the chunk.
    """
    n = tf.size(maskable)
    logits = tf.math.log(tf.constant(SPAN_PROBS, tf.float32))[None, :]
    lengths = tf.random.stateless_categorical(logits, n, seed=seeds[0], dtype=tf.int32)[0] + 1  # [n] >= 1
    starts = tf.math.cumsum(k * lengths, exclusive=True)  # window starts
    choices = (k - 1) * lengths + 1
    offsets = tf.cast(tf.random.stateless_uniform([n], seed=seeds[1]) * tf.cast(choices, tf.float32), tf.int32)
    begin = starts + tf.minimum(offsets, choices - 1)
    end = begin + lengths
    fits = end <= n
    # Spans never overlap (one per window): +1 where one begins, -1 where it ends, cumulated = covered.
    marks = tf.concat([tf.boolean_mask(begin, fits), tf.boolean_mask(end, fits)], axis=0)
    signs = tf.concat([tf.ones_like(tf.boolean_mask(begin, fits)), -tf.ones_like(tf.boolean_mask(end, fits))], 0)
    covered = tf.math.cumsum(tf.math.unsorted_segment_sum(signs, marks, n + 1))[:n] > 0
    selected = covered & maskable
    selected &= tf.math.cumsum(tf.cast(selected, tf.int32)) <= goal
    missing = goal - tf.reduce_sum(tf.cast(selected, tf.int32))
    others = maskable & ~selected
    keys = tf.where(others, tf.random.stateless_uniform([n], seed=seeds[2]), 2.0)
    rank = tf.argsort(tf.argsort(keys))  # [n] each token's place in a random order of `others` (first)
    return selected | (others & (rank < missing))


@tf.autograph.experimental.do_not_convert
def permutation_targets(
    tokens: tf.Tensor, seeds: tf.Tensor, *, protected: tuple[int, ...], k: int, spans: bool
) -> tf.Tensor:
    """[floor(maskable / k)] int32: the positions to predict, in factorization order. `seeds`: [4, 2].

    Partial prediction (section 2.3): a factorization order z of the chunk, split at c so that the last |z| - c
    tokens are the targets, predicted one after another from x_{z<=c} and the targets before them. Here:
      1. Maskable tokens: all but `protected` (padding, EOS and the other special ids always stay in the context).
      2. Candidates: the maskable tokens (spans=False), or exactly floor(maskable / k) of them chosen in spans
         (spans=True, `span_candidates`).
      3. A uniformly random order with the candidates last: sorting by random keys, other tokens keyed below them.
      4. The targets: the last floor(maskable / k) of that order (= all candidates with spans), i.e. the last 1/K.
    The order among the context tokens does not matter: the model lets them all see each other (lmx.models.xlnet).
    """
    special = tf.constant(protected, tokens.dtype)
    maskable = tf.reduce_all(tokens[:, None] != special[None, :], axis=1)  # [n]
    n = tf.size(tokens)
    goal = tf.reduce_sum(tf.cast(maskable, tf.int32)) // k
    candidates = span_candidates(maskable, goal, k, seeds[1:]) if spans else maskable
    keys = tf.where(candidates, tf.random.stateless_uniform([n], seed=seeds[0]), -1.0)
    order = tf.argsort(keys, stable=True)  # [n] context first, candidates last in a random order
    return tf.cast(order[n - goal :], tf.int32)


@seqio.map_over_dataset(num_seeds=4)
def _permute(example, seeds, **kwargs):
    tokens = example["targets"]
    positions = permutation_targets(tokens, fold_in_content(seeds, tokens), **kwargs)
    return {"targets": tokens, "target_positions": positions}


def plm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None = None,
    *,
    protected: tuple[int, ...],
    k: int = 6,
    spans: bool = False,
) -> tf.data.Dataset:
    """{"targets": chunk} -> {"targets": chunk, "target_positions": [chunk maskable tokens // k]} (see
    `permutation_targets`); protected ids are never targets."""
    del sequence_length  # the chunk's own length counts
    if k < 1:
        raise ConfigError(f"config.data.plm_k={k} must be at least 1")
    return _permute(dataset, protected=tuple(protected), k=k, spans=spans)


_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)


def _ranks(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """{"targets", "ranks"}: ranks = 1 + each token's place among the targets (1 = context), never 0 on a real
    token, so seqio's packing (which counts nonzero values) keeps them aligned with the tokens."""
    positions = example["target_positions"]
    place = tf.scatter_nd(positions[:, None], tf.range(1, tf.size(positions) + 1), tf.shape(example["targets"]))
    return {"targets": example["targets"], "ranks": place + 1}


class PlmFeatureConverter(seqio.FeatureConverter):
    """Permutation-LM examples -> the xlnet model features (module docstring); packs several per row when `pack`.

    Example, unpacked to L = 6 with P = 2 slots: {"targets": [7, 8, 9, 5, 1], "target_positions": [3, 1]} ->
      encoder_input_tokens [7, 8, 9, 5, 1, 0], encoder_perm_rank [0, 2, 0, 1, 0, 0],
      encoder_target_positions [1, 3], encoder_target_tokens [8, 5], encoder_loss_weights [1, 1].
    """

    TASK_FEATURES = {"targets": _INT, "target_positions": _INT}
    MODEL_FEATURES = {
        "encoder_input_tokens": _INT,
        "encoder_perm_rank": _INT,
        "encoder_target_positions": _INT,
        "encoder_target_tokens": _INT,
        "encoder_loss_weights": _INT,
    }
    PACKING_FEATURE_DTYPES = {"encoder_segment_ids": tf.int32, "encoder_positions": tf.int32}

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        length, slots = task_feature_lengths["targets"], task_feature_lengths["target_positions"]
        ds = ds.map(_ranks, num_parallel_calls=tf.data.AUTOTUNE)
        lengths = {"targets": length, "ranks": length}
        if self.pack:
            ds = seqio.utils.trim_and_pack_dataset(ds, lengths)
        else:
            ds = seqio.utils.trim_and_pad_dataset(ds, lengths)
        return ds.map(functools.partial(self._model_features, slots=slots), num_parallel_calls=tf.data.AUTOTUNE)

    def _model_features(self, features: Mapping[str, tf.Tensor], slots: int) -> dict[str, tf.Tensor]:
        tokens = features["targets"]
        rank = tf.maximum(features["ranks"] - 1, 0)  # padding (0) -> 0
        positions = tf.cast(tf.where(rank > 0)[:, 0], tf.int32)  # the targets, in row order
        count = tf.size(positions)
        check = tf.debugging.assert_less_equal(
            count, slots, message="a row has more plm targets than its inputs_length // plm_k query-stream slots"
        )
        with tf.control_dependencies([check]):
            positions = tf.pad(positions, [[0, slots - count]])
        weights = tf.cast(tf.range(slots) < count, tf.int32)
        out = {
            "encoder_input_tokens": tokens,
            "encoder_perm_rank": rank,
            "encoder_target_positions": positions,
            "encoder_target_tokens": tf.gather(tokens, positions) * weights,
            "encoder_loss_weights": weights,
        }
        if self.pack:
            out["encoder_segment_ids"] = features["targets_segment_ids"]
            out["encoder_positions"] = features["targets_positions"]
        return out

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        length, slots = task_feature_lengths["targets"], task_feature_lengths["target_positions"]
        lengths = {"encoder_input_tokens": length, "encoder_perm_rank": length}
        lengths.update(
            dict.fromkeys(("encoder_target_positions", "encoder_target_tokens", "encoder_loss_weights"), slots)
        )
        if self.pack:
            lengths.update(dict.fromkeys(self.PACKING_FEATURE_DTYPES, length))
        return lengths
