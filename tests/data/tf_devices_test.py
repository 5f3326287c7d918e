"""TensorFlow is told to hide the accelerators before its runtime starts, once, whatever lmx code touches TF first.

On a CPU-only host the hiding itself cannot be observed (there is no GPU to hide), so a spy on
tf.config.set_visible_devices records each call and whether TF's runtime had started by then, in a fresh process.
"""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = """
import tensorflow as tf
from tensorflow.python.eager import context

calls = []
set_visible_devices = tf.config.set_visible_devices


def spy(devices, device_type=None):
    calls.append((device_type, devices, context.context()._context_handle is None))  # None: runtime not started
    return set_visible_devices(devices, device_type)


tf.config.set_visible_devices = spy

from lmx import config_lib
from lmx.data import sources

data = config_lib.base_config().data
data.corpus = "embedded"
next(sources.get_source(data).get_dataset(split="train", shuffle=False).as_numpy_iterator())  # TF ops run
assert context.context()._context_handle is not None
sources.hide_accelerators_from_tf()  # again: nothing more happens
print(calls)
"""


def test_accelerators_are_hidden_from_tf_once_before_its_runtime_starts():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[('GPU', [], True)]"
