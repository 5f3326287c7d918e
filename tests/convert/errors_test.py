"""Bad and hostile input to `python -m lmx.convert.hf`: one line `lmx.convert.hf: error: ...`, exit 2, --out never
created (the CLI's main, in process)."""

import json
import os
import shutil
import subprocess
import sys

import hf_tiny
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lmx.convert import hf, hf_files, lmx_files


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, torch, transformers):
    """A saved tiny random GPT-2 (with nothing else in its directory)."""
    path = tmp_path_factory.mktemp("gpt2") / "hf"
    hf_tiny.hf_model("gpt2", transformers, torch).save_pretrained(path)
    return path


@pytest.fixture
def hf_dir(gpt2_dir, tmp_path):
    """A private copy of the tiny GPT-2 directory for a test to damage."""
    return shutil.copytree(gpt2_dir, tmp_path / "hf")


def import_fails(capsys, hf_dir, out, *flags, family="gpt2") -> str:
    """Runs the import CLI with the tiny `family` config (+ `flags`), checks that it fails with one line and exit 2
    leaving nothing at `out`; returns the line."""
    code = hf.main(["import", f"--hf_dir={hf_dir}", *hf_tiny.config_flags(family), f"--out={out}", *flags])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmx.convert.hf: error: "), err
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith(f".{os.path.basename(out)}.tmp")]
    return lines[0]


def weights(hf_dir):
    return load_file(str(hf_dir / hf_files.SAFETENSORS_FILE))


def rewrite(hf_dir, state):
    save_file(state, str(hf_dir / hf_files.SAFETENSORS_FILE), hf_files.SAFETENSORS_METADATA)


def test_a_good_import_works_and_leaves_nothing_behind(hf_dir, tmp_path, capsys):
    assert hf.main(["import", f"--hf_dir={hf_dir}", *hf_tiny.config_flags("gpt2"), f"--out={tmp_path / 'out'}"]) == 0
    assert "--config.checkpoint.init_from=" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["hf", "out"]


def test_a_pickle_that_runs_code_is_refused_unrun(hf_dir, tmp_path, capsys, torch):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    os.remove(hf_dir / hf_files.SAFETENSORS_FILE)
    torch.save({"transformer.wte.weight": torch.zeros(2), "x": Payload()}, hf_dir / hf_files.PICKLE_FILE)
    line = import_fails(capsys, hf_dir, tmp_path / "out")
    assert "pytorch_model.bin is not a plain PyTorch state dict" in line and "GLOBAL" in line
    assert not marker.exists()


def test_a_pickle_of_something_else_than_tensors_is_refused(hf_dir, tmp_path, capsys, torch):
    os.remove(hf_dir / hf_files.SAFETENSORS_FILE)
    torch.save({"transformer.wte.weight": torch.zeros(2), "step": 3}, hf_dir / hf_files.PICKLE_FILE)
    assert "not a flat {name: tensor} state dict" in import_fails(capsys, hf_dir, tmp_path / "out")


def test_a_plain_pickled_state_dict_is_read(hf_dir, tmp_path, capsys, torch):
    state = {k: torch.from_numpy(v) for k, v in weights(hf_dir).items()}
    os.remove(hf_dir / hf_files.SAFETENSORS_FILE)
    torch.save(state, hf_dir / hf_files.PICKLE_FILE)
    assert hf.main(["import", f"--hf_dir={hf_dir}", *hf_tiny.config_flags("gpt2"), f"--out={tmp_path / 'out'}"]) == 0


@pytest.mark.parametrize("keep", [20, -100])
def test_a_truncated_safetensors_file(hf_dir, tmp_path, capsys, keep):
    data = (hf_dir / hf_files.SAFETENSORS_FILE).read_bytes()
    (hf_dir / hf_files.SAFETENSORS_FILE).write_bytes(data[:keep])
    assert "model.safetensors is not a readable safetensors file" in import_fails(capsys, hf_dir, tmp_path / "out")


def test_a_config_json_of_another_architecture(hf_dir, tmp_path, capsys):
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    line = import_fails(capsys, hf_dir, tmp_path / "out")
    assert "model_type='llama' (LlamaForCausalLM)" in line and "'gpt2'" in line


def test_a_checkpoint_of_another_family_than_the_config(hf_dir, tmp_path, capsys):
    line = import_fails(capsys, hf_dir, tmp_path / "out", family="bert")
    assert "config.model.name='encoder_only' but gpt2 checkpoints have name='decoder_only'" in line


def test_a_config_field_that_differs_names_both_values(hf_dir, tmp_path, capsys):
    line = import_fails(capsys, hf_dir, tmp_path / "out", "--config.model.mlp_dim=128")
    assert "config.model.mlp_dim=128 but config.json has n_inner=64" in line
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "scale_attn_by_inverse_layer_idx": True}))
    assert "scale_attn_by_inverse_layer_idx=True" in import_fails(capsys, hf_dir, tmp_path / "out")


def test_missing_unexpected_and_misshapen_tensors(hf_dir, tmp_path, capsys):
    state = weights(hf_dir)
    rewrite(hf_dir, {k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.bias"})
    line = import_fails(capsys, hf_dir, tmp_path / "out")
    assert "no tensor transformer.h.1.mlp.c_fc.bias (shape (64,))" in line and "decoder/layers_1/mlp/wi/bias" in line
    rewrite(hf_dir, {**state, "transformer.h.9.attn.c_attn.weight": np.zeros((3, 3), np.float32)})
    assert "unexpected tensor transformer.h.9.attn.c_attn.weight (shape (3, 3))" in import_fails(
        capsys, hf_dir, tmp_path / "out"
    )
    rewrite(hf_dir, {**state, "transformer.h.0.attn.c_attn.weight": np.zeros((32, 48), np.float32)})
    line = import_fails(capsys, hf_dir, tmp_path / "out")
    assert (
        "tensor transformer.h.0.attn.c_attn.weight has shape (32, 48) in the checkpoint but lmx needs (32, 96)" in line
    )
    rewrite(hf_dir, {**state, "lm_head.weight": state["transformer.wte.weight"] + 1})
    assert "lm_head.weight differs from transformer.wte.weight" in import_fails(capsys, hf_dir, tmp_path / "out")


def test_missing_files(hf_dir, tmp_path, capsys):
    assert "is not a directory" in import_fails(capsys, tmp_path / "nowhere", tmp_path / "out")
    os.remove(hf_dir / hf_files.SAFETENSORS_FILE)
    assert "has no weights lmx reads" in import_fails(capsys, hf_dir, tmp_path / "out")
    (hf_dir / "config.json").write_text("{not json")
    assert "config.json is not valid JSON" in import_fails(capsys, hf_dir, tmp_path / "out")
    os.remove(hf_dir / "config.json")
    assert "config.json does not exist" in import_fails(capsys, hf_dir, tmp_path / "out")


def test_a_shard_index_pointing_outside_the_directory(hf_dir, tmp_path, capsys):
    os.rename(hf_dir / hf_files.SAFETENSORS_FILE, tmp_path / "elsewhere.safetensors")
    index = {"weight_map": {"transformer.wte.weight": "../elsewhere.safetensors"}}
    (hf_dir / hf_files.SAFETENSORS_INDEX).write_text(json.dumps(index))
    assert "is not a file name inside" in import_fails(capsys, hf_dir, tmp_path / "out")


@pytest.mark.parametrize(
    "files,message",
    [
        ({"vocab.json": "[1, 2]", "merges.txt": "#version: 0.2\n"}, "is not a BPE vocab.json"),
        ({"vocab.json": '{"a": 0}', "merges.txt": "a b c\n"}, "is not a BPE merges.txt"),
        ({"vocab.txt": "[PAD]\n\n[UNK]\n"}, "is not a WordPiece vocab.txt"),
        ({"spiece.model": "not a protobuf"}, "spiece.model is not a SentencePiece model"),
        ({"tokenizer.json": '{"model": {"type": "Unigram", "vocab": []}}'}, "holds a 'Unigram' tokenizer model"),
    ],
    ids=["vocab.json", "merges.txt", "vocab.txt", "spiece.model", "tokenizer.json"],
)
def test_a_vocabulary_file_that_is_not_one(hf_dir, tmp_path, capsys, files, message):
    for name, text in files.items():
        (hf_dir / name).write_text(text)
    assert message in import_fails(capsys, hf_dir, tmp_path / "out")


def test_out_must_be_new_or_empty(hf_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = hf.main(["import", f"--hf_dir={hf_dir}", *hf_tiny.config_flags("gpt2"), f"--out={out}"])
    assert code == 2 and "exists and is not an empty directory" in capsys.readouterr().err
    assert os.listdir(out) == ["keep.txt"]


def test_bad_flags_are_one_line(hf_dir, tmp_path, capsys):
    assert "unrecognized arguments: --bogus=1" in import_fails(capsys, hf_dir, tmp_path / "out", "--bogus=1")
    assert "unknown config key config.model.bogus" in import_fails(
        capsys, hf_dir, tmp_path / "out", "--config.model.bogus=1"
    )
    assert hf.main(["import", f"--hf_dir={hf_dir}"]) == 2
    assert "required: --config, --out" in capsys.readouterr().err


def test_export_of_a_missing_or_mismatched_checkpoint(hf_dir, tmp_path, capsys):
    flags = hf_tiny.config_flags("gpt2")
    assert hf.main(["export", f"--checkpoint={tmp_path}/nowhere/checkpoints/0", *flags, f"--out={tmp_path / 'x'}"]) == 2
    assert "is not a checkpoint step directory" in capsys.readouterr().err
    assert hf.main(["import", f"--hf_dir={hf_dir}", *flags, f"--out={tmp_path / 'lmx'}"]) == 0
    step = tmp_path / "lmx" / "checkpoints" / "0"
    code = hf.main(["export", f"--checkpoint={step}", *flags, "--config.model.mlp_dim=128", f"--out={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert code == 2 and "mlp_dim: checkpoint 64 vs config 128" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_the_command_line_prints_only_its_error(hf_dir, tmp_path):
    """`python -m lmx.convert.hf` as a process: TensorFlow's start-up chatter held back, one line on stderr."""
    data = (hf_dir / hf_files.SAFETENSORS_FILE).read_bytes()
    (hf_dir / hf_files.SAFETENSORS_FILE).write_bytes(data[: len(data) // 2])
    command = [sys.executable, "-m", "lmx.convert.hf", "import", f"--hf_dir={hf_dir}", *hf_tiny.config_flags("gpt2")]
    result = subprocess.run([*command, f"--out={tmp_path / 'out'}"], cwd=hf_tiny.REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("lmx.convert.hf: error: ") and "not a readable safetensors file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_config_json_values_of_the_wrong_kind(hf_dir, tmp_path, capsys):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "n_head": 0}))
    assert "config.model.num_heads=4 but config.json has n_head=0" in import_fails(capsys, hf_dir, tmp_path / "out")
    (hf_dir / "config.json").write_text(json.dumps({**config, "activation_function": ["gelu"]}))
    assert "cannot give config.model.mlp_activations" in import_fails(capsys, hf_dir, tmp_path / "out")


def test_older_checkpoints_are_read_as_transformers_reads_them(hf_dir, tmp_path, capsys, torch):
    """GPT-2 as first published: no "transformer." prefix, causal-mask buffers, LayerNorm gamma/beta names."""
    flags = hf_tiny.config_flags("gpt2")
    assert hf.main(["import", f"--hf_dir={hf_dir}", *flags, f"--out={tmp_path / 'new'}"]) == 0
    old = {}
    for name, value in weights(hf_dir).items():
        name = name.removeprefix("transformer.").replace("ln_1.weight", "ln_1.gamma").replace("ln_1.bias", "ln_1.beta")
        old[name] = torch.from_numpy(value)
    old["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    old["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    os.remove(hf_dir / hf_files.SAFETENSORS_FILE)
    torch.save(old, hf_dir / hf_files.PICKLE_FILE)
    assert hf.main(["import", f"--hf_dir={hf_dir}", *flags, f"--out={tmp_path / 'old'}"]) == 0
    config = hf_tiny.lmx_config("gpt2")
    new, old = (lmx_files.read_params(str(tmp_path / d / "checkpoints" / "0"), config.model) for d in ("new", "old"))
    jax.tree.map(np.testing.assert_array_equal, new, old)
