"""seqio Tasks of lmx: `<corpus>_<objective>`, a source, an objective's preprocessors and a feature converter.

Use:
  name = tasks.register_task(config.data)
  ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=tasks.task_feature_lengths(config.data), ...)
  ds = tasks.feature_converter(config.data)(ds, tasks.task_feature_lengths(config.data))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import ml_collections
import seqio

from lmx.data import preprocessors, sources, vocab


class Objective(NamedTuple):
    """How a pretraining objective turns {"text"} documents into model features."""

    # data config -> the seqio preprocessors after the source; refuses a config the objective cannot serve.
    preprocessors: Callable[[ml_collections.ConfigDict], list[Callable]]
    # vocabulary -> the Task's output features.
    output_features: Callable[[seqio.Vocabulary], dict[str, seqio.Feature]]
    # seqio feature converter class: task features -> model features (packing, segment ids, positions).
    feature_converter: type[seqio.FeatureConverter]


def _span_corruption_preprocessors(data_config: ml_collections.ConfigDict) -> list[Callable]:
    preprocessors.check_span_corruption(
        data_config.inputs_length,
        data_config.targets_length,
        data_config.noise_density,
        data_config.mean_noise_span_length,
        data_config.extra_ids,
    )
    return [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
        functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
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


OBJECTIVES: dict[str, Objective] = {
    "span_corruption": Objective(
        _span_corruption_preprocessors, _encoder_decoder_features, seqio.EncDecFeatureConverter
    ),
}


def get_objective(data_config: ml_collections.ConfigDict) -> Objective:
    if data_config.objective not in OBJECTIVES:
        raise ValueError(f"Unknown data.objective {data_config.objective!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[data_config.objective]


def register_task(data_config: ml_collections.ConfigDict) -> str:
    """Registers (or replaces) the seqio Task `<corpus>_<objective>` of `data_config`; returns its name.

    Checks the objective, the corpus and the lengths before anything slow; the vocabulary may be trained here on
    first use (see vocab.get_vocabulary).
    """
    objective = get_objective(data_config)
    task_preprocessors = objective.preprocessors(data_config)
    sources.hide_accelerators_from_tf()
    source = sources.get_source(data_config)
    vocabulary = vocab.get_vocabulary(data_config)
    name = f"{data_config.corpus}_{data_config.objective}"
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=task_preprocessors,
        output_features=objective.output_features(vocabulary),
        shuffle_buffer_size=data_config.shuffle_buffer,
    )
    return name


def task_feature_lengths(data_config: ml_collections.ConfigDict) -> dict[str, int]:
    """Task feature lengths for `get_dataset(sequence_length=...)` and the feature converter."""
    return {"inputs": data_config.inputs_length, "targets": data_config.targets_length}


def feature_converter(data_config: ml_collections.ConfigDict) -> seqio.FeatureConverter:
    """The objective's feature converter; packs several examples per row when `data.pack`."""
    return get_objective(data_config).feature_converter(pack=data_config.pack)
