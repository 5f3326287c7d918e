"""The files of a Hugging Face model directory: config.json and the weights, read defensively; safetensors written.

Weights are read from, in this order: model.safetensors, model.safetensors.index.json (shards), pytorch_model.bin,
pytorch_model.bin.index.json. A .bin file is a pickle: it is loaded only with `torch.load(..., weights_only=True)`,
which refuses every object but tensors and plain containers, and its result must be a flat {name: tensor} dict.
Shard names from an index must be plain file names inside the directory. Anything unreadable is one ConversionError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmx.convert import ConversionError

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
# safetensors requires the producing framework in the header's metadata; transformers refuses files without it.
SAFETENSORS_METADATA = {"format": "pt"}


def read_json(path: str, what: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConversionError(f"{path} does not exist: {what}")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e}); {what}") from e
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds a JSON {type(value).__name__}, not an object; {what}")
    return value


def read_config(hf_dir: str) -> dict[str, Any]:
    """config.json of a Hugging Face model directory."""
    if not os.path.isdir(hf_dir):
        raise ConversionError(f"--hf_dir={hf_dir} is not a directory; pass a Hugging Face model directory")
    return read_json(os.path.join(hf_dir, CONFIG_FILE), "a Hugging Face model directory has its config.json")


def read_weights(hf_dir: str) -> dict[str, np.ndarray]:
    """{tensor name: float array} of the checkpoint in `hf_dir` (see the module docstring for the files tried)."""
    for name, reader in (
        (SAFETENSORS_FILE, _read_safetensors),
        (SAFETENSORS_INDEX, lambda p: _read_index(p, _read_safetensors)),
        (PICKLE_FILE, _read_pickle),
        (PICKLE_INDEX, lambda p: _read_index(p, _read_pickle)),
    ):
        path = os.path.join(hf_dir, name)
        if os.path.isfile(path):
            return reader(path)
    present = sorted(os.listdir(hf_dir))
    raise ConversionError(
        f"{hf_dir} has no weights lmx reads ({SAFETENSORS_FILE}, {PICKLE_FILE} or their sharded index); it holds "
        f"{present[:10]}; save the model with `save_pretrained` (safetensors)"
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        # The "flax" reader understands bfloat16 (numpy's does not); arrays are converted to numpy right away.
        with safe_open(path, framework="flax") as f:
            return {name: np.asarray(f.get_tensor(name)) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{path} is not a readable safetensors file ({first}); save or download it again") from e


def _read_pickle(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ConversionError(
            f"reading {path} needs torch (pip install torch), or save the model as {SAFETENSORS_FILE}"
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError, EOFError...: all mean "not a plain state dict"
        raise ConversionError(
            f"{path} is not a plain PyTorch state dict: torch.load(weights_only=True) refused it ({_reason(e)}); "
            f"lmx unpickles nothing else: save the model as {SAFETENSORS_FILE}"
        ) from e
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConversionError(
            f"{path} holds a {type(state).__name__}, not a flat {{name: tensor}} state dict; save the model with "
            "`save_pretrained`"
        )
    return {name: tensor.detach().to(torch.float32).numpy() for name, tensor in state.items()}


def _reason(e: Exception) -> str:
    """The line of torch's refusal that says what was refused (not its advice to retry with weights_only=False)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line]
    return f"{type(e).__name__}: {(named or lines or ['(no message)'])[0][:200]}"


def _read_index(path: str, reader) -> dict[str, np.ndarray]:
    index = read_json(path, "a sharded checkpoint's index maps each tensor to its shard")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ConversionError(f"{path} has no weight_map of tensor names to shard files")
    directory, state = os.path.dirname(path), {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in (".", ".."):
            raise ConversionError(f"{path} names shard {shard!r}, which is not a file name inside {directory}")
        state.update(reader(os.path.join(directory, shard)))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ConversionError(f"{path} maps {missing[0]} to a shard that does not hold it")
    return state


def write_safetensors(state: Mapping[str, np.ndarray], path: str) -> None:
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(value) for name, value in state.items()}, path, SAFETENSORS_METADATA)


def write_json(value: Mapping[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
