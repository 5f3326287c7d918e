"""GPT-2 small (configs/gpt2_small.py) trained as a prefix language model (Raffel et al. 2020, section 3.2.1, the
"prefix LM" architecture; the objective of section 3.3.1): each 1,024-token row holds a chunk split at a uniformly
random point; attention is bidirectional over the prefix (decoder_causal_attention) and causal after it, and the
loss covers only the continuation.

Architecture and recipe: configs/gpt2_small.py (124M parameters, AdamW, cosine schedule, C4).
Row layout: prefix, EOS, continuation, EOS in one decoder row of targets_length = 1024 (chunks of 1,022 tokens).

Command:   python -m lmx.train --config=configs/gpt2_prefix_lm.py --workdir=/tmp/gpt2_prefix_lm
Hardware:  as configs/gpt2_small.py.
Wall time: not measured here (CPU-only machine).
Expected:  not measured here.
Variants:  `:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run;
           `:tiny` is configs/gpt2_tiny.py's model and run with this objective (128-token rows), for CPU comparisons.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug", "tiny"):
        raise ValueError(f"configs/gpt2_prefix_lm.py takes no argument, 'debug' or 'tiny', not {arg!r}")
    base = "gpt2_tiny.py" if arg == "tiny" else "gpt2_small.py"
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name(base)))
    config.data.objective = "decoder_prefix_lm"
    if arg == "debug":
        config_lib.apply_debug(config)  # 32-token rows
    return config
