"""GPT-2 medium (355M parameters; Radford et al. 2019): gpt2_small.py with the medium dimensions.

Command:   python -m lmx.train --config=configs/gpt2_medium.py --workdir=/tmp/gpt2_medium
Hardware:  sized for a TPU v4-64 / 16xA100 class slice (global batch 512 x 1024 tokens = 0.5M tokens, bfloat16).
Wall time: 572,205 steps (300B tokens) = 7.3e20 model FLOPs: about 8.5 days on 8xA100 at 40% MFU (not measured
           here; CPU-only machine).
Expected:  not measured here.
Variant:   `configs/gpt2_medium.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.

Architecture: as gpt2_small.py (pre-LayerNorm, GELU, biases, learned positions, tied output, N(0, 0.02) init) with
24 layers, d_model 1024, 16 heads of 64, MLP 4096 (Radford et al. 2019, Table 2, whose "345M" the released
checkpoint corrects to 355M); residual projections start at 0.02 / sqrt(2 x 24).
  Parameters: 354,823,168 = 50257 x 1024 (tokens) + 1024 x 1024 (positions) + 24 x 12,596,224 (layers) + 2048
  (final norm).
Optimiser: gpt2_small.py's (GPT-3's recipe) with GPT-3 Medium's peak learning rate 3e-4 (Brown et al. 2020,
Table 2.1: the same 24 x 1024 shape at 0.5M tokens per batch).
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("gpt2_small.py")))
    m = config.model
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 1024, 16, 64, 4096
    m.num_decoder_layers = 24
    config.optim.learning_rate = 3e-4
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/gpt2_medium.py takes no argument or 'debug', not {arg!r}")
    return config
