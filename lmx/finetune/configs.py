"""The shared body of configs/finetune_<task>.py: a pretraining config of configs/ plus the task's fine-tuning run.

`finetune_config(task, arg, configs_dir, ...)` loads `configs/<pretrained>.py` (arg "<pretrained>[,<format>]",
the first of `pretrained` when arg is None; the format is classify, or text_to_text for Multi30k and decoder-only
models) and keeps its model and data sections unchanged (the architecture must
match the checkpoint given as init_from, and the vocabulary is the pretraining run's), then sets what fine-tuning
needs: the task and format, row lengths, a CPU-sized schedule and the learning rates below.

Recipes (CPU-sized: two cores, minutes; `steps` per task):
  BERT/ALBERT, XLNet   AdamW lr 1e-4 (BERT 4.1 searches 2e-5..5e-5 for BERT-base; tiny models take a larger one)
  ELECTRA              AdamW lr 3e-4 with layer-wise decay 0.8 (ELECTRA appendix A: Small's fine-tuning settings)
  T5 (head or text)    AdamW lr 3e-4
  decoder-only         AdamW lr 3e-4, text to text (a prefix LM: "<task> sentence: ..." -> the label's name)
  all                  batch 32, linear warmup over the first 10% of steps then linear decay to 0, weight decay 0.01,
                       gradient clipping 1.0, head dropout 0.1, evaluation every `eval_every` steps, no early stop
"""

from __future__ import annotations

import pathlib

import ml_collections

from lmx import config_lib

# config.model.name -> (peak learning rate, layer decay)
RECIPES = {
    "encoder_only": (1e-4, 1.0),
    "xlnet": (1e-4, 1.0),
    "electra": (3e-4, 0.8),
    "encoder_decoder": (3e-4, 1.0),
    "decoder_only": (3e-4, 1.0),
}
FORMATS = ("classify", "text_to_text")


def finetune_config(
    task: str,
    arg: str | None,
    configs_dir: pathlib.Path,
    *,
    pretrained: tuple[str, ...],
    steps: int,
    inputs_length: int,
    targets_length: int = 8,
    eval_every: int = 200,
    text_to_text: bool = False,
) -> ml_collections.ConfigDict:
    """The fine-tuning config of `task` on the pretraining config `arg` ("<name>[,text_to_text|,classify]"), one of
    `pretrained` (default: its first). The format: classify, or text_to_text when `text_to_text` (Multi30k) or the
    model is decoder-only (it has no classification head)."""
    name, _, fmt = (arg or pretrained[0]).partition(",")
    if name not in pretrained:
        raise ValueError(
            f"configs/finetune_{task}.py takes a pretraining config, one of {list(pretrained)}; not {name!r}"
        )
    if fmt and fmt not in FORMATS:
        raise ValueError(
            f"configs/finetune_{task}.py:{name},<format>: the format is one of {list(FORMATS)}, not {fmt!r}"
        )
    config = config_lib.load_config_file(str(configs_dir / f"{name}.py"))
    # A decoder-only model has no classification head: it classifies text to text (a prefix LM, T5 section 3.2.1).
    fmt = fmt or ("text_to_text" if text_to_text or config.model.name == "decoder_only" else "classify")
    learning_rate, layer_decay = RECIPES[config.model.name]

    f = config.finetune
    f.task, f.format = task, fmt
    f.layer_decay = layer_decay if fmt == "classify" else 1.0
    f.head_dropout, f.patience, f.epochs = 0.1, 0, 0.0

    d = config.data
    d.inputs_length, d.targets_length = inputs_length, targets_length

    t = config.train
    t.steps, t.batch_size = steps, 32
    t.log_every, t.eval_every = 50, eval_every
    t.z_loss = 0.0 if fmt == "classify" else t.z_loss

    o = config.optim
    o.name, o.learning_rate, o.b1, o.b2, o.eps = "adamw", learning_rate, 0.9, 0.999, 1e-6
    o.warmup_steps, o.warmup_shape, o.decay, o.end_learning_rate_fraction = steps // 10, "linear", "linear", 0.0
    o.weight_decay, o.clip_norm = 0.01, 1.0

    k = config.checkpoint
    k.every_steps, k.keep = eval_every, 2
    return config
