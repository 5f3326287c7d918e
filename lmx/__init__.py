"""lmx: JAX/Flax pretraining of Transformer language models on a (data, fsdp, tensor, expert) device mesh.

The model families are the entries of `lmx.models.MODELS`; each config in `configs/` names one and a pretraining
objective (`config.data.objective`). README.md says what has been run and measured.
"""

import os as _os

# TensorFlow only runs the input pipeline; its C++ start-up logs would drown the training output. Must be set
# before tensorflow is first imported, hence here. An explicit setting in the environment wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
