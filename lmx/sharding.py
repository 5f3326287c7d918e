"""The device mesh, the logical-axis rules and the shardings of abstract trees.

Modules name logical axes (`embed`, `mlp`, `batch`, ...); `config.sharding.rules` maps them onto the four mesh
axes below. Changing parallelism is a config change: nothing here knows about models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "expert")

Rules = tuple[tuple[str, Any], ...]


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Resolves `config.mesh` (one axis may be -1: the remaining devices) into concrete axis sizes."""
    unknown = sorted(set(mesh_config) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"config.mesh has unknown axes {unknown}; the mesh axes are {list(MESH_AXES)}")
    sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    fill = [axis for axis, size in sizes.items() if size == -1]
    bad = {axis: size for axis, size in sizes.items() if size == 0 or size < -1}
    if bad or len(fill) > 1:
        raise ValueError(f"config.mesh={dict(sizes)}: each axis is a positive size, and at most one axis may be -1")
    known = math.prod(size for size in sizes.values() if size != -1)
    if fill:
        if num_devices % known:
            raise ValueError(
                f"config.mesh={dict(sizes)}: the fixed axes multiply to {known}, which does not divide the "
                f"{num_devices} devices; choose sizes whose product divides {num_devices}"
            )
        sizes[fill[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(
            f"config.mesh={dict(sizes)} has {math.prod(sizes.values())} devices but {num_devices} are available; "
            f"make the product {num_devices} or set one axis to -1"
        )
    return sizes


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over (data, fsdp, tensor, expert), laid out by jax for the physical topology."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_config, len(devices))
    shape = tuple(sizes[axis] for axis in MESH_AXES)
    # Auto axes: the compiler (GSPMD/Shardy) propagates shardings from our annotations.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def rules_of(config) -> Rules:
    """The logical-axis rules of a config as a tuple of (logical name, mesh axes) pairs."""
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in config.sharding.rules)


def mesh_axes_of(logical: str, rules: Rules) -> tuple[str, ...]:
    """The mesh axes a logical axis maps to (first matching rule), as a tuple."""
    for name, axes in rules:
        if name == logical:
            if axes is None:
                return ()
            return (axes,) if isinstance(axes, str) else tuple(axes)
    return ()


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
    """How many ways the batch dimension is split: the product of the mesh axes `batch` maps to."""
    return math.prod(mesh.shape[axis] for axis in mesh_axes_of("batch", rules))


def logical_sharding(mesh: Mesh, rules: Rules, *logical_axes: str | None) -> NamedSharding:
    """The NamedSharding of an array whose dimensions carry these logical names."""
    spec = nn.logical_to_mesh_axes(logical_axes, rules)
    return NamedSharding(mesh, spec)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Sharding of every [batch, length] input array."""
    return logical_sharding(mesh, rules, "batch", "length")


def param_shardings(boxed_params: Any, mesh: Mesh, rules: Rules) -> Any:
    """Shardings of a parameter tree whose leaves are flax `LogicallyPartitioned` boxes (abstract or real)."""
    logical_specs = nn.get_partition_spec(boxed_params)
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def _dict_keys(path) -> tuple[str, ...]:
    return tuple(str(entry.key) for entry in path if isinstance(entry, jax.tree_util.DictKey))


def _spec_for(shape: tuple[int, ...], param_shape: tuple[int, ...], param_spec: PartitionSpec) -> PartitionSpec:
    """The spec of an optimizer leaf that mirrors a parameter: the parameter's spec on every dim the leaf keeps.

    Per-parameter statistics have the parameter's rank; a dim they reduce (Adafactor's factored row and column
    statistics keep reduced dims as size 1) is not split. A leaf of another rank is replicated.
    """
    if len(shape) != len(param_shape):
        return PartitionSpec()
    spec = tuple(param_spec) + (None,) * (len(param_shape) - len(param_spec))
    return PartitionSpec(*(axes if n == full else None for n, full, axes in zip(shape, param_shape, spec, strict=True)))


def mirror_shardings(tree: Any, params: Any, params_sharding: Any, mesh: Mesh) -> Any:
    """Shardings for a tree (an optimizer state) whose sub-trees mirror the parameters.

    Optax states hold per-parameter statistics under the same dict keys as the parameters; each such leaf takes
    its parameter's sharding on the dims it keeps (see _spec_for); everything else (counts, scalars) is replicated.
    """
    by_path = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(params_sharding), strict=True
    ):
        by_path[_dict_keys(path)] = (tuple(leaf.shape), sharding.spec)

    def leaf_sharding(path, leaf):
        keys = _dict_keys(path)
        # Optax states wrap the parameter tree; the parameter path is the longest matching suffix.
        match = next((by_path[keys[i:]] for i in range(len(keys)) if keys[i:] in by_path), None)
        shape = tuple(getattr(leaf, "shape", ()))
        if match is None:
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, _spec_for(shape, *match))

    return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch_from_host(local_batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's rows into global jax.Arrays laid out with `sharding` (no cross-host copy)."""
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value)) for name, value in local_batch.items()
    }
