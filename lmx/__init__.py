"""lmx: JAX/Flax language-model pretraining (T5, GPT, BERT/ELECTRA, Switch) on any mesh."""

import os as _os

# TensorFlow only runs the input pipeline; its C++ start-up logs would drown the training output. Must be set
# before tensorflow is first imported, hence here. An explicit setting in the environment wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
