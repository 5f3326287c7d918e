"""ALBERT-base (Lan et al. 2020): BERT-base (configs/bert_base.py) with ALBERT's two ideas — a factorised embedding
of width 128 projected to the hidden size 768 (section 3.1, "factorized embedding parameterization") and one block's
parameters shared by all 12 layers (section 3.1, "cross-layer parameter sharing", all-shared) — on a SentencePiece
vocabulary of 30,000.

Parameters: 11,813,810 here (= Hugging Face's AlbertForPreTraining of albert-base-v2), of which 11,683,584 are the
embeddings, projection, shared block and pooler (= its AlbertModel) and 130,226 the MLM head (768 -> 128,
LayerNorm, tied output, bias) and the SOP classifier. The paper's table 1 rounds the model to 12M.

Command:   python -m lmx.train --config=configs/albert_base.py --workdir=/tmp/albert_base
Hardware:  the paper trained on Cloud TPU v3 (64 to 512 cores by model size); sized here for a TPU v4-32 / 8xA100
           class slice (global batch 4096 x 512 tokens, bfloat16; raise config.train.microbatches on fewer chips).
Wall time: not measured here (CPU-only machine).
Expected:  not measured here (the paper reports downstream scores after 125k steps, not the MLM loss).
Recipe:    Lan et al. section 4.1: batch 4096, 125,000 steps, 512-token rows, LAMB at lr 0.00176. lmx has no LAMB
           (You et al. 2020), so this config uses AdamW with the large-batch settings RoBERTa trained BERT with
           (Liu et al. 2019, section 3.1 and table 3: batch 8K at lr 1e-3, b2 0.98 for stability at large batches,
           eps 1e-6), warmup 3,125 steps then linear decay (the released run_pretraining.py), weight decay 0.01,
           clipping at 1.0. GELU is the tanh approximation and dropout is 0, as in the released v2 models (ALBERT
           section 4.8 found removing dropout helps MLM). ALBERT trains sentence-order prediction (objective mlm_sop,
           the model's pair_logits head; section 3.1) with n-gram masking of up to 3 words (section 4.1).
Variant:   `configs/albert_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("bert_base.py")))
    m = config.model
    m.vocab_size = 30000  # ALBERT's SentencePiece vocabulary
    m.embed_proj_dim = 128  # E: token, position and token-type tables are [*, 128], projected to 768
    m.share_layers = True  # one block applied 12 times (broadcast through the scan, not stacked)
    m.mlp_activations = ("gelu",)  # the released ALBERT code's gelu is the tanh approximation
    m.dropout_rate = 0.0

    d = config.data
    d.objective, d.mask_units = "mlm_sop", "albert_ngram"  # sentence-order prediction, n-grams of 1-3 words
    d.vocab_kind, d.vocab_pieces = "unigram", 30000  # SentencePiece, 30,000 pieces (section 4.1)

    t = config.train
    t.steps, t.batch_size = 125_000, 4096

    o = config.optim
    o.name, o.learning_rate, o.b1, o.b2, o.eps = "adamw", 1e-3, 0.9, 0.98, 1e-6
    o.warmup_steps = 3125
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/albert_base.py takes no argument or 'debug', not {arg!r}")
    return config
