"""T5.1.1-base trained with T5's prefix language-modelling objective (Raffel et al. 2020, section 3.3.1): a chunk of
text split at a uniformly random point, the prefix fed to the encoder and the continuation predicted by the decoder.

Architecture and recipe: configs/t5_base.py (T5.1.1-base, 248M parameters, Adafactor, rsqrt schedule, C4).
Lengths: chunks of up to 512 tokens (inputs_length = targets_length = 512, so any split fits both stacks), packed.

Command:   python -m lmx.train --config=configs/t5_prefix_lm.py --workdir=/tmp/t5_prefix_lm
Hardware:  as configs/t5_base.py (a TPU v4-32 / 8xA100 class slice).
Wall time: not measured here (CPU-only machine).
Expected:  not measured here. T5's table 4 compares it with span corruption after fine-tuning (GLUE 80.69 vs 83.28).
Variants:  `:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run;
           `:tiny` is configs/t5_tiny.py's model and run with this objective (64-token chunks), for CPU comparisons.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug", "tiny"):
        raise ValueError(f"configs/t5_prefix_lm.py takes no argument, 'debug' or 'tiny', not {arg!r}")
    base = "t5_tiny.py" if arg == "tiny" else "t5_base.py"
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name(base)))
    d = config.data
    d.objective = "prefix_lm"
    d.inputs_length = d.targets_length = 64 if arg == "tiny" else 512
    if arg == "debug":
        config_lib.apply_debug(config)  # 128 encoder / 32 decoder tokens: 32-token chunks
    return config
