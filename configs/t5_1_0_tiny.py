"""A tiny T5.1.0 (configs/t5_tiny.py's shapes with T5.1.0's ReLU MLP of 4 x d_model, tied and rescaled output
layer and dropout 0.1; see configs/t5_1_0_base.py) trained with span corruption on the embedded corpus on CPU.

Parameters: 1,197,824.
Command:   python -m lmx.train --config=configs/t5_1_0_tiny.py --workdir=/tmp/t5_1_0_tiny
Hardware:  two CPU cores, float32; no data download.
Wall time: not measured yet.
Expected:  not measured yet.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"configs/t5_1_0_tiny.py takes no argument, not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("t5_tiny.py")))
    m = config.model
    m.mlp_activations, m.mlp_dim = ("relu",), 512
    m.tie_embeddings = True
    m.dropout_rate = 0.1
    return config
