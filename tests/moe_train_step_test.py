"""The whole train step of a tiny Switch Transformer (configs/switch_tiny.py, shrunk) on 8 simulated devices: with the
experts over the mesh's expert axis it equals the single-device step and moves tokens with all-to-all; the experts'
hidden dimension may also be split over `tensor`."""

import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmx import bench, config_lib, train

REPO = pathlib.Path(__file__).resolve().parent.parent


def switch_config(mesh: dict[str, int]):
    config = config_lib.load_config_file(str(REPO / "configs" / "switch_tiny.py"))
    m = config.model
    m.vocab_size, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 128, 32, 4, 8, 64
    m.dropout_rate, m.moe.jitter_eps = 0.0, 0.0  # no randomness: every layout computes the same numbers
    m.moe.capacity_factor_train = 1.0  # 16 tokens, 8 experts: 2 slots each, so tokens are dropped
    m.moe.min_capacity = 1
    config.data.inputs_length, config.data.targets_length = 16, 8
    config.train.batch_size = 8  # one routing group per row: 8 groups, one per device of the batch axes
    config.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, "expert": 1, **mesh})
    return config


@pytest.fixture(scope="module")
def single_device_step(tmp_path_factory):
    """Initial state, batch, new state and metrics of the step computed on one device, outside any mesh."""
    config = switch_config({"fsdp": -1})
    run = train.setup(config, str(tmp_path_factory.mktemp("single")), with_data=False)
    state = jax.jit(run.init_fn)(run.init_key)
    batch = bench.synthetic_batch(config, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    step = jax.jit(train.jit_train_step(run).__wrapped__)  # the same function, no shardings
    new_state, metrics = step(state, batch, run.dropout_key)
    # Host copies: the sharded steps donate what they are given, which may share buffers with device arrays.
    return jax.device_get((state, batch, new_state, metrics))


@pytest.mark.parametrize("mesh", [{"data": 2, "expert": 4}, {"data": 2, "tensor": 2, "expert": 2}])
def test_expert_parallel_step_equals_single_device_step(mesh, single_device_step, tmp_path):
    config = switch_config(mesh)
    state, batch, want_state, want_metrics = single_device_step
    run = train.setup(config, str(tmp_path / "mesh"), with_data=False)
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        placed = jax.device_put(state, run.state_shardings), jax.device_put(batch, run.batch_sharding)
        compiled = train.jit_train_step(run).lower(*placed, run.dropout_key).compile()
        new_state, metrics = compiled(*placed, run.dropout_key)
    experts = run.state_shardings.params["encoder"]["layers_1"]["mlp"]["experts"]["wi"]["kernel"].spec
    assert tuple(experts) == ("expert", "fsdp", "tensor")  # [experts, embed, mlp]
    # Dispatch and combine move tokens between the devices of the expert axis.
    assert "all-to-all" in compiled.as_text()
    assert float(metrics["moe_drop_fraction"]) > 0
    for name, value in want_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    for path, want in jax.tree_util.tree_leaves_with_path(want_state.params):
        got = new_state.params
        for key in path:
            got = got[key.key]
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
