"""RoBERTa-base (Liu et al. 2019): BERT-base's architecture (configs/bert_base.py) pretrained without next-sentence
prediction — masked-LM on FULL-SENTENCES rows that cross document boundaries, with masks drawn afresh each time a
row is seen (dynamic masking, section 4.1) — with a byte-level BPE vocabulary of 50K and RoBERTa's large-batch
recipe.

Architecture: BERT-base (12 post-LayerNorm layers, hidden 768, 12 heads, MLP 3072, exact-erf GELU, MLM head tied to
the token embedding) with GPT-2's byte-level BPE of 50,265 ids (section 4.4) and a single token type (RoBERTa has
no segment B). Hugging Face's roberta-base stores 514 position rows (2 offset by its padding index); lmx counts
positions from 0, so 512. Parameters: 125,288,027 = Hugging Face's RobertaForMaskedLM of roberta-base (124,697,433)
less 2 position rows (1,536) plus BERT's pooler and pair head (592,130), which lmx's encoder-only model always has and
RoBERTa leaves untrained.

Command:   python -m lmx.train --config=configs/roberta_base.py --workdir=/tmp/roberta_base
Hardware:  the paper trained on 1,024 V100s for a day; sized here for a TPU v4-128 class slice (batch 8K x 512).
Wall time: not measured here (CPU-only machine).
Expected:  not measured here (table 9 reports held-out MLM perplexity 3.68 after 500K steps on 160GB of text).
Recipe:    appendix table 9 (BASE): Adam b1 0.9, b2 0.98 (stable at large batches), eps 1e-6, peak lr 6e-4, linear
           warmup over 24,000 steps then linear decay to 0, weight decay 0.01, dropout 0.1, no gradient clipping,
           batch 8K of 512 tokens, 500K steps. No z-loss.
Data:      objective mlm (FULL-SENTENCES, dynamic masking, 15% selected: 80% [MASK], 10% random, 10% unchanged);
           C4 by default (RoBERTa: BookCorpus, Wikipedia, CC-News, OpenWebText, Stories); the vocabulary is a
           byte-level BPE (config.data.vocab_path: a vocab.json + merges.txt directory with <mask> and <cls>, or
           trained on the corpus).
Variant:   `configs/roberta_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug"):
        raise ValueError(f"configs/roberta_base.py takes no argument or 'debug', not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("bert_base.py")))
    m = config.model
    m.vocab_size = 50265  # RoBERTa's byte-level BPE
    m.type_vocab_size = 1  # one segment per row

    d = config.data
    d.objective, d.pack = "mlm", True  # FULL-SENTENCES rows, dynamic masking, no NSP
    d.vocab_kind, d.vocab_pieces, d.extra_ids = "byte_bpe", 50265, 0

    t = config.train
    t.steps, t.batch_size = 500_000, 8192

    o = config.optim
    o.learning_rate, o.b2, o.eps, o.warmup_steps, o.clip_norm = 6e-4, 0.98, 1e-6, 24_000, 0.0
    if arg == "debug":
        config_lib.apply_debug(config)
    return config
