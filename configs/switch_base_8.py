"""Switch-Base with 8 experts (Fedus et al. 2021), shaped like the released google/switch-base-8 so it imports.

Architecture: configs/t5_1_0_base.py (T5.1.0-Base: d_model 768, 12 + 12 layers, 12 heads of 64, ReLU MLP 3072,
output tied to the token embedding with logits rescaled by d_model^-1/2, vocabulary 32,128, dropout 0.1) with a
Switch layer in place of every other MLP: layers 1, 3, ..., 11 of each stack (the released config.json's
encoder_sparse_step = decoder_sparse_step = 2). A Switch layer (section 2): 8 experts, each a ReLU MLP of 3072 like
the dense ones; top-1 routing (section 2.1); a bias-free router computed in float32 with input jitter 1e-2 and its
initialisation scaled by 0.1 (section 2.4); expert capacity ceil(factor x tokens / 8) per sequence (one routing group
per sequence, as the released checkpoints count expert_capacity) with factor 1.25 in training and 2.0 at evaluation;
the load-balancing loss of every Switch layer with alpha = 0.01 (section 2.2, eq. 4); no router z-loss (ST-MoE's,
later). Expert dropout (0.4 in the paper's fine-tuning, section 2.4) is off in pre-training.
  Parameters: 619,339,008 (tests/models/moe_configs_test.py counts them independently and against Hugging Face's
  SwitchTransformersForConditionalGeneration of the released config): 222,903,552 of T5.1.0-Base, plus in each of
  the 12 Switch layers 7 more experts (7 x 4,718,592) and a router (768 x 8).

Command:   python -m lmx.train --config=configs/switch_base_8.py --workdir=/tmp/switch_base_8
Hardware:  sized for a TPU v4-128 / 64xA100 class slice (2^20 tokens per batch, bfloat16); the experts go over the
           mesh's expert axis with --config.mesh.expert=8 (or a divisor of 8), the rest data-parallel.
Wall time: not measured here (CPU-only machine).
Expected:  not measured here. The paper reports Switch-Base-8 reaching T5-Base's quality in a fraction of its steps
           (Figure 5, span corruption on C4).
Recipe:    T5's span corruption on C4 with Adafactor and the inverse-square-root schedule (configs/t5_base.py), at
           the paper's pre-training protocol (section 4): 2^20 tokens per batch (2048 rows of 512) for 550k steps.
Departs:   the paper scales the initialisation of *every* weight by 0.1 (section 2.4); lmx scales the router's only
           (config.model.moe.router_init_scale), the rest is T5's. The paper's Table 9 lists Switch-Base with a
           GEGLU MLP of 2048; the released checkpoints, and this config, have T5.1.0's ReLU MLP of 3072.
Variant:   `configs/switch_base_8.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("t5_1_0_base.py")))
    moe = config.model.moe
    moe.num_experts, moe.moe_every, moe.router = 8, 2, "top1"
    moe.capacity_factor_train, moe.capacity_factor_eval, moe.group_size = 1.25, 2.0, 0
    moe.jitter_eps, moe.router_init_scale, moe.expert_dropout_rate = 0.01, 0.1, 0.0
    moe.aux_loss_weight, moe.z_loss_weight = 0.01, 0.0
    config.train.batch_size, config.train.steps = 2048, 550_000
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/switch_base_8.py takes no argument or 'debug', not {arg!r}")
    return config
