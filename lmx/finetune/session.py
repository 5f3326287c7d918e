"""What a fine-tuning run (config.finetune.task set) changes in lmx.train's loop, in one object, `FineTuning`:

data        the task's training split, shuffled and repeated (lmx.finetune.batches), instead of a pretraining task
model       classify: the body's classifier (lmx.models.heads); text_to_text: the pretraining model itself
objective   lmx.objectives.FINETUNE_OBJECTIVES[config.finetune.format]
optimizer   lmx.optim's, with the head's learning rate and layer-wise decay (lmx.finetune.optim)
init_from   the body read from the checkpoint, the head (`classifier_head`) fresh (lmx.checkpoint.restore_init_from)
steps       config.finetune.epochs passes over the training split, when set, instead of config.train.steps
evaluation  the task's metrics on the validation split (lmx.finetune.evaluation), every train.eval_every steps and
            at the end; the best step by the selection metric is kept from checkpoint garbage collection, the run
            stops early after finetune.patience evaluations without improvement, and results.json sums it up
            (lmx.finetune.results)
"""

from __future__ import annotations

import math
import os

import flax.linen as nn
import ml_collections

from lmx import checkpoint, config_lib, objectives
from lmx import metrics as metric_records
from lmx.config_lib import ConfigError
from lmx.finetune import batches, catalog, evaluation, optim, results
from lmx.models import build_model, heads

TEXT_TO_TEXT_FAMILIES = ("encoder_decoder", "decoder_only")


def validate(config: ml_collections.ConfigDict) -> None:
    """ConfigError naming the field for a fine-tuning config that cannot work, before any data is read: the task, a
    format its task or model cannot take, lengths over the model's, a layer decay without layers, an init_from
    checkpoint of another family."""
    f, m, d = config.finetune, config.model, config.data
    task = catalog.get_task(f.task)
    if f.format == "classify":
        if task.kind == "translation":
            raise ConfigError(
                f"config.finetune.task={f.task!r} is a translation task; set config.finetune.format='text_to_text'"
            )
        if m.name not in heads.CLASSIFIERS:
            raise ConfigError(
                f"config.model.name={m.name!r} has no classification head (heads: {sorted(heads.CLASSIFIERS)}); "
                "set config.finetune.format='text_to_text'"
            )
    elif m.name not in TEXT_TO_TEXT_FAMILIES:
        raise ConfigError(
            f"config.finetune.format='text_to_text' needs a model that generates text ({list(TEXT_TO_TEXT_FAMILIES)}), "
            f"not config.model.name={m.name!r}; set config.finetune.format='classify'"
        )
    lengths = feature_lengths(config)
    longest = max(lengths.values())
    if longest > m.max_length:
        raise ConfigError(
            f"fine-tuning rows of {longest} tokens are over config.model.max_length={m.max_length}; shorten "
            f"config.data.inputs_length={d.inputs_length}"
            + ("" if f.format == "classify" else f" or config.data.targets_length={d.targets_length}")
        )
    optim.check_layer_decay(config)
    if config.checkpoint.init_from:
        check_family(config.checkpoint.init_from, m.name)
        check_vocabulary(config.checkpoint.init_from, d)


def _vocabulary_of(data: ml_collections.ConfigDict) -> dict:
    """What decides the vocabulary lmx.data.vocab.get_vocabulary returns for a data section: its file (data.vocab_path,
    or where an auto-trained one is cached for the corpus), kind, sentinels, casing and special tokens."""
    from lmx.data import vocab  # TensorFlow: imported only when a checkpoint is checked

    fields = {"vocabulary file": os.path.abspath(data.vocab_path or vocab.cached_vocab_path(data))}
    fields.update({k: data[k] for k in ("vocab_kind", "extra_ids", "vocab_lower_case")})
    fields.update({f"special_tokens.{k}": v for k, v in data.special_tokens.items()})
    return fields


def check_vocabulary(init_from: str, data_config: ml_collections.ConfigDict) -> None:
    """ConfigError when this run's vocabulary is not the one the checkpoint was pretrained with (its token ids would
    name other pieces), naming what differs: a fine-tuning config keeps the pretraining run's data.corpus (and
    text_files) and vocabulary settings, or names its vocabulary file with data.vocab_path."""
    step_dir = checkpoint.resolve_init_from(init_from)
    try:
        saved = checkpoint.saved_config(os.path.dirname(os.path.dirname(step_dir)), int(os.path.basename(step_dir)))
        saved_data = config_lib.base_config().data
        saved_data.update(saved["data"])
        pretrained = _vocabulary_of(saved_data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # not a readable checkpoint: checkpoint.check_init_from says what is wrong with it
    current = _vocabulary_of(data_config)
    for field, value in current.items():
        if pretrained.get(field) != value:
            where = "config.data." + ("vocab_path" if field == "vocabulary file" else field)
            raise ConfigError(
                f"this run's {field} is {value!r} but config.checkpoint.init_from={init_from} was pretrained with "
                f"{pretrained.get(field)!r}: its token ids would name other pieces; set {where} (or data.corpus and "
                "data.text_files) as the pretraining run had them"
            )


def check_family(path: str, family: str, what: str = "config.checkpoint.init_from") -> None:
    """ConfigError when the checkpoint `path` (a step directory or a run's workdir) holds a model of another family
    than config.model.name=`family` (checked before the field-by-field architecture check, whose list of
    differences would bury the point). `what` names the field or flag that gave the path."""
    step_dir = checkpoint.resolve_init_from(path)
    try:
        saved = checkpoint.saved_config(os.path.dirname(os.path.dirname(step_dir)), int(os.path.basename(step_dir)))
        saved_family = saved["model"]["name"]
    except (OSError, ValueError, KeyError):
        return  # not a readable checkpoint: checkpoint.check_init_from says what is wrong with it
    if saved_family != family:
        raise ConfigError(
            f"{what}={path} is a checkpoint of a {saved_family!r} model but config.model.name={family!r}; use the "
            "fine-tuning config of the model it was trained as (configs/finetune_<task>.py:<that config>), or a "
            "checkpoint of this model"
        )


def feature_lengths(config: ml_collections.ConfigDict) -> dict[str, int]:
    """The model's input features and their lengths (for init and the length check)."""
    d = config.data
    if config.finetune.format == "classify":
        return {"encoder_input_tokens": d.inputs_length, "encoder_token_types": d.inputs_length}
    if config.model.name == "decoder_only":  # one row: inputs EOS targets EOS (T5's prefix LM)
        return {"decoder_input_tokens": d.inputs_length + d.targets_length}
    return {"encoder_input_tokens": d.inputs_length, "decoder_input_tokens": d.targets_length}


class FineTuning:
    """The fine-tuning side of one lmx.train run (module docstring). Build with `FineTuning.prepare(config)`."""

    def __init__(self, config: ml_collections.ConfigDict, train_examples: int | None = None):
        self.config = config  # with train.steps resolved from finetune.epochs
        self.task = catalog.get_task(config.finetune.task)
        self._train_examples = train_examples
        self.objective = objectives.FINETUNE_OBJECTIVES[config.finetune.format]
        self.fresh = (heads.HEAD,) if config.finetune.format == "classify" else ()  # subtrees init_from leaves fresh
        self.evaluator: evaluation.Evaluator | None = None  # set by attach_evaluator

    @classmethod
    def prepare(cls, config: ml_collections.ConfigDict) -> FineTuning:
        """The fine-tuning of a `config` that passed `validate`. With finetune.epochs > 0 its config is a locked copy
        with train.steps = ceil(epochs x training examples / batch_size) (which reads the training split)."""
        if config.finetune.epochs <= 0:
            return cls(config)
        fine = cls(config)
        config = ml_collections.ConfigDict(config.to_dict())
        config.train.steps = max(1, math.ceil(config.finetune.epochs * fine.train_examples / config.train.batch_size))
        config.lock()
        return cls(config, fine.train_examples)

    @property
    def train_examples(self) -> int:
        """Examples in the training split (counted on first use)."""
        if self._train_examples is None:
            self._train_examples = batches.count_examples(self.config, self.task)
            if not self._train_examples:
                raise ConfigError(f"the training split of config.finetune.task={self.task.name!r} is empty")
        return self._train_examples

    def build_model(self) -> nn.Module:
        c = self.config
        if c.finetune.format == "text_to_text":
            return build_model(c.model)
        outputs = self.task.num_classes or 1  # regression: one score
        return heads.build_classifier(c.model, num_outputs=outputs, head_dropout=c.finetune.head_dropout)

    @property
    def feature_lengths(self) -> dict[str, int]:
        return feature_lengths(self.config)

    @property
    def tokens_per_row(self) -> int:
        """Input positions of a row, padding included (the throughput's tokens per step)."""
        return sum(n for name, n in self.feature_lengths.items() if name.endswith("_input_tokens"))

    def make_optimizer(self, param_axes, params):
        return optim.make_optimizer(self.config, self.config.train.steps, param_axes, params)

    def train_iterator(self, vocabulary, batch_sharding):
        return batches.train_iterator(self.config, self.task, vocabulary, batch_sharding)

    def attach_evaluator(self, vocabulary, model, run_shardings) -> evaluation.Evaluator:
        """run_shardings: (mesh, rules, batch sharding, parameter shardings)."""
        self.evaluator = evaluation.Evaluator(self.config, self.task, vocabulary, model, self.objective, run_shardings)
        return self.evaluator

    def evaluate(self, params) -> dict[str, float]:
        return self.evaluator(params, "validation")

    @property
    def selection_metric(self) -> str:
        return self.task.metrics[0]

    def tracker(self, workdir: str, start: int) -> results.BestTracker:
        """The best and patience after the evaluations up to step `start` (metrics.jsonl), for a resumed run."""
        records = metric_records.read_records(os.path.join(workdir, "metrics.jsonl")) if start else []
        return results.BestTracker.from_records(records, self.selection_metric, self.config.finetune.patience, start)

    def write_results(self, workdir: str, tracker: results.BestTracker, *, steps: int, wall_s: float) -> str:
        c = self.config
        record = results.results(
            tracker,
            task=self.task.name,
            steps=steps,
            epochs=steps * c.train.batch_size / self.train_examples,
            wall_s=wall_s,
            seed=c.train.seed,
            init_from=c.checkpoint.init_from,
        )
        return results.write_results(workdir, record)
