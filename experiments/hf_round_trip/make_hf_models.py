"""Tiny random Hugging Face GPT-2 and BERT, each with a tokenizer of its own, saved as a Hub directory holds them.

    python experiments/hf_round_trip/make_hf_models.py /tmp/rt     # writes /tmp/rt/hf_gpt2 and /tmp/rt/hf_bert

The tokenizers (a 2,000-token byte-level BPE and a 2,000-piece lower-cased WordPiece) are trained by lmx on Tiny
Shakespeare from ../shared/data; the models are transformers' own classes at random init (torch seed 0), shaped like
configs/gpt2_tiny.py and configs/bert_tiny.py. run.sh takes them through import -> 20 training steps -> export.
"""

import json
import pathlib
import sys

import torch
import transformers

from lmx.data import byte_bpe, wordpiece

CORPUS = pathlib.Path(__file__).resolve().parents[2].parent / "shared/data/pretrain/tinyshakespeare/input.txt"


def main(out: pathlib.Path) -> None:
    lines = [line for line in CORPUS.read_text().splitlines() if line.strip()][:20000]
    torch.manual_seed(0)
    gpt2 = out / "hf_gpt2"
    gpt2.mkdir(parents=True, exist_ok=True)
    byte_bpe.train(lines, str(gpt2), 2000)
    vocab = len(json.loads((gpt2 / "vocab.json").read_text()))
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=128, n_embd=128, n_layer=4, n_head=4, n_inner=512, bos_token_id=1, eos_token_id=1
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(gpt2)
    bert = out / "hf_bert"
    bert.mkdir(parents=True, exist_ok=True)
    wordpiece.train(lines, str(bert / "vocab.txt"), 2000, lower_case=True)
    (bert / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    vocab = len((bert / "vocab.txt").read_text().splitlines())
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    transformers.BertForPreTraining(config).save_pretrained(bert)
    print(f"wrote {gpt2} and {bert}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
