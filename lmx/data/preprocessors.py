"""TF preprocessors of the pretraining objectives, in seqio's form: a function from dataset to dataset.

Span corruption (T5) is the only objective so far. Its chain in a seqio Task is
`rekey(text -> targets) -> tokenize -> span_corruption -> append_eos_after_trim`.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a `length`-token sequence: the one place these counts are defined.

    round() rounds half to even, like the tf.round of T5's reference code.
    """
    num_noise = min(max(round(length * noise_density), 1), length - 1)  # at least one token of each kind
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    # Every span, noise or not, needs a token: a cap that only bites on absurdly short sequences.
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def span_corruption_lengths(inputs_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(raw_length, targets_length): the raw chunk length whose corruption fills `inputs_length` tokens exactly.

    A chunk of L tokens with N noise tokens in S spans becomes inputs of L - N + S + 1 tokens (kept tokens, one
    sentinel per span, EOS) and targets of N + S + 1 (each span behind its sentinel, EOS). The raw length is the
    largest L whose inputs fit; T5's inputs_length=512 gives L=568 and targets_length=114.
    """

    def lengths(length):
        num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
        return length - num_noise + num_spans + 1, num_noise + num_spans + 1

    if inputs_length < 3:  # two raw tokens make 3 inputs: a kept token, a sentinel, EOS
        raise ValueError(f"inputs_length={inputs_length} is too short for span corruption (needs at least 3 tokens)")
    raw_length = 2
    while lengths(raw_length + 1)[0] <= inputs_length:
        raw_length += 1
    return raw_length, lengths(raw_length)[1]


def check_span_corruption(
    inputs_length: int, targets_length: int, noise_density: float, mean_noise_span_length: float, extra_ids: int
) -> int:
    """Refuses settings span corruption cannot serve; returns the raw chunk length.

    targets_length must hold the targets the inputs imply, and each noise span of a chunk needs its own sentinel.
    """
    if not 0 < noise_density < 1 or mean_noise_span_length < 1:
        raise ValueError(
            f"span corruption needs 0 < noise_density < 1 and mean_noise_span_length >= 1, got {noise_density} and "
            f"{mean_noise_span_length}"
        )
    raw_length, needed = span_corruption_lengths(inputs_length, noise_density, mean_noise_span_length)
    if targets_length < needed:
        raise ValueError(
            f"targets_length={targets_length} is shorter than the {needed} tokens span corruption makes from "
            f"inputs_length={inputs_length} (noise_density={noise_density}, mean_noise_span_length="
            f"{mean_noise_span_length}); set targets_length={needed}"
        )
    num_spans = max(_noise_counts(n, noise_density, mean_noise_span_length)[1] for n in range(2, raw_length + 1))
    if num_spans > extra_ids:
        raise ValueError(
            f"span corruption of inputs_length={inputs_length} masks up to {num_spans} spans, but the vocabulary has "
            f"only extra_ids={extra_ids} sentinels; set extra_ids >= {num_spans}"
        )
    return raw_length


def concatenate_and_split(dataset: tf.data.Dataset, length: int, key: str = "targets") -> tf.data.Dataset:
    """Concatenates the token sequences `example[key]` of all examples and cuts the stream into `length`-token
    chunks (the last one may be shorter). Document boundaries are not marked, as in T5's pretraining chain."""

    def tokens(example):
        return example[key]

    def example(chunk):
        return {key: chunk}

    return dataset.map(tokens).rebatch(length).map(example)


def random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[num_segments] lengths >= 1 summing to `num_items`, uniform over all such compositions.

    The cuts are a uniformly random (num_segments - 1)-subset of the num_items - 1 gaps between items.
    """
    gap_order = tf.argsort(tf.random.stateless_uniform([num_items - 1], seed=seed))
    cuts = tf.sort(gap_order[: num_segments - 1]) + 1
    bounds = tf.concat([[0], cuts, [num_items]], axis=0)
    return bounds[1:] - bounds[:-1]


def corrupt_spans(
    tokens: tf.Tensor, num_noise: tf.Tensor, num_spans: tf.Tensor, seeds: tf.Tensor, vocab_size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """(inputs, targets) of one chunk of [length] tokens; see `span_corruption` for the steps."""
    length = tf.size(tokens)
    noise_lengths = random_segmentation(num_noise, num_spans, seeds[0])  # [num_spans]
    kept_lengths = random_segmentation(length - num_noise, num_spans, seeds[1])  # [num_spans]
    # Spans alternate kept, noise, kept, noise, ...: the sequence starts with kept tokens and ends with noise.
    span_lengths = tf.reshape(tf.stack([kept_lengths, noise_lengths], axis=1), [2 * num_spans])
    span_ids = tf.repeat(tf.range(2 * num_spans), span_lengths)  # [length]: which span each token is in
    is_noise = span_ids % 2 == 1
    starts_span = tf.concat([[True], span_ids[1:] != span_ids[:-1]], axis=0)
    starts_noise = is_noise & starts_span
    sentinels = vocab_size - 1 - span_ids // 2  # noise span k -> sentinel vocab_size - 1 - k
    # Each position offers two tokens, [its span's sentinel, itself]; the masks pick which appear, in order.
    offered = tf.stack([sentinels, tokens], axis=1)  # [length, 2]
    inputs = tf.boolean_mask(offered, tf.stack([starts_noise, ~is_noise], axis=1))
    targets = tf.boolean_mask(offered, tf.stack([starts_noise, is_noise], axis=1))
    return inputs, targets


@seqio.map_over_dataset(num_seeds=2)
def _corrupt_example(example, seeds, noise_counts: tf.Tensor, vocab_size: int):
    tokens = example["targets"]
    num_noise, num_spans = tf.unstack(noise_counts[tf.size(tokens)])
    inputs, targets = corrupt_spans(tokens, num_noise, num_spans, tf.stack(seeds), vocab_size)
    return {"inputs": inputs, "targets": targets}


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    noise_density: float,
    mean_noise_span_length: float,
) -> tf.data.Dataset:
    """T5's span-corruption objective (Raffel et al. 2020, section 3.1.4; span lengths as in section 3.3.4).

    Takes {"targets": tokens} documents and returns {"inputs", "targets"} examples, without EOS (appended later by
    `append_eos_after_trim`), so that inputs have sequence_length["inputs"] tokens once EOS is on:
      1. Concatenate all documents and cut the stream into chunks of L raw tokens, L from
         `span_corruption_lengths` (568 for 512 inputs at 15% noise, mean span 3). Chunks under 2 tokens (only
         ever the very last one) are dropped.
      2. Noise counts: N = round(noise_density * L) tokens (at least 1, at most L - 1) in
         S = round(N / mean_noise_span_length) spans (at least 1).
      3. Random segmentation: N noise tokens into S spans and the L - N others into S spans, each a uniformly
         random composition into nonempty parts; the spans alternate kept, noise, kept, noise, ...
      4. Inputs: the chunk with each noise span replaced by one sentinel, unique and in order: the k-th span
         (from 0) gets id vocab_size - 1 - k, T5's extra ids counted down from the top of the vocabulary.
      5. Targets: for each noise span in order, its sentinel followed by its tokens.
    Randomness comes from stateless ops seeded per example by `seqio.map_over_dataset(num_seeds=2)`, so a seed
    given to `Task.get_dataset` (via `seqio.utils.map_seed_manager`) fixes the output.
    """
    vocabulary = output_features["inputs"].vocabulary
    raw_length = check_span_corruption(
        sequence_length["inputs"],
        sequence_length["targets"],
        noise_density,
        mean_noise_span_length,
        vocabulary.extra_ids,
    )
    # (noise tokens, noise spans) for every chunk length up to raw_length: one definition (_noise_counts) for the
    # lengths computed above and the masks drawn here.
    noise_counts = tf.constant(
        [(0, 0)] + [_noise_counts(n, noise_density, mean_noise_span_length) for n in range(1, raw_length + 1)],
        dtype=tf.int32,
    )  # [raw_length + 1, 2]

    def long_enough(example):
        return tf.size(example["targets"]) >= 2

    dataset = concatenate_and_split(dataset, raw_length).filter(long_enough)
    return _corrupt_example(dataset, noise_counts=noise_counts, vocab_size=vocabulary.vocab_size)
