"""A tiny XLNet (configs/xlnet_base.py's architecture at configs/bert_tiny.py's shape: 2 layers, hidden 128, 2 heads
of 64, MLP 512) trained by permutation language modelling on the embedded corpus on CPU, with a 96-state memory.

Parameters: 710,400 (a 2,176-row token table like bert_tiny's 727,682, holding the 2,000-piece SentencePiece
vocabulary trained on the corpus on first use; XLNet has no position or token-type tables, BERT no memory).
Command:   python -m lmx.train --config=configs/xlnet_tiny.py --workdir=/tmp/xlnet_tiny
Hardware:  two CPU cores, float32; no data download (the corpus ships inside CPython).
Wall time: 59 s in all for 200 steps, measured here on two quiet CPU cores with `--config.train.steps=200
           --config.train.eval_every=100` (a 200-step run, 1 device): 0.12 s/step, 16.9k tokens/s (2,048 tokens per
           step).
Expected:  permutation-LM train loss 7.71 at step 1 (ln 2176 = 7.69) -> 5.99 at step 200; eval loss 6.09 (step 100) ->
           5.97 (step 200) (that 200-step run).
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"configs/xlnet_tiny.py takes no argument, not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("xlnet_base.py")))
    m = config.model
    m.vocab_size = 2176  # holds the 2,000-piece vocabulary; the rows of configs/bert_tiny.py
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 128, 2, 64, 512
    m.num_encoder_layers = 2
    m.mem_len = 96  # 3/4 of a segment, as XLNet-Large's 384 of 512
    m.max_length = 128
    m.dtype = "float32"
    # Two layers: unrolled compiles as fast as scanned and steps faster on CPU (as configs/bert_tiny.py).
    m.scan_layers, m.remat_policy = False, "none"

    d = config.data
    d.corpus = "embedded"
    d.vocab_pieces = 2000
    d.inputs_length = d.targets_length = 128  # 21 predicted tokens per row (K = 6)
    d.stream_window = 16

    t = config.train
    t.steps, t.batch_size = 300, 16
    t.log_every, t.eval_every, t.eval_steps = 25, 100, 4

    o = config.optim
    o.learning_rate, o.warmup_steps = 1e-3, 30

    config.checkpoint.every_steps = 100
    return config
