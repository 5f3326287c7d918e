"""Fixtures of the converter tests: each family's random HF model, saved, and imported once per session."""

import dataclasses
import pathlib

import hf_tiny
import pytest

from lmx.convert import hf, lmx_files


@dataclasses.dataclass
class Imported:
    name: str  # hf_tiny.NAMES
    model: object  # the HF PyTorch model
    hf_dir: pathlib.Path  # its save_pretrained directory
    config: object  # the lmx config
    step_dir: str  # the converted checkpoint
    params: dict  # read back from it as config.checkpoint.init_from does


@pytest.fixture(scope="session", params=hf_tiny.NAMES)
def imported(request, tmp_path_factory, torch, transformers) -> Imported:
    """One family's random HF model, saved and imported by the CLI's code path (scanned layout)."""
    name = request.param
    directory = tmp_path_factory.mktemp(name)
    model = hf_tiny.hf_model(name, transformers, torch)
    model.save_pretrained(directory / "hf")
    config = hf_tiny.lmx_config(name)
    done = hf.import_checkpoint(str(directory / "hf"), config, str(directory / "lmx"))
    assert done.initialised == []  # *ForPreTraining checkpoints hold every lmx parameter
    params = lmx_files.read_params(done.step_dir, config.model)
    return Imported(name, model, directory / "hf", config, done.step_dir, params)
