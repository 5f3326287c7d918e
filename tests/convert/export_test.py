"""Export: the HF directory `python -m lmx.convert.hf export` writes loads with transformers' from_pretrained without
a word about missing or unused weights, computes what the original HF model computed, and import-then-export gives
back every tensor of the original checkpoint bit for bit."""

import contextlib
import logging

import hf_tiny
import numpy as np
import pytest
from safetensors.numpy import load_file

from lmx.convert import ConversionError, families, hf, hf_files

CLASSES = {
    "t5.1.0": "T5ForConditionalGeneration",
    "t5.1.1": "T5ForConditionalGeneration",
    "gpt2": "GPT2LMHeadModel",
    "bert": "BertForPreTraining",
    "albert": "AlbertForPreTraining",
}
# transformers 5 ties T5's lm_head to its embedding whatever config.json says, and says so when a checkpoint (any
# T5.1.1, from the Hub too) has an lm_head of its own; it then keeps the two apart, as the logits check below shows.
T5_UNTIED_NOTICE = "both are present in the checkpoints with different values, so we will NOT tie them"


@contextlib.contextmanager
def transformers_warnings(transformers):
    """Collects the messages transformers logs at WARNING or above."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = transformers.logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="session")
def exported(imported, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"{imported.name}-export") / "hf"
    hf.export_checkpoint(imported.step_dir, imported.config, str(out))
    return imported, out


def test_import_then_export_is_the_identity(exported):
    imported, out = exported
    original = load_file(str(imported.hf_dir / hf_files.SAFETENSORS_FILE))
    written = load_file(str(out / hf_files.SAFETENSORS_FILE))
    assert sorted(written) == sorted(original)
    for name, value in original.items():
        assert written[name].dtype == value.dtype
        np.testing.assert_array_equal(written[name], value, err_msg=name)


def test_from_pretrained_loads_every_weight_and_computes_the_same(exported, torch, transformers):
    imported, out = exported
    config = hf_files.read_json(str(out / hf_files.CONFIG_FILE), "")
    assert config["architectures"] == [CLASSES[imported.name]]
    model_class = getattr(transformers, CLASSES[imported.name])
    with transformers_warnings(transformers) as records:
        model, info = model_class.from_pretrained(str(out), output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    messages = [r.getMessage() for r in records]
    allowed = (T5_UNTIED_NOTICE,) if imported.name == "t5.1.1" else ()
    assert [m for m in messages if not any(a in m for a in allowed)] == []
    inputs = {"input_ids": torch.from_numpy(hf_tiny.padded_rows([9, 5], 9))}
    inputs["attention_mask"] = (inputs["input_ids"] != 0).long()
    if imported.name.startswith("t5"):
        inputs["decoder_input_ids"] = torch.from_numpy(hf_tiny.padded_rows([6, 6], 6, seed=4))
    with torch.no_grad():
        ours, theirs = model.eval()(**inputs), imported.model(**inputs)
    key = "logits" if imported.name in ("gpt2",) or imported.name.startswith("t5") else "prediction_logits"
    np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())


def test_masked_lm_checkpoints_get_lmx_heads_and_export_as_pretraining(tmp_path, torch, transformers):
    """BertForMaskedLM has no pooler or NSP head: import takes them from lmx's init; export writes the full class."""
    pretraining = hf_tiny.hf_model("bert", transformers, torch)
    masked = transformers.BertForMaskedLM(pretraining.config)
    masked.load_state_dict(pretraining.state_dict(), strict=False)
    masked.save_pretrained(tmp_path / "masked")
    config = hf_tiny.lmx_config("bert", scan_layers=False)
    done = hf.import_checkpoint(str(tmp_path / "masked"), config, str(tmp_path / "lmx"))
    assert done.architecture == "BertForMaskedLM"
    assert sorted(p.split("/")[0] for p in done.initialised) == ["pair_classifier"] * 2 + ["pooler"] * 2
    hf.export_checkpoint(done.step_dir, config, str(tmp_path / "export"))
    original = load_file(str(tmp_path / "masked" / hf_files.SAFETENSORS_FILE))
    written = load_file(str(tmp_path / "export" / hf_files.SAFETENSORS_FILE))
    assert set(written) - set(original) == {
        f"{h}.{p}" for h in ("bert.pooler.dense", "cls.seq_relationship") for p in ("weight", "bias")
    }
    for name, value in original.items():
        np.testing.assert_array_equal(written[name], value, err_msg=name)


def test_configs_without_a_hugging_face_twin_are_refused():
    config = hf_tiny.lmx_config("gpt2")
    config.model.position_embedding = "rotary"
    with pytest.raises(ConversionError, match=r"gpt2 checkpoint: config.model.position_embedding='rotary' but gpt2"):
        families.of_lmx_config(config.model)
