"""T5.1.1-small (77M parameters) span-corruption pretraining on C4.

Command:   python -m lmx.train --config=configs/t5_small.py --workdir=/tmp/t5_small
Hardware:  sized for a TPU v3-8 / single A100 (global batch 128 x 512 tokens, bfloat16).
Wall time: roughly 1 day for 524,288 steps on a v3-8 (not measured here; CPU-only machine).
Expected:  span-corruption train loss below ~2.5 within the first 10k steps (not measured here).
Data:      TFDS c4/en prepared in config.data.tfds_data_dir; see configs/t5_base.py for an offline smoke test.
Variant:   `configs/t5_small.py:debug` shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 512, 6, 64, 1024
    m.num_encoder_layers = m.num_decoder_layers = 8
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/t5_small.py takes no argument or 'debug', not {arg!r}")
    return config
