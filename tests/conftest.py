"""Test setup: 8 simulated CPU devices (set before jax is imported) and float32 math."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data, the offline corpus for tests; tests that need it are skipped loudly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is missing (tests that need real text read ../shared/data)")
    return SHARED_DATA


def tiny_model_config():
    """A 2+2-layer T5.1.1 with tiny dims (fast on CPU), as the `model` section of the base config."""
    from lmx import config_lib

    config = config_lib.base_config()
    m = config.model
    m.vocab_size, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 128, 32, 4, 8, 64
    m.num_encoder_layers = m.num_decoder_layers = 2
    m.dtype = "float32"
    config.data.inputs_length, config.data.targets_length = 16, 8
    return config


@pytest.fixture
def tiny_config():
    return tiny_model_config()
