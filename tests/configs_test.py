"""Every config in configs/ loads, is locked, and builds at full size with jax.eval_shape (nothing allocated); its
parameter count equals lmx.flops' count from the config's dimensions, and the T5.1.1 ones match the published sizes
(Raffel et al. 2020; T5.1.1 checkpoints: 77M / 248M / 783M). Other families check their published sizes against
independent counts in tests/models/<family>_test.py."""

import functools
import pathlib

import flax.linen as nn
import jax
import pytest

from lmx import config_lib, flops, optim, step
from lmx.data import tasks
from lmx.models import build_model

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
CONFIGS = sorted(str(p) for p in CONFIG_DIR.glob("*.py"))

# Published sizes; the tiny one is computed by hand below.
PUBLISHED = {"t5_small": 77e6, "t5_base": 248e6, "t5_large": 783e6}


def _t5_1_1_count(m) -> int:
    """Independent count: embedding + untied logits + per-layer attention/MLP/norms + relpos tables + final norms."""
    d, inner, ff, vocab = m.embed_dim, m.num_heads * m.head_dim, m.mlp_dim, m.vocab_size
    attention = 4 * d * inner
    mlp = 3 * d * ff  # wi_0, wi_1, wo
    encoder_layer = attention + mlp + 2 * d
    decoder_layer = 2 * attention + mlp + 3 * d
    relpos = 2 * m.relpos_num_buckets * m.num_heads
    return (
        2 * vocab * d
        + m.num_encoder_layers * encoder_layer
        + m.num_decoder_layers * decoder_layer
        + relpos
        + 2 * d  # final norms
    )


def test_all_configs_are_tested():
    assert {pathlib.Path(c).stem for c in CONFIGS} >= {"t5_tiny", "t5_small", "t5_base", "t5_large"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: pathlib.Path(p).stem)
def test_config_builds_at_full_size(path):
    config = config_lib.load_config_file(path)
    model = build_model(config.model)
    inputs = step.init_batch(tasks.model_feature_lengths(config.data))
    boxed = jax.eval_shape(lambda key: step.init_params(key, model=model, init_batch=inputs), jax.random.key(0))
    count = sum(x.size for x in jax.tree.leaves(boxed))
    assert count == flops.train_flops_per_step(config)["params"]
    if config.model.name == "encoder_decoder" and tuple(config.model.mlp_activations) == ("gelu", "linear"):
        assert count == _t5_1_1_count(config.model)
    name = pathlib.Path(path).stem
    if name in PUBLISHED:
        assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.01, (name, count)
    # The optimizer state builds too (Adafactor factors the large matrices).
    tx, _ = optim.make_optimizer(config.optim, config.train.steps, nn.get_partition_spec(boxed))
    state = jax.eval_shape(functools.partial(step.init_state, model=model, tx=tx, init_batch=inputs), jax.random.key(0))
    assert jax.tree.leaves(state.params)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: pathlib.Path(p).stem)
def test_config_is_locked(path):
    config = config_lib.load_config_file(path)
    config_lib.lock(config)
    with pytest.raises(AttributeError):
        config.train.stepz = 3


def test_debug_variants_shrink_the_run():
    config = config_lib.load_config_file(f"{CONFIG_DIR}/t5_base.py:debug")
    assert config.model.embed_dim == 768 and config.data.corpus == "embedded" and config.train.batch_size == 8
    with pytest.raises(ValueError, match="takes no argument or 'debug'"):
        config_lib.load_config_file(f"{CONFIG_DIR}/t5_base.py:huge")


def test_override_checking_names_valid_keys():
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key config.optim.lr .*'learning_rate'"):
        config_lib.check_overrides([f"--config={CONFIGS[0]}", "--config.optim.lr=3"])
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key config.modle"):
        config_lib.check_overrides([f"--config={CONFIGS[0]}", "--config.modle.embed_dim=3"])
    config_lib.check_overrides([f"--config={CONFIGS[0]}", "--config.optim.learning_rate=3"])
