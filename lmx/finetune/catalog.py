"""The downstream tasks: what each one is (classes, metrics, T5's text-to-text format, where its data lives).

Every task's examples share one schema (lmx.finetune.sources): {"sentence1", "sentence2" ("" for single-sentence
tasks), "label"}. Class ids follow TFDS's `glue/*` and `ag_news_subset` label orders, so a local copy and TFDS
give the same ids. Text-to-text formats are T5's (Raffel et al. 2020, appendix D): the task name, then each field
as "<field>: <text>" in T5's order (GLUE's feature names, sorted), e.g.
  "mnli hypothesis: <sentence2> premise: <sentence1>" -> "entailment" | "neutral" | "contradiction"
  "stsb sentence1: <a> sentence2: <b>"                -> "3.8" (the score rounded to the nearest 0.2)
  "agnews: <title> <description>"                     -> "World" | "Sports" | "Business" | "Sci/Tech"
  "translate English to German: <en>"                 -> "<de>"
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lmx.config_lib import ConfigError
from lmx.finetune import metrics

KINDS = ("classification", "regression", "translation")
UNPARSEABLE = -1  # text_to_label of a text that names no class (a wrong prediction); also multi30k's "label"


@dataclasses.dataclass(frozen=True)
class DownstreamTask:
    """One downstream task. Examples: {"sentence1", "sentence2", "label"} (lmx.finetune.sources)."""

    name: str  # "sst2", ...: config.finetune.task
    kind: str  # one of KINDS
    label_names: tuple[str, ...]  # class names in label-id order, T5's targets; () for regression and translation
    metrics: tuple[str, ...]  # keys of metrics.METRICS; the first selects checkpoints (best, early stopping)
    text_prefix: str  # T5's input starts with it: the task name ("sst2"), or "agnews:", "translate English to German:"
    # T5's input fields in order: (field name, or "" for the bare text; the example key it reads).
    text_fields: tuple[tuple[str, str], ...]
    tfds_name: str | None  # "glue/sst2:2.0.0"; None: local files only
    tfds_fields: tuple[str, ...] = ()  # the TFDS features read as sentence1 (and sentence2)
    tfds_splits: tuple[tuple[str, str], ...] = (("train", "train"), ("validation", "validation"))  # lmx -> TFDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"DownstreamTask {self.name}: kind={self.kind!r}; known: {KINDS}")
        unknown = [m for m in self.metrics if m not in metrics.METRICS]
        if unknown or not self.metrics:
            raise ValueError(
                f"DownstreamTask {self.name}: metrics {self.metrics} must be keys of {list(metrics.METRICS)}"
            )
        if (self.kind == "classification") != bool(self.label_names):
            raise ValueError(f"DownstreamTask {self.name}: a {self.kind} task with label_names={self.label_names}")

    @property
    def num_classes(self) -> int:
        """Classes of a classification task; 0 for regression (STS-B) and translation (Multi30k)."""
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """Whether examples have a second text (sentence2) that the model reads; Multi30k's is its target."""
        return len(self.text_fields) == 2

    def label_to_text(self, label: int | float) -> str:
        """T5's target text of a label: its class name; STS-B: the score rounded to the nearest 0.2, "%.1f"."""
        if self.kind == "regression":  # float32 and half-to-even rounding, as the TF pipeline (tf.round) does
            five = np.float32(5)
            return f"{float(np.round(np.float32(label) * five) / five):.1f}"
        if self.kind == "translation":
            raise ValueError(f"{self.name} is a translation task: its targets are texts, not labels")
        if not 0 <= int(label) < self.num_classes or int(label) != label:
            raise ValueError(f"{self.name} label {label!r} is not a class id in [0, {self.num_classes})")
        return self.label_names[int(label)]

    def text_to_label(self, text: str) -> int | float:
        """The label a predicted text names: a class id, or STS-B's score; -1 (wrong) when it names none."""
        text = text.strip()
        if self.kind == "regression":
            try:
                score = float(text)
            except ValueError:
                return UNPARSEABLE
            return score if math.isfinite(score) else UNPARSEABLE
        if self.kind == "translation":
            raise ValueError(f"{self.name} is a translation task: its targets are texts, not labels")
        return self.label_names.index(text) if text in self.label_names else UNPARSEABLE

    def input_text(self, sentence1: str, sentence2: str = "") -> str:
        """T5's text-to-text input of an example (the TF pipeline builds the same string)."""
        texts = {"sentence1": sentence1, "sentence2": sentence2}
        parts = [self.text_prefix]
        for field, key in self.text_fields:
            parts += [f"{field}:", texts[key]] if field else [texts[key]]
        return " ".join(parts)


def _glue(name, label_names, metric_names, fields, tfds_fields=None, validation="validation", kind="classification"):
    """A GLUE task: TFDS glue/<name>; T5's fields (name, example key) and their TFDS features."""
    return DownstreamTask(
        name=name,
        kind=kind,
        label_names=label_names,
        metrics=metric_names,
        text_prefix=name,
        text_fields=fields,
        tfds_name=f"glue/{name}:2.0.0",
        tfds_fields=tfds_fields or tuple(field for field, _ in fields),
        tfds_splits=(("train", "train"), ("validation", validation)),
    )


_SENTENCE = (("sentence", "sentence1"),)
_SENTENCES = (("sentence1", "sentence1"), ("sentence2", "sentence2"))
_NLI = ("entailment", "not_entailment")

DOWNSTREAM_TASKS: dict[str, DownstreamTask] = {
    task.name: task
    for task in [
        _glue("cola", ("unacceptable", "acceptable"), ("mcc",), _SENTENCE),
        _glue("sst2", ("negative", "positive"), ("accuracy",), _SENTENCE),
        _glue("mrpc", ("not_equivalent", "equivalent"), ("f1", "accuracy"), _SENTENCES),
        _glue(
            "qqp",
            ("not_duplicate", "duplicate"),
            ("f1", "accuracy"),
            (("question1", "sentence1"), ("question2", "sentence2")),
        ),
        _glue("stsb", (), ("pearson", "spearman"), _SENTENCES, kind="regression"),
        # T5 orders MNLI's fields hypothesis, premise; sentence1 is the premise, as in GLUE's files.
        _glue(
            "mnli",
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            (("hypothesis", "sentence2"), ("premise", "sentence1")),
            tfds_fields=("premise", "hypothesis"),
            validation="validation_matched",
        ),
        _glue("qnli", _NLI, ("accuracy",), (("question", "sentence1"), ("sentence", "sentence2"))),
        _glue("rte", _NLI, ("accuracy",), _SENTENCES),
        _glue("wnli", ("not_entailment", "entailment"), ("accuracy",), _SENTENCES),
        # AG News (Zhang et al. 2015): title and description; TFDS ag_news_subset has no validation split, so its
        # test split (the 7,600 rows of the local copy) validates there.
        DownstreamTask(
            name="agnews",
            kind="classification",
            label_names=("World", "Sports", "Business", "Sci/Tech"),
            metrics=("accuracy",),
            text_prefix="agnews:",
            text_fields=(("", "sentence1"), ("", "sentence2")),
            tfds_name="ag_news_subset:1.0.0",
            tfds_fields=("title", "description"),
            tfds_splits=(("train", "train"), ("validation", "test")),
        ),
        # Multi30k task 1 English -> German (Elliott et al. 2016): sentence1 English, sentence2 the German target.
        DownstreamTask(
            name="multi30k",
            kind="translation",
            label_names=(),
            metrics=("bleu", "exact_match"),
            text_prefix="translate English to German:",
            text_fields=(("", "sentence1"),),
            tfds_name=None,
        ),
    ]
}


def get_task(name: str) -> DownstreamTask:
    """The DownstreamTask called `name`; ConfigError (a ValueError) listing the known ones otherwise."""
    if name not in DOWNSTREAM_TASKS:
        raise ConfigError(f"config.finetune.task={name!r} is unknown; choose one of {sorted(DOWNSTREAM_TASKS)}")
    return DOWNSTREAM_TASKS[name]
