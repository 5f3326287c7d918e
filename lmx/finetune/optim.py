"""Fine-tuning learning rates per parameter: the head's own rate and ELECTRA's layer-wise decay.

`make_optimizer(config, total_steps, param_axes, params)` = lmx.optim's optimizer and schedule (the body's peak rate
is config.optim.learning_rate) followed by a constant per-parameter scale of each update (`learning_rate_scales`):

  classifier_head/...                 head_learning_rate / learning_rate   (head_learning_rate 0: 1, the body's rate)
  encoder layer i of L (0 = lowest)   layer_decay^(L - i)
  embeddings (token, position, type tables, their norm and projection; T5's relative position biases, XLNet's mask
  embedding: what the lowest layer reads)   layer_decay^(L + 1)
  the rest of the body (BERT's pooler, T5's final encoder norm, ...; above the top layer)   1

ELECTRA (Clark et al. 2020, appendix A: "layer-wise learning-rate decay", after Howard & Ruder 2018) fine-tunes with
decay 0.8; each layer below the top learns at `decay` times the rate of the layer above it. Scaling the update is
scaling the learning rate for both optimizers: AdamW's update is lr x (adam direction + weight_decay x param), and
Adafactor's is lr x max(eps2, RMS(param)) x its direction, so the scale multiplies lr and nothing else. Scanned
layers (one parameter [layers, ...]) get a scale per slice of their leading `layers` axis.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmx import optim
from lmx.config_lib import ConfigError
from lmx.models.heads import HEAD

# Parameter paths (as lmx.optim.path_name writes them) of what the lowest layer reads: the embedding tables, their
# norm and projection, T5's relative position biases (computed once, read by every layer), XLNet's mask embedding.
EMBEDDING_PATHS = (
    r"(discriminator/)?embedder/.*",
    r"token_embedder/.*",
    r"encoder/relpos_bias/.*",
    r"mask_embedding",
)
_UNROLLED_LAYER = re.compile(r"(?:discriminator/)?encoder/layers_(\d+)/.*")
_SCANNED_LAYERS = re.compile(r"(?:discriminator/)?encoder/layers/.*")


def _layer_scale(path: str, param: Any, layers: int, decay: float, param_axes: tuple | None) -> Any:
    """The decay factor of one body parameter: a float, or [layers, 1, ...] for a scanned stack."""
    match = _UNROLLED_LAYER.fullmatch(path)
    if match:
        return decay ** (layers - int(match.group(1)))
    if _SCANNED_LAYERS.fullmatch(path):
        axis = list(param_axes).index("layers") if param_axes and "layers" in param_axes else 0
        shape = [1] * len(param.shape)
        shape[axis] = layers
        return (decay ** (layers - np.arange(layers, dtype=np.float64))).reshape(shape).astype(np.float32)
    if any(re.fullmatch(pattern, path) for pattern in EMBEDDING_PATHS):
        return decay ** (layers + 1)
    return 1.0


def learning_rate_scales(params: Any, param_axes: Any, finetune_config, optim_config, layers: int) -> Any:
    """A tree like `params` of each parameter's learning rate / config.optim.learning_rate (module docstring)."""
    head_scale = (finetune_config.head_learning_rate or optim_config.learning_rate) / optim_config.learning_rate
    decay = finetune_config.layer_decay
    axes = {
        optim.path_name(path): tuple(spec)
        for path, spec in jax.tree_util.tree_flatten_with_path(
            param_axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec | tuple)
        )[0]
    }

    def scale(path, param):
        name = optim.path_name(path)
        if name == HEAD or name.startswith(f"{HEAD}/"):
            return head_scale
        return _layer_scale(name, param, layers, decay, axes.get(name)) if decay != 1.0 else 1.0

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_updates(scales: Any) -> optax.GradientTransformation:
    """Multiplies each update by its constant scale (a float or an array broadcasting against the parameter)."""

    def update(updates, state, params=None):
        del params
        scaled = jax.tree.map(lambda u, s: (u * jnp.asarray(s, u.dtype)) if not _is_one(s) else u, updates, scales)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _is_one(scale) -> bool:
    return isinstance(scale, float) and scale == 1.0


def check_layer_decay(config) -> None:
    """ConfigError for a decay that has no layers to decay over: ALBERT's shared block, a text-to-text model."""
    if config.finetune.layer_decay == 1.0:
        return
    if config.model.share_layers:
        raise ConfigError(
            f"config.finetune.layer_decay={config.finetune.layer_decay}: ALBERT's shared layers (config.model."
            "share_layers=True) are one block at every depth, so their rates cannot decay by layer; set 1.0"
        )
    if config.finetune.format != "classify":
        raise ConfigError(
            f"config.finetune.layer_decay={config.finetune.layer_decay} decays an encoder's layers under a "
            f"classification head; config.finetune.format={config.finetune.format!r} has none: set 1.0"
        )


def make_optimizer(config, total_steps: int, param_axes: Any, params: Any):
    """(optax transformation, schedule of the body's learning rate) of a fine-tuning run; `params` may be abstract
    (only their paths and shapes are read)."""
    tx, schedule = optim.make_optimizer(config.optim, total_steps, param_axes)
    f = config.finetune
    if f.layer_decay == 1.0 and f.head_learning_rate in (0.0, config.optim.learning_rate):
        return tx, schedule
    check_layer_decay(config)
    scales = learning_rate_scales(params, param_axes, f, config.optim, config.model.num_encoder_layers)
    return optax.chain(tx, scale_updates(scales)), schedule
