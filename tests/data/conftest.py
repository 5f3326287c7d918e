"""Fixtures of the data tests: a small data config, a private vocabulary cache, the T5 vocabulary."""

import pathlib

import pytest
import seqio

from lmx import config_lib
from lmx.data import sources

sources.hide_accelerators_from_tf()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> pathlib.Path:
    """Every data test gets its own $LMX_CACHE_DIR, so none touches the user's ~/.cache/lmx."""
    path = tmp_path_factory.mktemp("lmx_cache")
    monkeypatch.setenv("LMX_CACHE_DIR", str(path))
    return path


@pytest.fixture
def data_config():
    """The base data config on the embedded corpus at test sizes (inputs 128 -> raw 141, targets 29)."""
    c = config_lib.base_config().data
    c.corpus = "embedded"
    c.vocab_pieces = 1000
    c.inputs_length = 128
    c.targets_length = 32
    c.shuffle_buffer = 64
    return c


@pytest.fixture(scope="session")
def t5_vocab(shared_data) -> seqio.SentencePieceVocabulary:
    """The original T5 vocabulary: 32,000 pieces + 100 sentinels."""
    return seqio.SentencePieceVocabulary(str(shared_data / "spm" / "t5_spiece.model"), extra_ids=100)
