"""The round trip a user makes: a Hugging Face model and its tokenizer -> `lmx.convert.hf import` -> train with
`lmx.train --config.checkpoint.init_from=...` -> `lmx.convert.hf export` -> transformers' from_pretrained, which
generates and scores in PyTorch, reading text as lmx does.

The converter runs through its CLI entry point in process (hf.main, what `python -m lmx.convert.hf` calls); lmx.train
runs as the real CLI. T5 trains between import and export (span corruption); GPT-2 goes import -> export, so the
suite holds one CLI training run here: `init_from` reads any family's checkpoint by the same code (lmx.checkpoint),
and the README's GPT-2/BERT round trip with 20 training steps was run by hand.
"""

import json
import subprocess
import sys
from pydoc_data import topics

import hf_tiny
import numpy as np
from lmx_cli import env_for

from lmx.convert import hf, lmx_files
from lmx.data import byte_bpe, spm_vocab
from lmx.data import vocab as vocab_lib

TEXT = "The quick brown fox jumps over the lazy dog.  Tabs\tand runs   of spaces; accents: café, naïve."
# transformers 5's T5Tokenizer ignores SentencePiece's byte fallback (rare characters become <unk>, where lmx and
# sentencepiece spell their bytes), so the T5 check reads ASCII only.
ASCII_TEXT = "The quick brown fox jumps over the lazy dog. Tabs and runs of spaces; x = f(y) + 1."


def corpus_lines() -> list[str]:
    return [line for name in sorted(topics.topics)[:60] for line in topics.topics[name].splitlines() if line.strip()]


def lmx_ids(flags: list[str], text: str) -> list[int]:
    """`text` encoded by the vocabulary the imported-tokenizer flags describe, as lmx's data pipeline reads it."""
    config = hf_tiny.lmx_config("gpt2")  # any config: only config.data is read
    for flag in flags:
        field, value = flag.removeprefix("--config.data.").split("=", 1)
        *parents, leaf = field.split(".")
        node = config.data
        for key in parents:
            node = node[key]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"
    return list(vocab_lib.get_vocabulary(config.data).encode(text))


def cli(capsys, *args) -> str:
    assert hf.main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def tokenizer_flags(printed: str) -> list[str]:
    line = next(line for line in printed.splitlines() if line.startswith("Its tokenizer: "))
    return line.removeprefix("Its tokenizer: ").split()


def test_t5_imports_trains_and_exports(tmp_path, capsys, torch, transformers):
    # A T5.1.1 with a SentencePiece vocabulary of its own, as a Hub directory holds it.
    hf_dir = tmp_path / "hf"
    (hf_dir).mkdir()
    (hf_dir / "spiece.model").write_bytes(spm_vocab.train(corpus_lines(), 400, "unigram", seed=0))
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 100}))
    original_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    flags = [*hf_tiny.config_flags("t5.1.1", scan_layers=False), "--config.model.vocab_size=512"]
    model = transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            vocab_size=512,
            d_model=hf_tiny.EMBED,
            d_kv=hf_tiny.HEAD_DIM,
            d_ff=hf_tiny.MLP,
            num_layers=hf_tiny.LAYERS,
            num_heads=hf_tiny.HEADS,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            dropout_rate=0.0,
            decoder_start_token_id=0,
        )
    )
    model.lm_head.weight = torch.nn.Parameter(0.05 * torch.randn_like(model.lm_head.weight))
    model.save_pretrained(hf_dir)

    printed = cli(capsys, "import", f"--hf_dir={hf_dir}", *flags, f"--out={tmp_path / 'lmx'}")
    step0 = tmp_path / "lmx" / "checkpoints" / "0"
    vocab_flags = tokenizer_flags(printed)
    assert "--config.data.vocab_kind=unigram" in vocab_flags and "--config.data.extra_ids=100" in vocab_flags
    # The imported tokenizer reads text as the checkpoint's own did (HF appends </s>).
    assert lmx_ids(vocab_flags, ASCII_TEXT) == original_tokenizer(ASCII_TEXT).input_ids[:-1]

    workdir = tmp_path / "run"
    train = [
        sys.executable,
        "-m",
        "lmx.train",
        *flags,
        *vocab_flags,
        f"--workdir={workdir}",
        f"--config.checkpoint.init_from={step0}",
        "--config.data.inputs_length=32",
        "--config.data.targets_length=8",
        "--config.data.shuffle_buffer=64",
        "--config.train.steps=3",
        "--config.train.batch_size=4",
        "--config.train.eval_every=0",
        "--config.train.eval_steps=0",
        "--config.train.progress_bar=false",
        "--config.optim.warmup_steps=1",
    ]
    result = subprocess.run(train, cwd=hf_tiny.REPO, env=env_for(tmp_path / "cache", 1), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    trained_step = workdir / "checkpoints" / "3"

    cli(capsys, "export", f"--checkpoint={trained_step}", *flags, *vocab_flags, f"--out={tmp_path / 'export'}")
    exported = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "export").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    assert tokenizer(ASCII_TEXT).input_ids == original_tokenizer(ASCII_TEXT).input_ids

    # Training moved the weights away from the import, and export wrote the trained ones.
    config = hf_tiny.lmx_config("t5.1.1", scan_layers=False)
    config.model.vocab_size = 512
    trained = lmx_files.read_params(str(trained_step), config.model)
    imported = lmx_files.read_params(str(step0), config.model)
    assert not np.array_equal(
        trained["decoder"]["logits_dense"]["kernel"], imported["decoder"]["logits_dense"]["kernel"]
    )
    np.testing.assert_array_equal(
        exported.lm_head.weight.detach().numpy(), trained["decoder"]["logits_dense"]["kernel"].T
    )

    # PyTorch generates from the export and scores text with it.
    inputs = tokenizer([ASCII_TEXT], return_tensors="pt")
    with torch.no_grad():
        generated = exported.generate(**inputs, max_new_tokens=5, do_sample=False)
        loss = exported(**inputs, labels=inputs.input_ids).loss
    assert generated.shape[0] == 1 and 1 < generated.shape[1] <= 6 and np.isfinite(float(loss))


def test_gpt2_imports_and_exports_for_pytorch(tmp_path, capsys, torch, transformers):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    byte_bpe.train(corpus_lines(), str(hf_dir), 300)
    original_tokenizer = transformers.GPT2Tokenizer(str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt"))
    vocab_size = len(json.loads((hf_dir / "vocab.json").read_text()))
    flags = [*hf_tiny.config_flags("gpt2"), f"--config.model.vocab_size={vocab_size}"]
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=hf_tiny.MAX_LENGTH,
            n_embd=hf_tiny.EMBED,
            n_layer=hf_tiny.LAYERS,
            n_head=hf_tiny.HEADS,
            n_inner=hf_tiny.MLP,
            bos_token_id=1,
            eos_token_id=1,
        )
    ).eval()
    model.save_pretrained(hf_dir)

    printed = cli(capsys, "import", f"--hf_dir={hf_dir}", *flags, f"--out={tmp_path / 'lmx'}")
    vocab_flags = tokenizer_flags(printed)
    assert lmx_ids(vocab_flags, TEXT) == original_tokenizer(TEXT).input_ids
    step0 = tmp_path / "lmx" / "checkpoints" / "0"
    cli(capsys, "export", f"--checkpoint={step0}", *flags, *vocab_flags, f"--out={tmp_path / 'export'}")

    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "export").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    assert exported.config.eos_token_id == 1  # <|endoftext|> of the lmx-trained byte-level BPE
    assert tokenizer(TEXT).input_ids == original_tokenizer(TEXT).input_ids
    prompt = tokenizer(["def f(x):"], return_tensors="pt")
    assert prompt.input_ids.tolist() == [original_tokenizer("def f(x):").input_ids]
    with torch.no_grad():
        ours = exported.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        theirs = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        text = tokenizer([TEXT], return_tensors="pt", truncation=True, max_length=hf_tiny.MAX_LENGTH)
        scores = [m(**text, labels=text.input_ids).loss for m in (exported, model)]
    assert ours.tolist() == theirs.tolist()
    assert float(scores[0]) == float(scores[1])
