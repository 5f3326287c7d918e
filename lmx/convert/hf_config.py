"""config.json of a Hugging Face model <-> `config.model` of lmx, field by field: the table mechanism (the tables,
one per family, are in lmx.convert.config_tables).

A table row ties one lmx model field to the config.json key(s) that determine it:
  same       the value is the same on both sides (d_model <-> embed_dim);
  mapped     a named choice spelled differently (HF "gelu_new" <-> lmx ("gelu",));
  derived    lmx's value follows from other keys (GPT-2 has no head_dim: it is n_embd / n_head);
  fixed      the family implies the lmx value (GPT-2 is pre-norm LayerNorm with biases); no key;
  requires   an HF option lmx does not implement must have its plain value (GPT-2's scale_attn_by_inverse_layer_idx).
Keys config.json leaves out take the default of transformers' config class (each table's `defaults`). Runtime
settings (dropout, token ids, caching) are not architecture and are not checked.

`check(table, hf, model_config)` raises on the first row that does not hold, naming both values;
`to_hf(table, model_config)` writes the keys back and checks the result against the table, so an lmx config that no
Hugging Face model of the family can express is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from lmx.convert import ConversionError

_NONE = object()  # "no such key / value"


@dataclasses.dataclass(frozen=True)
class Row:
    kind: str  # same | mapped | derived | fixed | requires
    lmx: str | None  # config.model field ("moe.num_experts" when nested); None for `requires`
    hf: str | None  # config.json key; None for `derived` and `fixed`
    to_lmx: Callable[[Any, Mapping[str, Any]], Any] = lambda v, _: v  # (HF value, whole HF config) -> lmx value
    to_hf: Callable[[Any], Any] | None = lambda v: v  # lmx value -> HF value; None: not written
    why: str = ""  # where a derived, fixed or required value comes from
    value: Any = _NONE  # the value a `requires` key must have


def same(lmx: str, hf: str) -> Row:
    return Row("same", lmx, hf)


def mapped(lmx: str, hf: str, choices: Mapping[str, Any]) -> Row:
    """choices: HF spelling -> lmx value; export writes the first spelling of each lmx value."""
    inverse: dict[Any, str] = {}
    for name, value in choices.items():
        inverse.setdefault(_normal(value), name)

    def to_lmx(v, _):
        if v not in choices:
            raise ConversionError(f"config.json has {hf}={v!r}, which lmx does not implement; known: {list(choices)}")
        return choices[v]

    def to_hf(v):
        if _normal(v) not in inverse:
            raise ConversionError(f"config.model.{lmx}={_normal(v)!r} has no Hugging Face {hf}; known: {choices}")
        return inverse[_normal(v)]

    return Row("mapped", lmx, hf, to_lmx, to_hf)


def derived(lmx: str, rule: Callable[[Mapping[str, Any]], Any], why: str) -> Row:
    return Row("derived", lmx, None, lambda _, c: rule(c), None, why)


def fixed(lmx: str, value: Any, why: str) -> Row:
    return Row("fixed", lmx, None, lambda _, c: value, None, why)


def requires(hf: str, value: Any, why: str) -> Row:
    return Row("requires", None, hf, why=why, value=value)


@dataclasses.dataclass(frozen=True)
class ConfigTable:
    model_type: str  # config.json "model_type"
    defaults: Mapping[str, Any]  # transformers' defaults of the keys the rows read
    rows: tuple[Row, ...]
    dropout_keys: tuple[str, ...] = ()  # written from config.model.dropout_rate on export (not checked on import)
    # Keys export writes that follow from several lmx fields (checked on import by the rows that read them).
    written: Callable[[ml_collections.ConfigDict], dict[str, Any]] | None = None


def _normal(value):
    """Tuples and lists compare equal (config.model holds tuples, JSON lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_normal(v) for v in value)
    return value


def _lmx_value(model_config: ml_collections.ConfigDict, field: str):
    node = model_config
    for key in field.split("."):
        node = node[key]
    return node


def with_defaults(table: ConfigTable, hf: Mapping[str, Any]) -> dict[str, Any]:
    """config.json with transformers' defaults filled in (a key given as null takes its default too)."""
    return {**table.defaults, **{k: v for k, v in hf.items() if v is not None or k not in table.defaults}}


def check(table: ConfigTable, hf: Mapping[str, Any], model_config: ml_collections.ConfigDict) -> None:
    """Raises ConversionError at the first row where config.json and config.model disagree, naming both values."""
    full = with_defaults(table, hf)
    for row in table.rows:
        hf_value = full.get(row.hf, _NONE) if row.hf else None
        if hf_value is _NONE:
            raise ConversionError(f"config.json has no {row.hf!r}, which every {table.model_type} config.json has")
        if row.kind == "requires":
            if _normal(hf_value) != _normal(row.value):
                raise ConversionError(
                    f"config.json has {row.hf}={hf_value!r}: {row.why}; lmx converts only {row.hf}={row.value!r}"
                )
            continue
        try:
            want = _normal(row.to_lmx(hf_value, full))
        except (TypeError, ValueError, ZeroDivisionError, KeyError) as e:  # a config.json value of the wrong kind
            if isinstance(e, ConversionError):
                raise
            source = f"{row.hf}={hf_value!r}" if row.hf else row.why
            raise ConversionError(f"config.json cannot give config.model.{row.lmx} ({source}: {e!r})") from e
        have = _normal(_lmx_value(model_config, row.lmx))
        if want == have:
            continue
        if row.kind == "same":
            theirs = f"config.json has {row.hf}={hf_value!r}"
        elif row.kind == "mapped":
            theirs = f"config.json has {row.hf}={hf_value!r}, which is {row.lmx}={want!r} in lmx"
        elif row.kind == "derived":
            theirs = f"config.json implies {want!r} ({row.why})"
        else:
            theirs = f"{table.model_type} checkpoints have {row.lmx}={want!r} ({row.why})"
        raise ConversionError(
            f"config.model.{row.lmx}={have!r} but {theirs}; set --config.model.{row.lmx}={_flag(want)} or use the "
            "config this checkpoint was made with"
        )


def _flag(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def to_hf(table: ConfigTable, model_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config.json keys of `model_config` (architecture, required values, dropout). Raises ConversionError
    when the lmx config is one that no Hugging Face model of this family can express."""
    hf: dict[str, Any] = {"model_type": table.model_type}
    try:
        for row in table.rows:
            if row.kind == "requires":
                hf[row.hf] = row.value
            elif row.hf and row.to_hf:
                value = row.to_hf(_lmx_value(model_config, row.lmx))
                hf[row.hf] = list(value) if isinstance(value, tuple) else value
        for key in table.dropout_keys:
            hf[key] = model_config.dropout_rate
        if table.written is not None:
            hf.update(table.written(model_config))
        check(table, hf, model_config)
    except ConversionError as e:
        raise ConversionError(f"this config cannot be written as a {table.model_type} checkpoint: {e}") from e
    return hf
