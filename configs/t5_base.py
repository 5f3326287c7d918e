"""T5.1.1-base (248M parameters) span-corruption pretraining on C4 — the T5 paper's recipe.

Command:   python -m lmx.train --config=configs/t5_base.py --workdir=/tmp/t5_base
Hardware:  sized for a TPU v4-32 / 8xA100 class slice (global batch 128 x 512 tokens, bfloat16).
Wall time: roughly 2-3 days for 524,288 steps on a v4-32 (not measured here; CPU-only machine).
Expected:  span-corruption train loss falling below ~2.0 within the first 10k steps (not measured here).
Data:      TFDS c4/en must be prepared in config.data.tfds_data_dir (`tfds build c4/en`); offline smoke test on CPU:
           --config.data.corpus=embedded --config.data.vocab_path=PATH/t5_spiece.model
           --config.train.steps=2 --config.train.batch_size=8 --config.model.dtype=float32
Variant:   `configs/t5_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()  # the base config *is* T5.1.1-base on C4
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/t5_base.py takes no argument or 'debug', not {arg!r}")
    return config
