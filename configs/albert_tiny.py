"""A tiny ALBERT: configs/bert_tiny.py with ALBERT's two ideas (Lan et al. 2020, section 3.1) — a factorised
embedding of width 32 projected to the hidden size 128, and one block's parameters shared by 4 layers — and the
settings of configs/albert_base.py (tanh GELU, no dropout), trained with masked-LM on the embedded corpus on CPU.

Parameters: 299,490 (bert_tiny's 2,176-row token table, now 32 wide; 128 positions).
Command:   python -m lmx.train --config=configs/albert_tiny.py --workdir=/tmp/albert_tiny
Hardware:  two CPU cores, float32; no data download.
Wall time: 37 minutes measured here on a machine shared with ~8 other jobs (load average 12-16; first step incl.
           compile 102 s, 2.7-3.7 s/step). Alone on two quiet cores, a 200-step run (`--config.train.steps=200
           --config.train.eval_every=100`): 1 min 33 s in all, 0.34 s/step, 12.1k tokens/s, loss 7.68 -> 5.47, eval
           loss 5.79 (step 100) -> 5.51 (step 200).
Expected:  masked-LM train loss 7.68 at step 1 -> 4.94 at step 600; eval loss 5.46 (step 200) -> 5.29 (400) -> 5.23
           (600), eval accuracy on the masked tokens 0.03 -> 0.14 (measured; bert_tiny, 2.4x the parameters, reaches
           4.95).
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"configs/albert_tiny.py takes no argument, not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("bert_tiny.py")))
    m = config.model
    m.embed_proj_dim = 32  # E: the token, position and token-type tables are [*, 32]
    m.share_layers = True
    m.num_encoder_layers = 4
    m.mlp_activations = ("gelu",)  # the released ALBERT code's tanh approximation
    m.dropout_rate = 0.0
    return config
