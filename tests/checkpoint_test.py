"""Checkpoints: a state saved on one mesh restores onto another with identical values and the new layout; the
data position travels with it; a checkpoint of another architecture or a damaged one is refused clearly, and the
diagnosis fits the damage (a missing file names the step and the previous checkpoint; positions of another number of
input shards name the setting)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lmx import checkpoint, config_lib, sharding, step
from lmx.data import pipeline


class CountingIterator:
    """A stand-in data iterator whose position is one integer."""

    def __init__(self, position=0):
        self.position = position

    def save(self, path):
        os.makedirs(path, exist_ok=True)
        with open(f"{path}/position", "w") as f:
            f.write(str(self.position))

    def check_saved(self, path):
        if not os.path.exists(f"{path}/position"):
            raise FileNotFoundError("data/position is missing")

    def restore(self, path):
        with open(f"{path}/position") as f:
            self.position = int(f.read())


def _state(mesh, specs):
    rng = np.random.default_rng(0)
    values = {"kernel": rng.normal(size=(16, 8)).astype(np.float32), "scale": rng.normal(size=(8,)).astype(np.float32)}
    params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in values.items()}
    return step.TrainState(step=jnp.asarray(7, jnp.int32), params=params, opt_state=(params["kernel"] * 2,)), values


def _config():
    config = config_lib.base_config()
    config.checkpoint.async_save = True
    return config


def test_restore_onto_another_mesh(tmp_path):
    config = _config()
    mesh_a = sharding.make_mesh({"data": 8, "fsdp": 1, "tensor": 1, "expert": 1})
    state, values = _state(mesh_a, {"kernel": P("data", None), "scale": P()})
    manager = checkpoint.make_manager(str(tmp_path), config.checkpoint)
    checkpoint.save(manager, 7, state, CountingIterator(123), config)
    manager.wait_until_finished()
    manager.close()

    mesh_b = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2, "expert": 1})
    specs_b = {"kernel": P("fsdp", "tensor"), "scale": P("tensor")}
    shardings_b = step.TrainState(
        step=NamedSharding(mesh_b, P()),
        params={k: NamedSharding(mesh_b, s) for k, s in specs_b.items()},
        opt_state=(NamedSharding(mesh_b, P("tensor", "fsdp")),),
    )
    abstract = jax.eval_shape(lambda: state)
    iterator = CountingIterator()
    manager = checkpoint.make_manager(str(tmp_path), config.checkpoint)
    restored = checkpoint.restore(manager, 7, abstract, shardings_b, iterator)
    manager.close()
    assert iterator.position == 123
    assert int(restored.step) == 7
    for name, value in values.items():
        np.testing.assert_array_equal(np.asarray(restored.params[name]), value)
        assert restored.params[name].sharding.spec == specs_b[name]
    np.testing.assert_array_equal(np.asarray(restored.opt_state[0]), values["kernel"] * 2)
    assert restored.opt_state[0].sharding.spec == P("tensor", "fsdp")


def test_other_architecture_and_damage_are_refused(tmp_path):
    config = _config()
    mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1, "expert": 1})
    state, _ = _state(mesh, {"kernel": P("fsdp", None), "scale": P()})
    manager = checkpoint.make_manager(str(tmp_path), config.checkpoint)
    checkpoint.save(manager, 3, state, CountingIterator(), config)
    manager.wait_until_finished()
    manager.close()
    assert checkpoint.latest_step(str(tmp_path)) == 3

    checkpoint.check_compatible(str(tmp_path), 3, config.model)  # same architecture: fine
    other = config_lib.base_config().model
    other.num_heads = 16
    with pytest.raises(ValueError, match=r"different model \(num_heads: checkpoint 12 vs config 16\)"):
        checkpoint.check_compatible(str(tmp_path), 3, other)

    # Damage every array file of the state: restoring names the step and the way out.
    for path in (tmp_path / "checkpoints" / "3" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":  # OCDBT data files
            path.write_bytes(b"garbage")
    abstract = jax.eval_shape(lambda: state)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    manager = checkpoint.make_manager(str(tmp_path), config.checkpoint)
    with pytest.raises(
        checkpoint.UnreadableCheckpoint, match=r"checkpoints/3 is unreadable .*away to start from step 0"
    ):
        checkpoint.restore(manager, 3, abstract, shardings, CountingIterator())
    manager.close()


def _shard_iterator(shards, mine=None):
    """A real pipeline.DataIterator over `shards` input shards (this process reading `mine`); shard k yields
    {"x": [k * 1000, k * 1000 + 1]}, {"x": [k * 1000 + 2, ...]}, ..."""
    import tensorflow as tf

    mine = range(shards) if mine is None else mine
    datasets = {k: tf.data.Dataset.range(k * 1000, k * 1000 + 100).map(lambda x: {"x": x}).batch(2) for k in mine}
    return pipeline.DataIterator(datasets, frozenset(mine), shards)


def test_data_positions_restore_and_damage_is_told_from_another_input_shards(tmp_path):
    config = _config()
    mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1, "expert": 1})
    state, _ = _state(mesh, {"kernel": P("fsdp", None), "scale": P()})
    abstract, shardings = jax.eval_shape(lambda: state), jax.tree.map(lambda x: x.sharding, state)
    iterator = _shard_iterator(2)
    manager = checkpoint.make_manager(str(tmp_path), config.checkpoint)
    for saved_step in (3, 5):
        next(iterator)
        checkpoint.save(manager, saved_step, state, iterator, config)
        manager.wait_until_finished()
    manager.close()
    steps = tmp_path / "checkpoints"

    def restore(saved_step, data_iterator):
        manager = checkpoint.make_manager(str(tmp_path), config.checkpoint)
        try:
            return checkpoint.restore(manager, saved_step, abstract, shardings, data_iterator)
        finally:
            manager.close()

    fresh = _shard_iterator(2)
    restore(5, fresh)
    np.testing.assert_array_equal(next(fresh)["x"], [4, 5, 1004, 1005])  # two batches were taken before step 5

    # A file missing from an otherwise complete step: damage, named with the way back to step 3.
    (steps / "5" / "data" / "shard_1" / "iterator.index").unlink()
    with pytest.raises(
        checkpoint.UnreadableCheckpoint,
        match=rf"^checkpoint {steps}/5 is damaged: data/shard_1/iterator.index is missing; move {steps}/5 away to "
        r"resume from the previous checkpoint \(step 3\), or use a new --workdir$",
    ):
        restore(5, _shard_iterator(2))

    # Positions of 2 input shards, read by a run of 4: the setting to use, not damage (also for checkpoints written
    # before the shard count was recorded, from the shard directories).
    for recorded in (True, False):
        if not recorded:
            (steps / "3" / "data" / pipeline.SHARDS_FILE).unlink()
        with pytest.raises(
            checkpoint.UnreadableCheckpoint,
            match=rf"^checkpoint {steps}/3 cannot be resumed by this run: its data positions are of 2 input shards, "
            r"this run reads 4 .* --config.data.input_shards=2 ",
        ):
            restore(3, _shard_iterator(4, mine=[0, 1]))

    # The state's OCDBT manifest gone: found from the directory before orbax reads anything.
    (steps / "3" / "state" / "manifest.ocdbt").unlink()
    with pytest.raises(
        checkpoint.UnreadableCheckpoint,
        match=rf"^checkpoint {steps}/3 is damaged: state/manifest.ocdbt is missing; move {steps}/3 away to start "
        "from step 0",
    ):
        checkpoint.check_compatible(str(tmp_path), 3, config.model)
