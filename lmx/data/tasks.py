"""The data side of the objectives and the seqio Tasks of lmx: `<corpus>_<objective>` = a source, the objective's
preprocessors and its feature converter; with `data.mixture`, a seqio Mixture of such Tasks at the given rates
(`mixture_<corpus>_..._<objective>`, e.g. BERT's Wikipedia + books).

`DATA_OBJECTIVES[name]` is keyed like the loss side, `lmx.objectives.OBJECTIVES[name]`. Everything else (the model's
init inputs, tokens per step, bench batches, FLOP counts) is derived from the model features the converter makes:
  model_feature_lengths(data_config) -> {"decoder_input_tokens": 114, ...}
Use:
  name = tasks.register_task(config.data)  # a Task's or a Mixture's name
  ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=tasks.task_feature_lengths(config.data), ...)
  ds = tasks.feature_converter(config.data)(ds, tasks.task_feature_lengths(config.data))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import ml_collections
import numpy as np
import seqio
import tensorflow as tf

from lmx import config_lib
from lmx.data import converters, language_modeling, masking, plm, preprocessors, sentence_pairs, sources, vocab
from lmx.data.byte_bpe import ByteBpeVocabulary
from lmx.data.wordpiece import WordPieceVocabulary


class DataObjective(NamedTuple):
    """How a pretraining objective turns {"text"} documents into model features."""

    # (data config, vocabulary) -> the seqio preprocessors after the source; refuses a config it cannot serve.
    preprocessors: Callable[[ml_collections.ConfigDict, seqio.Vocabulary], list[Callable]]
    # vocabulary -> the Task's output features.
    output_features: Callable[[seqio.Vocabulary], dict[str, seqio.Feature]]
    # seqio feature converter class: task features -> model features (packing, segment ids, positions).
    feature_converter: type[seqio.FeatureConverter]
    # data config -> the task feature lengths (`sequence_length` of get_dataset and the converter).
    lengths: Callable[[ml_collections.ConfigDict], dict[str, int]]
    # Rows continue their own stretch of the stream from step to step (XLNet's memory; lmx.data.streams): examples
    # keep the stream's order (no example shuffle) and are laid out in windows of data.stream_window steps.
    row_streams: bool = False


TOKENIZE = [
    functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
    functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
]


def _span_corruption_preprocessors(data_config: ml_collections.ConfigDict, vocabulary) -> list[Callable]:
    del vocabulary  # the sentinels come from the output feature's vocabulary
    preprocessors.check_span_corruption(
        data_config.inputs_length,
        data_config.targets_length,
        data_config.noise_density,
        data_config.mean_noise_span_length,
        data_config.extra_ids,
    )
    return [
        *TOKENIZE,
        functools.partial(
            preprocessors.span_corruption,
            noise_density=data_config.noise_density,
            mean_noise_span_length=data_config.mean_noise_span_length,
        ),
        seqio.preprocessors.append_eos_after_trim,
    ]


def _encoder_decoder_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {
        "inputs": seqio.Feature(vocabulary, add_eos=True, required=True),
        "targets": seqio.Feature(vocabulary, add_eos=True, required=True),
    }


def _inputs_and_targets(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    return {"inputs": data_config.inputs_length, "targets": data_config.targets_length}


def _lm_preprocessors(data_config: ml_collections.ConfigDict, vocabulary) -> list[Callable]:
    return [*TOKENIZE, functools.partial(language_modeling.lm, eos_id=vocab.special_ids(vocabulary).eos)]


def _targets_feature(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {"targets": seqio.Feature(vocabulary, add_eos=False, required=True)}


def _targets_only(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    return {"targets": data_config.targets_length}


def word_starts(vocabulary: seqio.Vocabulary) -> np.ndarray:
    """[vocab_size] bool: the ids that begin a word, for whole-word and n-gram masking, by vocabulary kind."""
    if isinstance(vocabulary, seqio.SentencePieceVocabulary):
        return masking.sentencepiece_word_starts(vocabulary)
    if isinstance(vocabulary, WordPieceVocabulary):
        pieces = masking.wordpiece_word_starts(vocabulary.tokens)
    elif isinstance(vocabulary, ByteBpeVocabulary):  # GPT-2 style: a word's first piece starts with a space
        pieces = np.array([piece.startswith(b" ") for piece in vocabulary.token_bytes], dtype=bool)
    else:
        raise ValueError(f"whole-word masking does not know where words start in a {type(vocabulary).__name__}")
    starts = np.ones(vocabulary.vocab_size, dtype=bool)  # sentinels stand alone
    starts[: len(pieces)] = pieces
    return starts


# config.data.mask_units -> (whole words?, n-gram length distribution)
MASK_UNITS = {
    "token": (False, None),
    "whole_word": (True, None),
    "albert_ngram": (True, masking.albert_ngram_probs(3)),
    "spanbert": (True, masking.spanbert_span_probs()),
}


def _objective_ids(vocabulary: seqio.Vocabulary) -> masking.ObjectiveIds:
    return masking.ObjectiveIds.of_vocabulary(vocab.special_ids(vocabulary), vocabulary.vocab_size)


def _mlm_masking(data_config: ml_collections.ConfigDict, vocabulary, ids: masking.ObjectiveIds) -> Callable:
    """BERT's masking with the configured rates and units (data.mask_rate, mask_token_prob, random_token_prob,
    mask_units)."""
    whole_words, ngrams = MASK_UNITS[data_config.mask_units]
    return functools.partial(
        masking.mlm,
        ids=ids,
        rate=data_config.mask_rate,
        mask_prob=data_config.mask_token_prob,
        random_prob=data_config.random_token_prob,
        word_starts=word_starts(vocabulary) if whole_words else None,
        ngram_probs=ngrams,
    )


def _mlm_preprocessors(data_config: ml_collections.ConfigDict, vocabulary) -> list[Callable]:
    """RoBERTa-style MLM: full-sentence chunks across documents, masks drawn afresh on every visit (the masking runs
    after seqio's repeat, seeded by the example's position in the stream: resuming stays exact)."""
    ids = _objective_ids(vocabulary)
    return [
        *TOKENIZE,
        functools.partial(language_modeling.full_sentences, ids=ids),
        _mlm_masking(data_config, vocabulary, ids),
    ]


def _pair_preprocessors(task: str) -> Callable:
    """BERT's NSP (task "nsp") or ALBERT's SOP ("sop") pairs of whole sentences, then BERT's masking (fresh on
    every visit, as for mlm)."""

    def make(data_config: ml_collections.ConfigDict, vocabulary) -> list[Callable]:
        ids = _objective_ids(vocabulary)
        return [
            functools.partial(sentence_pairs.sentence_pairs, ids=ids, task=task),  # tokenizes sentence by sentence
            _mlm_masking(data_config, vocabulary, ids),
        ]

    return make


def _rtd_preprocessors(data_config: ml_collections.ConfigDict, vocabulary) -> list[Callable]:
    """ELECTRA: full-sentence chunks (as mlm), data.mask_rate of the tokens [MASK]ed with probability
    data.mask_token_prob (ELECTRA's paper: 1; its released code: 0.85), fresh on every visit."""
    ids = _objective_ids(vocabulary)
    return [
        *TOKENIZE,
        functools.partial(language_modeling.full_sentences, ids=ids),
        functools.partial(
            masking.electra_mask, ids=ids, rate=data_config.mask_rate, mask_prob=data_config.mask_token_prob
        ),
    ]


def _prefix_lm_preprocessors(decoder_only: bool) -> Callable:
    """T5's prefix LM (random split of each chunk), EOS after both parts."""

    def make(data_config: ml_collections.ConfigDict, vocabulary) -> list[Callable]:
        del data_config, vocabulary  # lengths come from the task's sequence_length
        return [
            *TOKENIZE,
            functools.partial(language_modeling.prefix_lm, decoder_only=decoder_only),
            seqio.preprocessors.append_eos_after_trim,
        ]

    return make


def _integers() -> seqio.Feature:
    """A per-token (or per-row) integer feature the converters carry: declared, so that mixtures keep it."""
    return seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False, required=True, dtype=tf.int32)


def _encoder_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """Encoder-only examples: corrupted inputs, original targets, loss weights and token types."""
    return {
        "inputs": seqio.Feature(vocabulary, add_eos=False, required=True),
        "targets": seqio.Feature(vocabulary, add_eos=False, required=True),
        "loss_weights": _integers(),
        "token_types": _integers(),
    }


def _pair_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {**_encoder_features(vocabulary), converters.PAIR_LABEL: _integers()}


def _encoder_sequence(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    return converters.encoder_task_lengths(data_config.inputs_length)


def _pair_sequence(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    return converters.encoder_task_lengths(data_config.inputs_length, with_pair_label=True)


def _decoder_prefix_lm_lengths(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    return converters.prefix_lm_decoder_task_lengths(data_config.targets_length)


def _plm_preprocessors(data_config: ml_collections.ConfigDict, vocabulary) -> list[Callable]:
    """XLNet: chunks of inputs_length tokens of the document stream (EOS after each document), each with a random
    factorization order whose last 1/K are predicted (data.plm_k, data.plm_targets)."""
    plm.task_lengths(data_config.inputs_length, data_config.plm_k)  # refuses K outside [1, inputs_length]
    special = vocab.special_ids(vocabulary)
    return [
        *TOKENIZE,
        functools.partial(language_modeling.lm, eos_id=special.eos),
        functools.partial(
            plm.plm,
            protected=plm.protected_ids(special),
            k=data_config.plm_k,
            spans=data_config.plm_targets == "spans",
        ),
    ]


def _plm_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {"targets": seqio.Feature(vocabulary, add_eos=False, required=True), "target_positions": _integers()}


def _plm_lengths(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    return plm.task_lengths(data_config.inputs_length, data_config.plm_k)


DATA_OBJECTIVES: dict[str, DataObjective] = {
    "span_corruption": DataObjective(
        _span_corruption_preprocessors,
        _encoder_decoder_features,
        seqio.EncDecFeatureConverter,
        _inputs_and_targets,
    ),
    "lm": DataObjective(_lm_preprocessors, _targets_feature, seqio.DecoderFeatureConverter, _targets_only),
    "mlm": DataObjective(
        _mlm_preprocessors, _encoder_features, converters.EncoderOnlyFeatureConverter, _encoder_sequence
    ),
    # [CLS] A [SEP] B [SEP] pairs, one per row (never packed: data.pack=False), with pair_label.
    "mlm_nsp": DataObjective(
        _pair_preprocessors("nsp"), _pair_features, converters.SentencePairFeatureConverter, _pair_sequence
    ),
    "mlm_sop": DataObjective(
        _pair_preprocessors("sop"), _pair_features, converters.SentencePairFeatureConverter, _pair_sequence
    ),
    # Encoder-decoder: prefix (<= inputs_length) -> continuation (<= targets_length).
    "prefix_lm": DataObjective(
        _prefix_lm_preprocessors(decoder_only=False),
        _encoder_decoder_features,
        seqio.EncDecFeatureConverter,
        _inputs_and_targets,
    ),
    # Decoder-only: prefix + continuation in one row of targets_length, decoder_causal_attention on the prefix.
    "decoder_prefix_lm": DataObjective(
        _prefix_lm_preprocessors(decoder_only=True),
        _encoder_decoder_features,
        converters.PrefixLMDecoderFeatureConverter,
        _decoder_prefix_lm_lengths,
    ),
    "rtd": DataObjective(
        _rtd_preprocessors, _encoder_features, converters.EncoderOnlyFeatureConverter, _encoder_sequence
    ),
    # XLNet: chunks of inputs_length tokens, their permutation ranks and inputs_length // plm_k query-stream slots;
    # each row continues its own stream (lmx.data.streams), which XLNet's memory attends to.
    "plm": DataObjective(_plm_preprocessors, _plm_features, plm.PlmFeatureConverter, _plm_lengths, row_streams=True),
}


def get_objective(data_config: ml_collections.ConfigDict) -> DataObjective:
    if data_config.objective not in DATA_OBJECTIVES:
        raise ValueError(
            f"config.data.objective={data_config.objective!r} is unknown; choose one of {sorted(DATA_OBJECTIVES)}"
        )
    return DATA_OBJECTIVES[data_config.objective]


def register_task(data_config: ml_collections.ConfigDict) -> str:
    """Registers (or replaces) the seqio Task `<corpus>_<objective>` of `data_config`, or with `data.mixture` one
    such Task per corpus and the seqio Mixture `mixture_<corpus>_..._<objective>` of them at the given rates;
    returns the name to pass to `seqio.get_mixture_or_task`.

    Checks the objective, the corpora and the lengths before anything slow; the vocabulary (one for every task:
    data.vocab_path, or trained on data.corpus) may be trained here on first use (see vocab.get_vocabulary).
    """
    objective = get_objective(data_config)
    check_mixture(data_config)
    sources.hide_accelerators_from_tf()
    corpora = [corpus for corpus, _ in data_config.mixture] or [data_config.corpus]
    task_sources = {}
    for corpus in corpora:
        corpus_config = data_config.copy_and_resolve_references()
        corpus_config.corpus = corpus
        task_sources[corpus] = sources.get_source(corpus_config)
    vocabulary = vocab.get_vocabulary(data_config)
    task_preprocessors = objective.preprocessors(data_config, vocabulary)
    output_features = objective.output_features(vocabulary)
    for corpus, source in task_sources.items():
        name = f"{corpus}_{data_config.objective}"
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=source,
            preprocessors=task_preprocessors,
            output_features=output_features,
            # A row-stream objective keeps its examples in stream order (its source still shuffles the documents).
            shuffle_buffer_size=1 if objective.row_streams else data_config.shuffle_buffer,
        )
    if not data_config.mixture:
        return name
    # seqio samples each example's task with probability rate / sum of rates (tf.data's sample_from_datasets).
    mixture = f"mixture_{'_'.join(corpora)}_{data_config.objective}"
    seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(
        mixture, [(f"{corpus}_{data_config.objective}", float(rate)) for corpus, rate in data_config.mixture]
    )
    return mixture


def check_mixture(data_config: ml_collections.ConfigDict) -> None:
    """ConfigError naming data.mixture when it names an unknown or repeated corpus or a rate that is not positive
    (the rule of config_lib.FIELDS, also for configs built in Python)."""
    problem = config_lib.FIELDS["data.mixture"].problem(data_config.mixture)
    if problem:
        raise config_lib.ConfigError(f"config.data.mixture={data_config.mixture!r} {problem}")


def task_feature_lengths(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    """Task feature lengths for `get_dataset(sequence_length=...)` and the feature converter."""
    return get_objective(data_config).lengths(data_config)


def model_feature_lengths(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    """Model feature name -> length of the batches the objective's feature converter produces."""
    lengths = task_feature_lengths(data_config)
    return dict(feature_converter(data_config).get_model_feature_lengths(lengths))


def input_tokens_per_row(data_config: ml_collections.ConfigDict) -> int:
    """Token positions a model reads per row: the lengths of its `*_input_tokens` features (encoder + decoder)."""
    return sum(n for name, n in model_feature_lengths(data_config).items() if name.endswith("_input_tokens"))


def feature_converter(data_config: ml_collections.ConfigDict) -> seqio.FeatureConverter:
    """The objective's feature converter; packs several examples per row when `data.pack`."""
    return get_objective(data_config).feature_converter(pack=data_config.pack)
