"""seqio feature converters where seqio's own do not fit: encoder-only MLM/RTD, sentence pairs, decoder prefix LM.

Model features follow seqio's names (int32, [batch, length] once batched):
- EncoderOnlyFeatureConverter: task inputs, targets, loss_weights, token_types -> encoder_input_tokens,
  encoder_target_tokens, encoder_loss_weights, encoder_token_types; + encoder_segment_ids, encoder_positions when
  packed.
- SentencePairFeatureConverter: the same + pair_label ([batch, 1]); never packed.
- PrefixLMDecoderFeatureConverter: task inputs, targets -> decoder_input_tokens, decoder_target_tokens,
  decoder_loss_weights, decoder_causal_attention; + decoder_segment_ids, decoder_positions when packed.

seqio's EncoderFeatureConverter does not fit MLM: it puts the loss where the input is [MASK], missing BERT's 10%
random and 10% unchanged selected tokens; hence explicit loss weights here.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)

# Task feature -> model feature of encoder-only examples; all have the same length.
_ENCODER_FEATURES = {
    "inputs": "encoder_input_tokens",
    "targets": "encoder_target_tokens",
    "loss_weights": "encoder_loss_weights",
    "token_types": "encoder_token_types",
}
PAIR_LABEL = "pair_label"


def encoder_task_lengths(length: int, with_pair_label: bool = False) -> dict[str, int]:
    """Task feature lengths of the encoder-only converters for sequences of `length` tokens."""
    lengths = dict.fromkeys(_ENCODER_FEATURES, length)
    if with_pair_label:
        lengths[PAIR_LABEL] = 1
    return lengths


def _fold_flags(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """{"inputs", "targets", "flags"}: flags = 1 + loss_weight + 2 * token_type, in 1..4 (loss weights and token
    types are 0/1)."""
    flags = 1 + example["loss_weights"] + 2 * example["token_types"]
    return {"inputs": example["inputs"], "targets": example["targets"], "flags": flags}


class EncoderOnlyFeatureConverter(seqio.FeatureConverter):
    """Encoder-only (BERT/RoBERTa MLM, ELECTRA) examples; packs several per row when `pack`.

    Packed rows carry encoder_segment_ids (1, 2, ... per example, 0 on padding) and encoder_positions (restarting
    at 0 in each example): the model must let a token attend only within its segment and take positions from
    encoder_positions. Unpacked rows are padded with 0 (pad id, loss weight 0, token type 0).

    Example, packed to 8: {"inputs": [5, 9, 6], "targets": [5, 7, 6], "loss_weights": [0, 1, 0],
    "token_types": [0, 0, 0]} and {"inputs": [5, 8, 6], ...} ->
      encoder_input_tokens [5, 9, 6, 5, 8, 6, 0, 0], encoder_segment_ids [1, 1, 1, 2, 2, 2, 0, 0],
      encoder_positions    [0, 1, 2, 0, 1, 2, 0, 0], ...
    """

    TASK_FEATURES = dict.fromkeys(_ENCODER_FEATURES, _INT)
    MODEL_FEATURES = dict.fromkeys(_ENCODER_FEATURES.values(), _INT)
    PACKING_FEATURE_DTYPES = {"encoder_segment_ids": tf.int32, "encoder_positions": tf.int32}

    def _sequence_length(self, task_feature_lengths: Mapping[str, int]) -> int:
        lengths = {task_feature_lengths[k] for k in _ENCODER_FEATURES}
        if len(lengths) != 1:
            raise ValueError(
                f"encoder-only task features must share one length, got {dict(task_feature_lengths)}; use "
                "converters.encoder_task_lengths(length)"
            )
        return lengths.pop()

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {model: features[task] for task, model in _ENCODER_FEATURES.items()}

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        length = self._sequence_length(task_feature_lengths)
        if not self.pack:
            ds = seqio.utils.trim_and_pad_dataset(ds, dict.fromkeys(_ENCODER_FEATURES, length))
            return ds.map(self._convert_example, num_parallel_calls=tf.data.AUTOTUNE)
        # seqio's packing takes a feature's length to be its count of nonzero values, so 0/1 features (weights,
        # token types) would lose their zeros: pack them folded into one feature that is never 0 on a real token.
        ds = ds.map(_fold_flags, num_parallel_calls=tf.data.AUTOTUNE)
        ds = seqio.utils.trim_and_pack_dataset(ds, dict.fromkeys(("inputs", "targets", "flags"), length))
        return ds.map(self._convert_packed, num_parallel_calls=tf.data.AUTOTUNE)

    def _convert_packed(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        flags = features["flags"]
        real = flags > 0  # padding is 0 in every feature
        return self._convert_example(
            {
                "inputs": features["inputs"],
                "targets": features["targets"],
                "loss_weights": tf.where(real, (flags - 1) % 2, 0),
                "token_types": tf.where(real, (flags - 1) // 2, 0),
            }
        ) | {"encoder_segment_ids": features["inputs_segment_ids"], "encoder_positions": features["inputs_positions"]}

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        length = self._sequence_length(task_feature_lengths)
        names = list(self.MODEL_FEATURES) + (list(self.PACKING_FEATURE_DTYPES) if self.pack else [])
        return dict.fromkeys(names, length)


class SentencePairFeatureConverter(EncoderOnlyFeatureConverter):
    """Sentence pairs with a per-pair label (NSP, SOP): one pair per row, never packed.

    The label belongs to the row ([CLS]'s pooled output predicts it), as in BERT and ALBERT, which feed one pair
    per sequence; packing would put several labels in a row. "pair_label" is a [1] feature ([batch, 1] once
    batched) so that every feature keeps rank 1 like seqio's.
    """

    TASK_FEATURES = {**EncoderOnlyFeatureConverter.TASK_FEATURES, PAIR_LABEL: _INT}
    MODEL_FEATURES = {**EncoderOnlyFeatureConverter.MODEL_FEATURES, PAIR_LABEL: _INT}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError(
                "sentence-pair objectives (NSP, SOP) are never packed: each row holds one [CLS] A [SEP] B [SEP] "
                "pair whose label is the row's; set data.pack=False"
            )
        super().__init__(pack=False, **kwargs)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {**super()._convert_example(features), PAIR_LABEL: features[PAIR_LABEL]}

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        length = self._sequence_length(task_feature_lengths)
        ds = seqio.utils.trim_and_pad_dataset(ds, {**dict.fromkeys(_ENCODER_FEATURES, length), PAIR_LABEL: 1})
        return ds.map(self._convert_example, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        return {**super().get_model_feature_lengths(task_feature_lengths), PAIR_LABEL: 1}


def prefix_lm_decoder_task_lengths(length: int) -> dict[str, int]:
    """Task feature lengths of PrefixLMDecoderFeatureConverter for a decoder of `length` tokens."""
    return {"inputs": length, "targets": length}


class PrefixLMDecoderFeatureConverter(seqio.PrefixLMFeatureConverter):
    """seqio's prefix-LM converter for one decoder sequence of targets_length tokens, loss on the targets only.

    seqio's PrefixLMFeatureConverter makes decoder rows of inputs_length + targets_length tokens, each part bounded
    by its own length; a prefix LM's split point moves freely, so here both parts are bounded by targets_length and
    their concatenation fills one row of targets_length (`language_modeling.prefix_lm(decoder_only=True)` keeps
    prefix + EOS + continuation + EOS within it; task lengths: `prefix_lm_decoder_task_lengths`).

    decoder_causal_attention is seqio's: 1 on the prefix positions of the decoder input (its BOS, the prefix
    tokens and the prefix's EOS, i.e. inputs width + 1 positions), 0 on the continuation and padding. The attention
    mask it implies, within a segment, is
        query q may see key k  iff  k <= q  or  (causal_attention[q] = 1 and causal_attention[k] = 1),
    bidirectional over the prefix and causal after it; no query whose loss weight is 1 sees a later position.
    """

    def __init__(self, **kwargs):
        super().__init__(loss_on_targets_only=True, **kwargs)

    def _concat_task_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        length = task_feature_lengths["targets"]
        return {"targets": length, "inputs_width": length, "inputs_width_add_pos": length}

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        return dict(super().get_model_feature_lengths({"targets": task_feature_lengths["targets"]}))
