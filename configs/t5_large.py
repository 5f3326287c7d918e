"""T5.1.1-large (783M parameters) span-corruption pretraining on C4.

Command:   python -m lmx.train --config=configs/t5_large.py --workdir=/tmp/t5_large
Hardware:  sized for a TPU v4-64 / 16xA100 class slice; FSDP over all chips (mesh fsdp=-1), bfloat16.
Wall time: roughly 4-5 days for 524,288 steps on a v4-64 (not measured here; CPU-only machine).
Expected:  span-corruption train loss below ~1.9 within the first 10k steps (not measured here).
Data:      TFDS c4/en prepared in config.data.tfds_data_dir; see configs/t5_base.py for an offline smoke test.
Variant:   `configs/t5_large.py:debug` shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 1024, 16, 64, 2816
    m.num_encoder_layers = m.num_decoder_layers = 24
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/t5_large.py takes no argument or 'debug', not {arg!r}")
    return config
