"""T5.1.0-base (Raffel et al. 2020), the original T5: the T5.1.1-base shapes of configs/t5_base.py but a ReLU MLP
of 3072 (dense, ReLU, dense: section 2.1 and the base sizes of section 3.1.1), the output layer tied to the token
embedding with the logits rescaled by d_model^-1/2 (Mesh TensorFlow's tied readout), and dropout 0.1 in
pretraining (the paper's baseline regularisation; T5.1.1 turned dropout off in pretraining).

Parameters: 222,903,552 (= Hugging Face's t5-base, the "223M" release; the paper rounds it to "about 220 million").
Command:   python -m lmx.train --config=configs/t5_1_0_base.py --workdir=/tmp/t5_1_0_base
Hardware:  sized for a TPU v4-32 / 8xA100 class slice (global batch 128 x 512 tokens, bfloat16); the paper's
           baseline ran on TPU v3 slices.
Wall time: roughly 2-3 days for 524,288 steps on a v4-32 (not measured here; CPU-only machine).
Expected:  not measured here. Recipe: the paper's baseline (section 3.1.2: 2^19 steps of 128 x 512 tokens of
           span corruption on C4, Adafactor, lr 1/sqrt(max(step, 10^4))), as the base config sets it. The released
           t5-base checkpoint was pretrained longer (section 3.7: 2^20 steps of batch 2048) with the supervised tasks
           mixed in.
Data:      TFDS c4/en prepared in config.data.tfds_data_dir; see configs/t5_base.py for an offline smoke test.
Variant:   `configs/t5_1_0_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()  # T5.1.1-base on C4 with the paper's optimizer and schedule
    m = config.model
    m.mlp_activations, m.mlp_dim = ("relu",), 3072
    m.tie_embeddings = True
    m.dropout_rate = 0.1
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/t5_1_0_base.py takes no argument or 'debug', not {arg!r}")
    return config
