"""Mesh construction and its errors; shardings derived from logical axis names."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from lmx import config_lib, optim, sharding


def test_mesh_fills_the_minus_one_axis():
    assert sharding.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2, "expert": 1}, 8) == {
        "data": 2,
        "fsdp": 2,
        "tensor": 2,
        "expert": 1,
    }
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2, "expert": 1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2, "expert": 1}
    assert mesh.devices.size == jax.device_count() == 8


@pytest.mark.parametrize(
    "mesh, match",
    [
        ({"data": 3, "fsdp": 1, "tensor": 1, "expert": 1}, "has 3 devices but 8 are available"),
        ({"data": 3, "fsdp": -1, "tensor": 1, "expert": 1}, "does not divide the 8 devices"),
        ({"data": -1, "fsdp": -1, "tensor": 1, "expert": 1}, "at most one axis may be -1"),
        ({"data": 1, "fsdp": 1, "tensor": 1, "expert": 1, "pipeline": 2}, "unknown axes"),
    ],
)
def test_bad_mesh_is_named(mesh, match):
    with pytest.raises(ValueError, match=match):
        sharding.mesh_shape(mesh, 8)


def test_default_rules_map_logical_axes():
    config = config_lib.base_config()
    rules = sharding.rules_of(config)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2, "expert": 1})
    # The batch is split over every axis that holds different rows: data, fsdp and (for MoE) expert.
    assert sharding.batch_sharding(mesh, rules).spec == P(("data", "fsdp", "expert"), None)
    assert sharding.logical_sharding(mesh, rules, "embed", "mlp").spec == P("fsdp", "tensor")
    assert sharding.logical_sharding(mesh, rules, "vocab", "embed").spec == P("tensor", "fsdp")
    assert sharding.data_parallel_size(mesh, rules) == 4


def test_optimizer_statistics_follow_their_parameters():
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2, "expert": 1})
    params = {"dense": {"kernel": jax.ShapeDtypeStruct((8, 6), "float32")}}
    shardings = {"dense": {"kernel": jax.sharding.NamedSharding(mesh, P("fsdp", "tensor"))}}
    opt_state = (
        {"count": jax.ShapeDtypeStruct((), "int32")},
        {"mu": {"dense": {"kernel": jax.ShapeDtypeStruct((8, 6), "float32")}}},
        {"row": {"dense": {"kernel": jax.ShapeDtypeStruct((8, 1), "float32")}}},  # reduced dims kept as size 1
        {"col": {"dense": {"kernel": jax.ShapeDtypeStruct((1, 6), "float32")}}},
    )
    out = sharding.mirror_shardings(opt_state, params, shardings, mesh)
    assert out[0]["count"].spec == P()
    assert out[1]["mu"]["dense"]["kernel"].spec == P("fsdp", "tensor")
    assert out[2]["row"]["dense"]["kernel"].spec == P("fsdp", None)
    assert out[3]["col"]["dense"]["kernel"].spec == P(None, "tensor")


def test_adafactor_state_of_a_stacked_attention_kernel_is_sharded_like_it():
    # [layers, embed, heads, kv] factors per layer as embed x (heads * kv): row statistics [layers, embed, 1, 1]
    # keep the embed split, column statistics [layers, 1, heads, kv] the heads split.
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2, "expert": 1})
    params = {"query": {"kernel": jax.ShapeDtypeStruct((3, 16, 4, 8), "float32")}}
    shardings = {"query": {"kernel": jax.sharding.NamedSharding(mesh, P(None, "fsdp", "tensor", None))}}
    tx, _ = optim.make_optimizer(
        config_lib.base_config().optim, 10, {"query": {"kernel": P("layers", "embed", "heads", "kv")}}
    )
    state = jax.eval_shape(tx.init, params)
    out = sharding.mirror_shardings(state, params, shardings, mesh)
    (adafactor,) = out
    moments = adafactor.moments["query"]["kernel"]
    assert adafactor.count.spec == P()
    assert moments.row.spec == P(None, "fsdp", None, None)
    assert moments.col.spec == P(None, None, "tensor", None)
