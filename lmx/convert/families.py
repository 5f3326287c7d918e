"""The model families the converter knows: Hugging Face `model_type` -> its config table, tensor table and classes.

Adding a family is one entry here plus its two tables (hf_config.py, mappings.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from lmx.convert import ConversionError, config_tables, hf_config, mappings


@dataclasses.dataclass(frozen=True)
class Family:
    model_type: str  # config.json "model_type"
    lmx_model: str  # config.model.name of the lmx model
    config: hf_config.ConfigTable
    tensors: mappings.TensorTable
    # HF class -> the lmx parameters (path prefixes) its checkpoints lack, which import takes from lmx's own init.
    # Export writes the first class, which must lack none.
    architectures: Mapping[str, tuple[str, ...]]
    token_ids: Mapping[str, Any]  # config.json token ids of lmx's conventions for this family (export)

    @property
    def export_architecture(self) -> str:
        return next(iter(self.architectures))


_HEADS_OF_PRETRAINING = ("pooler", "pair_classifier")  # the pooler is trained only through the NSP/SOP head

FAMILIES: dict[str, Family] = {
    "t5": Family(
        "t5",
        "encoder_decoder",
        config_tables.T5,
        mappings.T5,
        {"T5ForConditionalGeneration": ()},
        # T5: pad 0, eos 1, and the decoder starts from the pad id (seqio's shifted-right targets).
        {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0},
    ),
    "switch_transformers": Family(
        "switch_transformers",
        "encoder_decoder",
        config_tables.SWITCH,
        mappings.SWITCH,
        {"SwitchTransformersForConditionalGeneration": ()},
        {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0},  # T5's
    ),
    "gpt2": Family(
        "gpt2",
        "decoder_only",
        config_tables.GPT2,
        mappings.GPT2,
        {"GPT2LMHeadModel": ()},
        {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None},
    ),
    "bert": Family(
        "bert",
        "encoder_only",
        config_tables.BERT,
        mappings.BERT,
        {"BertForPreTraining": (), "BertForMaskedLM": _HEADS_OF_PRETRAINING},
        {"pad_token_id": 0},
    ),
    "albert": Family(
        "albert",
        "encoder_only",
        config_tables.ALBERT,
        mappings.ALBERT,
        {"AlbertForPreTraining": (), "AlbertForMaskedLM": _HEADS_OF_PRETRAINING},
        {"pad_token_id": 0, "bos_token_id": None, "eos_token_id": None},
    ),
    "xlnet": Family(
        "xlnet",
        "xlnet",
        config_tables.XLNET,
        mappings.XLNET,
        {"XLNetLMHeadModel": (), "XLNetModel": ("output_bias",)},
        {"pad_token_id": 0, "bos_token_id": None, "eos_token_id": None},
    ),
}


def of_hf_config(hf: Mapping[str, Any]) -> tuple[Family, str]:
    """(family, architecture) of a config.json; ConversionError naming the known ones when lmx has neither."""
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise ConversionError(f"config.json has architectures={architectures!r}; expected a list of class names")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        what = f"model_type={model_type!r}" + (f" ({', '.join(architectures)})" if architectures else "")
        raise ConversionError(
            f"config.json is a {what} checkpoint, which lmx does not convert; known: {list(FAMILIES)}"
        )
    family = FAMILIES[model_type]
    if not architectures:  # older config.json files name no class: take the full one
        return family, family.export_architecture
    if len(architectures) != 1 or architectures[0] not in family.architectures:
        raise ConversionError(
            f"config.json has architectures={architectures}; lmx converts {model_type} checkpoints of "
            f"{list(family.architectures)}"
        )
    return family, architectures[0]


def of_lmx_config(model_config) -> Family:
    """The family an lmx model config exports as: the first of its model's families whose config table takes it."""
    problems = []
    for family in FAMILIES.values():
        if family.lmx_model != model_config.name:
            continue
        try:
            hf_config.to_hf(family.config, model_config)
            return family
        except ConversionError as e:
            problems.append(str(e))
    if not problems:
        known = sorted({f.lmx_model for f in FAMILIES.values()})
        raise ConversionError(f"config.model.name={model_config.name!r} has no Hugging Face export; known: {known}")
    raise ConversionError("; ".join(problems))
