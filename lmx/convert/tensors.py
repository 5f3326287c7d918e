"""Applies a family's tensor table (lmx.convert.mappings): a Hugging Face state dict <-> an lmx parameter tree.

Import (`to_lmx`), in order, stopping at the first problem with one line naming the tensor and both shapes:
  1. Names as transformers reads them: legacy LayerNorm gamma/beta -> weight/bias, the base-model prefix added to
     checkpoints of the bare base model; buffers that are not parameters dropped.
  2. Every table entry (expanded over layers) takes its tensor, or its tied twin when the checkpoint stores only
     that; the HF shape the lmx parameter needs (the inverse transform of lmx's abstract shapes) must match.
  3. A tensor no entry took is unexpected, unless it is a tied alias equal to the tensor it repeats.
  4. Heads the checkpoint's class lacks (BertForMaskedLM has no pooler) come from lmx's own initialisation.
  5. The unrolled tree is stacked into the scanned layout when config.model.scan_layers.
Export (`to_hf`) unstacks and applies the same entries backwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmx.convert import ConversionError
from lmx.convert.families import Family
from lmx.convert.mappings import Transform
from lmx.models import build_model
from lmx.models.transformer import layer_pattern, stack_unrolled_params, unstack_scanned_params

Flat = dict[str, np.ndarray]


def expand(family: Family, model_config: ml_collections.ConfigDict) -> Iterator[tuple[str, tuple[str, ...], Transform]]:
    """(HF name, lmx paths, transform) of every tensor of `model_config`'s model, layers expanded."""
    for e in family.tensors.entries:
        if e.when is not None and not e.when(model_config):
            continue
        if e.layers is None:
            yield e.hf, e.lmx, e.transform
            continue
        count = model_config[e.layers]
        kinds = layer_pattern(model_config, count, causal=False)  # which layers have experts (moe_layers)
        for i in range(count):
            if e.moe_layers is None or kinds[i % len(kinds)].moe == e.moe_layers:
                yield e.hf.format(i=i, e=EXPERT), tuple(p.format(i=i) for p in e.lmx), e.transform


# In an HF name: one tensor per expert (expert_0, expert_1, ...), which the lmx parameter stacks on its leading axis.
EXPERT = "{e}"


def stack_experts(state: Mapping[str, np.ndarray], hf_names, num_experts: int) -> Flat:
    """Import: the experts' tensors of every name with EXPERT -> one [experts, ...] array under that name."""
    out = dict(state)
    for name in hf_names:
        if EXPERT not in name:
            continue
        parts = [name.replace(EXPERT, str(k)) for k in range(num_experts)]
        missing = [p for p in parts if p not in out]
        if len(missing) == num_experts:
            continue  # the table's own check names the absent tensor
        if missing:
            raise ConversionError(
                f"the checkpoint has no tensor {missing[0]}: config.model.moe.num_experts={num_experts} needs "
                f"experts 0..{num_experts - 1} of {name.replace(EXPERT, '*')}"
            )
        shapes = {_shape(out[p]) for p in parts}
        if len(shapes) > 1:
            raise ConversionError(f"the experts of {name.replace(EXPERT, '*')} differ in shape: {sorted(shapes)}")
        out[name] = np.stack([np.asarray(out.pop(p)) for p in parts])
    return out


def split_experts(state: Mapping[str, np.ndarray]) -> Flat:
    """Export: the inverse of stack_experts."""
    out = {}
    for name, value in state.items():
        if EXPERT in name:
            out.update({name.replace(EXPERT, str(k)): np.asarray(v) for k, v in enumerate(value)})
        else:
            out[name] = value
    return out


def _with_layout(model_config: ml_collections.ConfigDict, scan_layers: bool) -> ml_collections.ConfigDict:
    config = model_config.copy_and_resolve_references()
    config.scan_layers = scan_layers
    return config


# Every family reads its own stream from these and ignores the other; parameter shapes do not depend on lengths.
def _init_batch() -> dict[str, jax.Array]:
    ones = jnp.ones((1, 2), jnp.int32)
    return {"encoder_input_tokens": ones, "decoder_input_tokens": ones}


def init_params(model_config: ml_collections.ConfigDict, rng: jax.Array, *, abstract: bool) -> dict:
    """The model's unboxed parameter tree (ShapeDtypeStructs when `abstract`)."""
    model = build_model(model_config)

    def init(key):
        return nn.unbox(model.init({"params": key}, _init_batch(), enable_dropout=False)["params"])

    return jax.eval_shape(init, rng) if abstract else jax.jit(init)(rng)


def flatten(tree) -> dict:
    return {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: Mapping[str, object]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        *parents, name = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[name] = leaf
    return tree


def _shape(x) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _check_table(family: Family, model_config, lmx_paths: set[str]) -> None:
    mapped = {p for _, paths, _ in expand(family, model_config) for p in paths}
    if mapped != lmx_paths:
        missing, extra = sorted(lmx_paths - mapped), sorted(mapped - lmx_paths)
        raise ConversionError(
            f"the {family.model_type} tensor table (lmx/convert/mappings.py) does not fit this lmx model: "
            f"parameters without an entry {missing[:5]}, entries without a parameter {extra[:5]}"
        )


def normalize_names(state: Mapping[str, np.ndarray], family: Family) -> Flat:
    """Step 1: the names transformers would read (see the module docstring)."""
    renamed = {}
    for name, value in state.items():
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
        renamed[name] = value
    prefix = family.tensors.base_prefix
    if prefix and not any(name.startswith(prefix) for name in renamed):
        renamed = {prefix + name: value for name, value in renamed.items()}
    ignored = [re.compile(p) for p in family.tensors.ignored]
    return {n: v for n, v in renamed.items() if not any(p.fullmatch(n) for p in ignored)}


def to_lmx(
    state: Mapping[str, np.ndarray],
    model_config: ml_collections.ConfigDict,
    family: Family,
    architecture: str,
    rng: jax.Array,
) -> tuple[dict, list[str]]:
    """(params in config.model's layout, the lmx paths initialised by lmx because `architecture` lacks them)."""
    state = normalize_names(state, family)
    unrolled = _with_layout(model_config, scan_layers=False)
    state = stack_experts(state, [name for name, _, _ in expand(family, unrolled)], model_config.moe.num_experts)
    abstract = flatten(init_params(unrolled, rng, abstract=True))
    _check_table(family, unrolled, set(abstract))
    lacking = family.architectures[architecture]
    tied = family.tensors.tied
    head_dim = model_config.head_dim

    flat: Flat = {}
    taken: set[str] = set()
    initialised: list[str] = []
    for hf_name, paths, transform in expand(family, unrolled):
        source = hf_name if hf_name in state else tied.get(hf_name)
        if source not in state:
            if any(p.split("/")[0] in lacking for p in paths):
                initialised.extend(paths)
                continue
            want = _shape(jax.eval_shape(lambda *a, t=transform: t.to_hf(*a, head_dim), *(abstract[p] for p in paths)))
            raise ConversionError(
                f"the checkpoint has no tensor {hf_name} (shape {want}), which lmx's {', '.join(paths)} needs"
            )
        value = state[source]
        want = _shape(jax.eval_shape(lambda *a, t=transform: t.to_hf(*a, head_dim), *(abstract[p] for p in paths)))
        if _shape(value) != want:
            lmx_shapes = ", ".join(f"{p} {_shape(abstract[p])}" for p in paths)
            raise ConversionError(
                f"tensor {hf_name} has shape {_shape(value)} in the checkpoint but lmx needs {want} (for {lmx_shapes})"
            )
        taken.add(source)
        for path, array in zip(paths, transform.to_lmx(np.asarray(value, np.float32), head_dim), strict=True):
            flat[path] = np.asarray(array, np.float32)

    for name, value in state.items():
        if name in taken:
            continue
        twin = tied.get(name)
        if twin is None:
            raise ConversionError(
                f"unexpected tensor {name} (shape {_shape(value)}) in the checkpoint: no lmx parameter takes it"
            )
        if twin in state and not np.array_equal(np.asarray(value), np.asarray(state[twin])):
            raise ConversionError(
                f"tensor {name} differs from {twin}, but config.model ties them (tie_embeddings=True); this is an "
                "untied checkpoint: set --config.model.tie_embeddings=false"
            )

    if initialised:
        fresh = flatten(init_params(unrolled, rng, abstract=False))
        flat.update({p: np.asarray(fresh[p]) for p in initialised})
    params = unflatten(flat)
    if model_config.scan_layers:
        params = stack_layers(params, model_config)
    return params, initialised


def stack_layers(params: dict, model_config: ml_collections.ConfigDict) -> dict:
    """Unrolled stacks (encoder/decoder layers_0..) -> the scanned layout, each with its own layer period."""
    out = dict(params)
    for stack, count in (("encoder", model_config.num_encoder_layers), ("decoder", model_config.num_decoder_layers)):
        if stack in params and any(k.startswith("layers_") for k in params[stack]):
            period = len(layer_pattern(model_config, count, causal=stack == "decoder"))
            out[stack] = stack_unrolled_params(params[stack], period)
    return jax.tree.map(np.asarray, out)


def to_hf(params, model_config: ml_collections.ConfigDict, family: Family, *, with_aliases: bool = False) -> Flat:
    """The HF state dict (float32 numpy) of lmx `params` (scanned or unrolled, boxed or not), with only the tensors
    `save_pretrained` writes; with_aliases adds the tied twins a torch `state_dict()` also holds."""
    flat = flatten(jax.tree.map(np.asarray, unstack_scanned_params(params)))
    unrolled = _with_layout(model_config, scan_layers=False)
    _check_table(family, unrolled, set(flat))
    state: Flat = {}
    for hf_name, paths, transform in expand(family, unrolled):
        state[hf_name] = np.asarray(transform.to_hf(*(flat[p] for p in paths), model_config.head_dim), np.float32)
    if with_aliases:
        for alias, source in family.tensors.tied.items():
            state.setdefault(alias, state[source])
    return split_experts(state)
