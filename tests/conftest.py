"""Test setup: 8 simulated CPU devices (set before jax is imported) and float32 math.

No silent skips in CI: a test that needs ../shared/data, torch or transformers takes the `shared_data`, `torch` or
`transformers` fixture. Locally a missing one skips the test, loudly (the reason starts with MISSING and the run
ends with a count of such skips); when the environment variable CI is set (CI always has them) it fails the test.
"""

import os

# Tests compile far more than they run: XLA:CPU without LLVM's optimisation passes compiles their tiny models ~1.5x
# faster (the same IEEE float32 arithmetic; only speed differs). CLI runs of the tests inherit these flags
# (lmx_cli.xla_flags); `make train` and lmx.bench outside tests keep XLA's defaults.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS, "--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import importlib  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


# Set in CI (GitHub Actions, GitLab, ... set CI=true); "", "0" and "false" count as unset.
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
MISSING = "MISSING"


def missing(what: str) -> None:
    """A test cannot run for want of `what`: fails it under CI, skips it loudly elsewhere."""
    if IN_CI:
        pytest.fail(f"{what}, and CI is set: CI must have ../shared/data, torch and transformers", pytrace=False)
    pytest.skip(f"{MISSING}: {what}")


def requires(module: str):
    """The imported module, or (see `missing`) a failure under CI / a loud skip locally; replaces importorskip."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing(f"cannot import {module} ({e})")


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data, the offline corpus for tests (a failure under CI, a loud skip elsewhere when missing)."""
    if not SHARED_DATA.is_dir():
        missing(f"{SHARED_DATA} does not exist (tests that need real text read ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def torch():
    return requires("torch")


@pytest.fixture(scope="session")
def transformers():
    return requires("transformers")


@pytest.fixture(scope="session")
def matplotlib():
    return requires("matplotlib")  # experiments/' plots (setup.py's runtime dependencies)


def pytest_terminal_summary(terminalreporter):
    """Says at the end of the run how many tests did not run for want of data or packages."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MISSING in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} tests skipped for missing data or packages (CI fails them)")
        for report in skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            terminalreporter.write_line(f"{report.nodeid}: {reason}")


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
