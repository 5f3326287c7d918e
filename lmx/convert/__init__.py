"""Checkpoint conversion between lmx and Hugging Face `transformers` (T5 1.0/1.1, GPT-2, BERT, ALBERT).

  python -m lmx.convert.hf import --hf_dir=DIR --config=configs/X.py --out=DIR     HF directory -> lmx checkpoint
  python -m lmx.convert.hf export --checkpoint=WORKDIR/checkpoints/<step> --config=configs/X.py --out=DIR

Modules, one concern each:
  hf.py             the CLI: flags, one-line errors, write into a temporary directory and rename at the end
  families.py       FAMILIES: HF model_type -> the family record (architectures, config table, tensor table)
  hf_config.py      config.json <-> config.model, field by field (one table per family)
  mappings.py       HF tensor names <-> lmx parameter paths with their transforms (one table per family)
  tensors.py        applies a tensor table: checks names and shapes, scanned/unrolled layouts, tied weights
  hf_files.py       reading config.json and weights (safetensors; pytorch_model.bin only as a plain state dict)
  lmx_files.py      the lmx side on disk: a params-only orbax checkpoint step that `checkpoint.init_from` reads
  tokenizer.py      the checkpoint's own tokenizer files: copied and checked on import, written on export
  electra.py        python -m lmx.convert.electra: an ELECTRA run's discriminator -> an encoder-only checkpoint
"""

from __future__ import annotations


class ConversionError(ValueError):
    """Bad input to the converter (files, tensors, configs that do not match); the message names the value and the
    fix, and the CLI prints it as one line."""
