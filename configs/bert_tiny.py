"""A tiny BERT (BERT-Tiny's shape from Turc et al. 2019: 2 layers, hidden 128, 2 heads, MLP 512) with every part of
BERT-base's architecture (configs/bert_base.py), trained with masked-LM on the embedded corpus on CPU.

Parameters: 727,682 (a 2,176-row token table, as configs/t5_tiny.py's, holding the 2,000-piece WordPiece vocabulary
trained on the corpus on first use; 128 positions).
Command:   python -m lmx.train --config=configs/bert_tiny.py --workdir=/tmp/bert_tiny
Hardware:  two CPU cores, float32; no data download (the corpus ships inside CPython).
Wall time: 38 minutes measured here on a machine shared with ~8 other jobs (load average 10-16; 6m51s of CPU user
           time, first step incl. compile 63 s, 2.4-3.5 s/step). Alone on two quiet cores, a 200-step run
           (`--config.train.steps=200 --config.train.eval_every=100`): 1 min 39 s in all, 0.36 s/step, 11.3k
           tokens/s, loss 7.72 -> 5.14, eval loss 5.44 (step 100) -> 5.32 (step 200).
Expected:  masked-LM train loss 7.72 at step 1 (ln 2176 = 7.69) -> 4.66 at step 600; eval loss 5.23 (step 200)
           -> 5.00 (400) -> 4.95 (600), eval accuracy on the masked tokens 0.13 -> 0.18 (measured).
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"configs/bert_tiny.py takes no argument, not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("bert_base.py")))
    m = config.model
    m.vocab_size = 2176  # holds the 2,000-piece vocabulary (no sentinels for MLM); the rows of configs/t5_tiny.py
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 128, 2, 64, 512
    m.num_encoder_layers = 2
    m.max_length = 128
    m.dtype = "float32"
    # Two layers: unrolled compiles as fast as scanned and steps faster on CPU (as configs/t5_tiny.py).
    m.scan_layers, m.remat_policy = False, "none"

    d = config.data
    d.objective, d.pack = "mlm", True  # RoBERTa-style MLM (bert_base.py trains mlm_nsp): electra_tiny.py's baseline
    d.corpus = "embedded"
    d.vocab_pieces = 2000
    d.inputs_length = d.targets_length = 128
    d.shuffle_buffer = 2000

    t = config.train
    t.steps, t.batch_size = 600, 32
    t.log_every, t.eval_every, t.eval_steps = 25, 200, 4

    o = config.optim
    o.learning_rate, o.warmup_steps = 1e-3, 60

    config.checkpoint.every_steps = 200
    return config
