"""Examples cut from the concatenated token stream: causal LM (GPT), full-sentence encoder inputs (RoBERTa), prefix LM.

All three take {"targets": tokens} documents (after `seqio.preprocessors.tokenize`) and concatenate them across
document boundaries, so no token is wasted on padding:
- `lm`: {"targets"} chunks for seqio's `DecoderFeatureConverter` (teacher forcing, packing);
- `full_sentences`: {"targets", "token_types"} = [CLS] chunk [SEP], the unmasked encoder input that
  `masking.mlm` / `masking.electra_mask` corrupt;
- `prefix_lm`: {"inputs", "targets"} = (prefix, continuation) of each chunk, for `seqio.EncDecFeatureConverter` or
  `converters.PrefixLMDecoderFeatureConverter`.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

from lmx.data.masking import ObjectiveIds, fold_in_content
from lmx.data.preprocessors import concatenate_and_split


def _append(key: str, token: int):
    def append(example):
        return {**example, key: tf.concat([example[key], tf.constant([token], example[key].dtype)], axis=0)}

    return append


def lm(dataset: tf.data.Dataset, sequence_length: Mapping[str, int], *, eos_id: int) -> tf.data.Dataset:
    """Causal language modelling over packed documents, as GPT-3 trained (Brown et al. 2020, section 2.3: documents
    packed into full-context sequences, "delimited with a special end of text token", not masked apart).

      1. Append EOS to every document (GPT-2's <|endoftext|>).
      2. Concatenate the stream and cut it into chunks of sequence_length["targets"] tokens (the last may be
         shorter). A chunk may span several documents: the model learns to restart after EOS.
      3. {"targets": chunk}; seqio's DecoderFeatureConverter makes inputs = targets shifted right and loss weights
         on every token (packing fills out a short last chunk).
    Deterministic: no randomness here (document order comes from the source's seeded shuffle).
    """
    dataset = dataset.map(_append("targets", eos_id), num_parallel_calls=tf.data.AUTOTUNE)
    return concatenate_and_split(dataset, sequence_length["targets"])


def full_sentences(
    dataset: tf.data.Dataset, sequence_length: Mapping[str, int], *, ids: ObjectiveIds
) -> tf.data.Dataset:
    """RoBERTa's FULL-SENTENCES inputs (Liu et al. 2019, section 4.2), also used for BERT-style MLM without NSP.

      1. Append [SEP] to every document ("an extra separator token between documents").
      2. Concatenate the stream and cut it into chunks of L - 2 tokens, L = sequence_length["targets"]: inputs are
         contiguous text that crosses document boundaries, filling the length (no next-sentence pairs).
      3. {"targets": [CLS] chunk [SEP], "token_types": zeros}: one segment, token type 0 throughout.
    The masking preprocessors then add "inputs" and "loss_weights".
    """
    length = sequence_length["targets"]
    if length < 3:
        raise ValueError(f"full-sentence inputs need targets_length >= 3 ([CLS], a token, [SEP]), got {length}")
    dataset = dataset.map(_append("targets", ids.sep), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = concatenate_and_split(dataset, length - 2)

    def wrap(example):
        chunk = example["targets"]
        targets = tf.concat([[ids.cls], chunk, [ids.sep]], axis=0)
        return {"targets": targets, "token_types": tf.zeros_like(targets)}

    return dataset.map(wrap, num_parallel_calls=tf.data.AUTOTUNE)


def prefix_lm_chunk_length(sequence_length: Mapping[str, int], decoder_only: bool) -> int:
    """Raw tokens per prefix-LM chunk: its prefix and continuation (each + EOS) must fit the task lengths.

    Encoder-decoder: prefix + EOS <= inputs_length and continuation + EOS <= targets_length for any split, so the
    chunk is min(inputs_length, targets_length) tokens. Decoder-only (`PrefixLMDecoderFeatureConverter`, one
    sequence of targets_length tokens): prefix + EOS + continuation + EOS <= targets_length.
    """
    if decoder_only:
        chunk = sequence_length["targets"] - 2
    else:
        chunk = min(sequence_length["inputs"], sequence_length["targets"])
    if chunk < 2:
        raise ValueError(
            f"prefix LM needs chunks of at least 2 tokens; the lengths {dict(sequence_length)} allow {chunk}"
        )
    return chunk


@seqio.map_over_dataset(num_seeds=1)
def _split_example(example, seed):
    tokens = example["targets"]
    # Uniform split point in [1, n - 1]: both parts nonempty.
    seed = fold_in_content([seed], tokens)[0]
    split = tf.random.stateless_uniform([], seed=seed, minval=1, maxval=tf.size(tokens), dtype=tf.int32)
    return {"inputs": tokens[:split], "targets": tokens[split:]}


def prefix_lm(
    dataset: tf.data.Dataset, sequence_length: Mapping[str, int], *, decoder_only: bool = False
) -> tf.data.Dataset:
    """T5's prefix language-modelling objective (Raffel et al. 2020, section 3.3.1; its decoder-only form is the
    prefix LM architecture of section 3.2.1).

      1. Concatenate all documents and cut the stream into chunks of C tokens (`prefix_lm_chunk_length`); chunks
         under 2 tokens (only ever the last) are dropped.
      2. Draw a split point uniformly in [1, C - 1] (T5's random_prefix_noise_mask).
      3. {"inputs": prefix, "targets": continuation}, without EOS (`seqio.preprocessors.append_eos_after_trim` adds
         it, as in span corruption).
    Encoder-decoder: the prefix is the encoder input, the continuation the decoder target (EncDecFeatureConverter).
    Decoder-only: PrefixLMDecoderFeatureConverter concatenates them into one sequence whose prefix is attended
    bidirectionally ("decoder_causal_attention") and whose loss covers only the continuation.
    """
    chunk = prefix_lm_chunk_length(sequence_length, decoder_only)

    def long_enough(example):
        return tf.size(example["targets"]) >= 2

    dataset = concatenate_and_split(dataset, chunk).filter(long_enough)
    return _split_example(dataset)
