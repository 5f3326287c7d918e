"""The downstream tasks as seqio Tasks, in two formats, and the model features fine-tuning trains and evaluates on.

The catalog (DownstreamTask, DOWNSTREAM_TASKS, get_task) is lmx.finetune.catalog; the raw examples (`examples`:
local files or TFDS) lmx.finetune.sources. Here, `register_seqio_task(task, vocabulary, format=...)` registers
`finetune_<task>_<format>`:

  "classify"      {"inputs": [CLS] a [SEP] b [SEP] ids, "token_types", "labels": [] int32 (float32 for STS-B)}
                  for a head; converted (ClassificationFeatureConverter) to encoder_input_tokens,
                  encoder_token_types ([length], 0-padded) and labels.
  "text_to_text"  T5's {"inputs": "sst2 sentence: ...", "targets": "positive"} tokenized, EOS after each (trimmed
                  to fit), + "labels" and the *_pretokenized texts for evaluation; converted by seqio's
                  EncDecFeatureConverter or (decoder-only) PrefixLMFeatureConverter, never packed.

Classification layouts (`layout`): "bert" = [CLS] a [SEP] b [SEP] (single sentence: [CLS] a [SEP]) with the
vocabulary's cls and eos ([SEP]) ids, BERT's fine-tuning input (Devlin et al. 2019, section 3 and figure 2); "t5" =
a b EOS, a T5 encoder's input (mean-pooled by its head). Token types are 0 on the first sentence (with [CLS] and its
[SEP]) and 1 on the second (with the last [SEP] or the EOS). Too long a pair loses tokens from the end of the longer
sentence first (BERT's _truncate_seq_pair). "auto" picks "bert" when the vocabulary has a cls id (WordPiece, and
SentencePiece or byte-level BPE vocabularies lmx trains, which hold <cls>), else "t5" (T5's own vocabulary). The
vocabulary cannot tell a T5 encoder on an lmx-trained vocabulary from BERT: callers that know the model family pass
layout_of_model(config.model.name).

Use (the same rows in the same order as eval_targets when unshuffled):
  ds = classification_features(task, vocabulary, "validation", source="local", data_dir="../shared/data", length=128)
  ds = text_to_text_features(task, vocabulary, "train", source=..., data_dir=..., inputs_length=128,
                             targets_length=8, decoder_only=False, shuffle=True, seed=0, num_epochs=None)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import seqio
import tensorflow as tf

from lmx.config_lib import ConfigError
from lmx.data import sentence_pairs, vocab
from lmx.finetune import metrics
from lmx.finetune.catalog import DOWNSTREAM_TASKS, DownstreamTask, get_task  # noqa: F401  (the public API)
from lmx.finetune.sources import data_source, examples, label_dtype  # noqa: F401  (the public API)

FORMATS = ("classify", "text_to_text")
LAYOUTS = ("auto", "bert", "t5")
# Examples shuffled after preprocessing. Local sources already shuffle every row (sources.py), TFDS ones only
# their files, so their examples also pass a buffer of this many.
TFDS_SHUFFLE_BUFFER = 10_000
_TARGET_BLOCK = 4096  # eval_targets reads the examples in blocks of this many


def classification_lengths(length: int) -> dict[str, int | None]:
    """Task feature lengths of the classify format (labels are scalars: no length)."""
    return {"inputs": length, "token_types": length, "labels": None}


def layout_of_model(model_name: str) -> str:
    """The classification layout a pretrained model family read in pretraining (config.model.name): T5's encoder
    "t5", the encoder-only families (BERT, ALBERT, RoBERTa, ELECTRA) "bert"."""
    return "t5" if model_name == "encoder_decoder" else "bert"


def resolve_layout(vocabulary: seqio.Vocabulary, layout: str) -> str:
    """The layout, "bert" or "t5": `layout` itself, or for "auto" by whether the vocabulary has a cls id."""
    if layout not in LAYOUTS:
        raise ConfigError(f"classification layout {layout!r} is unknown; choose one of {list(LAYOUTS)}")
    if layout != "auto":
        return layout
    return "bert" if vocab.special_ids(vocabulary).cls is not None else "t5"


def _lay_out(a: tf.Tensor, b: tf.Tensor | None, budget: int, first_ids, second_ids, last_ids):
    """(inputs, token_types) of sentences a and b ([n] ids; b None for one sentence) truncated to `budget` ids:
    first_ids a second_ids (b last_ids), types 0 up to and with second_ids, 1 after."""
    if b is None:
        a = a[:budget]
        second = tf.zeros([0], tf.int32)
    else:
        cut_a, cut_b = sentence_pairs.truncation(tf.size(a), tf.size(b), budget)
        a, b = a[: tf.size(a) - cut_a], b[: tf.size(b) - cut_b]
        second = tf.concat([b, tf.constant(last_ids, tf.int32)], axis=0)
    first = tf.concat([tf.constant(first_ids, tf.int32), a, tf.constant(second_ids, tf.int32)], axis=0)
    return tf.concat([first, second], axis=0), tf.concat([tf.zeros_like(first), tf.ones_like(second)], axis=0)


def classification_inputs(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    *,
    task: DownstreamTask,
    layout: str,
) -> tf.data.Dataset:
    """seqio preprocessor: examples -> {"inputs", "token_types", "labels"} in `layout` ("bert" | "t5"), at most
    sequence_length["inputs"] ids."""
    vocabulary = output_features["inputs"].vocabulary
    special = vocab.special_ids(vocabulary)
    length = sequence_length["inputs"]
    if layout == "bert":  # [CLS] a [SEP] (b [SEP])
        first_ids, second_ids, last_ids = [special.cls], [special.eos], [special.eos]
    else:  # a (b) EOS: the EOS closes the second sentence, or the first when there is none
        first_ids, second_ids, last_ids = [], ([] if task.is_pair else [special.eos]), [special.eos]
    budget = length - len(first_ids) - len(second_ids) - (len(last_ids) if task.is_pair else 0)
    if budget < (2 if task.is_pair else 1):
        raise ConfigError(f"classification inputs of {length} tokens leave no room for {task.name}'s text")

    def encode(text):
        return tf.cast(vocabulary.encode_tf(text), tf.int32)  # [n]

    def example(ex):
        b = encode(ex["sentence2"]) if task.is_pair else None
        inputs, token_types = _lay_out(encode(ex["sentence1"]), b, budget, first_ids, second_ids, last_ids)
        return {"inputs": inputs, "token_types": token_types, "labels": ex["label"]}

    return dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE)


def text_to_text(dataset: tf.data.Dataset, *, task: DownstreamTask) -> tf.data.Dataset:
    """seqio preprocessor: examples -> T5's {"inputs": text, "targets": text, "labels"} (catalog's formats)."""
    label_names = tf.constant(task.label_names or [""])

    def example(ex):
        parts = [task.text_prefix]
        for field, key in task.text_fields:
            parts += [f"{field}:", ex[key]] if field else [ex[key]]
        if task.kind == "classification":
            targets = tf.gather(label_names, ex["label"])
        elif task.kind == "regression":  # T5: the score rounded to the nearest 0.2 (half to even), "%.1f"
            targets = tf.strings.as_string(tf.round(ex["label"] * 5) / 5, precision=1)
        else:
            targets = ex["sentence2"]
        return {"inputs": tf.strings.join(parts, separator=" "), "targets": targets, "labels": ex["label"]}

    return dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE)


def _postprocess(output, example=None, is_target=False, *, task: DownstreamTask):
    """seqio postprocess_fn of the text-to-text format: a prediction's label (text_to_label); a target is the
    example's own label (STS-B's gold score, not its rounded text); translation keeps texts."""
    if isinstance(output, bytes):
        output = output.decode("utf-8")
    if task.kind == "translation":
        return output
    if is_target and example is not None and "labels" in example:
        return example["labels"].item() if hasattr(example["labels"], "item") else example["labels"]
    return task.text_to_label(output)


def _scalar(dtype: tf.DType) -> seqio.Feature:
    return seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False, required=True, dtype=dtype, rank=0)


def _integers() -> seqio.Feature:
    return seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False, required=True, dtype=tf.int32)


def register_seqio_task(
    task: DownstreamTask,
    vocabulary: seqio.Vocabulary,
    *,
    format: str,
    source: str,
    data_dir: str,
    layout: str = "auto",
) -> str:
    """Registers (or replaces) the seqio Task `finetune_<task>_<format>` and returns its name.

    classify: output features inputs, token_types, labels. text_to_text: inputs, targets (EOS appended after
    trimming to the lengths), with postprocess_fn and metric_fns (metrics.compute), so seqio's Evaluator can score it.
    """
    if format not in FORMATS:
        raise ConfigError(f"finetune format {format!r} is unknown; choose one of {list(FORMATS)}")
    source_of_data = data_source(task, source=source, data_dir=data_dir)
    name = f"finetune_{task.name}_{format}"
    extra = {}
    if format == "classify":
        if task.kind == "translation":
            raise ConfigError(f"config.finetune.task={task.name!r} is a translation task: it has no classify format")
        task_preprocessors = [
            functools.partial(classification_inputs, task=task, layout=resolve_layout(vocabulary, layout))
        ]
        output_features = {
            "inputs": seqio.Feature(vocabulary, add_eos=False, required=True),
            "token_types": _integers(),
            "labels": _scalar(label_dtype(task)),
        }
    else:
        task_preprocessors = [
            functools.partial(text_to_text, task=task),
            functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=True),
            seqio.preprocessors.append_eos_after_trim,
        ]
        output_features = {
            "inputs": seqio.Feature(vocabulary, add_eos=True, required=True),
            "targets": seqio.Feature(vocabulary, add_eos=True, required=True),
        }
        extra = {
            "postprocess_fn": functools.partial(_postprocess, task=task),
            "metric_fns": [functools.partial(metrics.compute, task)],
        }
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=source_of_data,
        preprocessors=task_preprocessors,
        output_features=output_features,
        shuffle_buffer_size=TFDS_SHUFFLE_BUFFER if source == "tfds" else 1,  # local sources shuffle every row
        **extra,
    )
    return name


class ClassificationFeatureConverter(seqio.FeatureConverter):
    """The classify format's task features -> model features, one example per row (a row's label is its own):

    inputs [n], token_types [n], labels []  ->  encoder_input_tokens [L], encoder_token_types [L] (0-padded),
                                                 labels [] (int32, or float32 for regression)
    """

    TASK_FEATURES = {}  # set per instance: the labels' dtype varies
    MODEL_FEATURES = {}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, label_dtype: tf.DType = tf.int32, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("classification examples are never packed: each row's label is its own")
        spec = seqio.FeatureConverter.FeatureSpec
        labels = spec(dtype=label_dtype, rank=0)
        self.TASK_FEATURES = {"inputs": spec(tf.int32), "token_types": spec(tf.int32), "labels": labels}
        self.MODEL_FEATURES = {"encoder_input_tokens": spec(tf.int32), "encoder_token_types": spec(tf.int32)}
        self.MODEL_FEATURES["labels"] = labels
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        length = task_feature_lengths["inputs"]
        ds = seqio.utils.trim_and_pad_dataset(ds, {"inputs": length, "token_types": length})

        def convert(ex):
            return {
                "encoder_input_tokens": ex["inputs"],
                "encoder_token_types": ex["token_types"],
                "labels": ex["labels"],
            }

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int | None]:
        length = task_feature_lengths["inputs"]
        return {"encoder_input_tokens": length, "encoder_token_types": length, "labels": None}


def _task_dataset(name: str, split: str, lengths, shuffle: bool, seed, num_epochs, shard_info) -> tf.data.Dataset:
    return seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=lengths,
        split=split,
        shuffle=shuffle,
        seed=seed,
        num_epochs=num_epochs,
        shard_info=shard_info,
        use_cached=False,
    )


def classification_features(
    task: DownstreamTask,
    vocabulary: seqio.Vocabulary,
    split: str,
    *,
    source: str,
    data_dir: str,
    length: int,
    layout: str = "auto",
    shuffle: bool = False,
    seed: int | None = None,
    num_epochs: int | None = 1,
    shard_info: seqio.ShardInfo | None = None,
) -> tf.data.Dataset:
    """Unbatched rows {"encoder_input_tokens": [length], "encoder_token_types": [length], "labels": []} of `split`
    in the classify format (layouts: module docstring). Unshuffled, once: source order (= eval_targets)."""
    name = register_seqio_task(task, vocabulary, format="classify", source=source, data_dir=data_dir, layout=layout)
    lengths = classification_lengths(length)
    dataset = _task_dataset(name, split, lengths, shuffle, seed, num_epochs, shard_info)
    return ClassificationFeatureConverter(label_dtype(task))(dataset, lengths)


def text_to_text_features(
    task: DownstreamTask,
    vocabulary: seqio.Vocabulary,
    split: str,
    *,
    source: str,
    data_dir: str,
    inputs_length: int,
    targets_length: int,
    decoder_only: bool,
    shuffle: bool = False,
    seed: int | None = None,
    num_epochs: int | None = 1,
    shard_info: seqio.ShardInfo | None = None,
) -> tf.data.Dataset:
    """Unbatched, unpacked rows of `split` in T5's text-to-text format.

    Encoder-decoder (seqio's EncDecFeatureConverter): encoder_input_tokens [inputs_length], decoder_input_tokens,
    decoder_target_tokens, decoder_loss_weights [targets_length]. Decoder-only (seqio's PrefixLMFeatureConverter,
    T5's prefix LM, section 3.2.1): one row of inputs_length + targets_length: decoder_target_tokens = inputs EOS
    targets EOS, decoder_input_tokens = the same shifted right (0 first), decoder_loss_weights 1 on the targets
    part only, decoder_causal_attention 1 on the prefix (inputs EOS) and the position after it."""
    name = register_seqio_task(task, vocabulary, format="text_to_text", source=source, data_dir=data_dir)
    lengths = {"inputs": inputs_length, "targets": targets_length}
    dataset = _task_dataset(name, split, lengths, shuffle, seed, num_epochs, shard_info)
    if decoder_only:
        converter = seqio.PrefixLMFeatureConverter(loss_on_targets_only=True, pack=False)
    else:
        converter = seqio.EncDecFeatureConverter(pack=False)
    return converter(dataset, lengths)


def eval_targets(task: DownstreamTask, split: str, *, source: str, data_dir: str) -> list:
    """The targets of `split` in source order (the order of the unshuffled *_features rows): class ids (int),
    STS-B's gold scores (float) or Multi30k's German references (str) — what metrics.compute takes."""
    key = "sentence2" if task.kind == "translation" else "label"
    blocks = examples(task, split, source=source, data_dir=data_dir).map(lambda ex: ex[key]).batch(_TARGET_BLOCK)
    values = [value for block in blocks.as_numpy_iterator() for value in block]  # blocks: far faster than rows
    if task.kind == "translation":
        return [value.decode("utf-8") for value in values]
    return [float(value) if task.kind == "regression" else int(value) for value in values]
