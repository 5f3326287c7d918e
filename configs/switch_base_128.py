"""Switch-Base with 128 experts (Fedus et al. 2021, the "Switch-Base" of Table 9), shaped like the released
google/switch-base-128 so it imports: configs/switch_base_8.py with 128 experts in each of its 12 Switch layers.

  Parameters: 7,415,217,408 (tests/models/moe_configs_test.py counts them independently and against Hugging Face's
  SwitchTransformersForConditionalGeneration of the released config): 619,339,008 of Switch-Base-8 plus, in each of
  the 12 Switch layers, 120 more experts (120 x 4,718,592) and 120 more router columns (768 x 120).

Command:   python -m lmx.train --config=configs/switch_base_128.py --workdir=/tmp/switch_base_128
Hardware:  sized for a TPU v4-256 / 128xA100 class slice: 7.4B parameters (30 GB in float32, before optimizer
           state) must be split over the mesh's expert axis, e.g. --config.mesh.expert=16 or more.
Wall time: not measured here (CPU-only machine).
Expected:  not measured here. The paper reports Switch-Base-128 reaching T5-Base's quality 7x faster in steps (its
           headline "7x pre-training speedup", Figure 5 / section 3.2).
Recipe and departures: configs/switch_base_8.py's.
Variant:   `configs/switch_base_128.py:debug` keeps the architecture (so still needs tens of GB of memory) but
           shrinks batch, lengths and steps.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug"):
        raise ValueError(f"configs/switch_base_128.py takes no argument or 'debug', not {arg!r}")
    spec = str(pathlib.Path(__file__).with_name("switch_base_8.py")) + (":debug" if arg else "")
    config = config_lib.load_config_file(spec)
    config.model.moe.num_experts = 128
    return config
