"""A tiny Switch Transformer (switch_base_8.py's Switch layers on t5_1_0_tiny.py) trained on the embedded corpus.

Architecture: t5_1_0_tiny.py's (2 + 2 layers, d_model 128, 4 heads of 32, ReLU MLP 512, tied and rescaled output,
dropout 0.1) with layer 1 of each stack a Switch layer of 8 experts (each a ReLU MLP of 512): top-1 routing,
capacity factor 1.25 in training and 2.0 at evaluation per sequence, float32 router with input jitter 1e-2 and init
scale 0.1, load-balancing loss 0.01 (see switch_base_8.py).
  Parameters: 3,034,880 = 1,197,824 of t5_1_0_tiny.py + 2 x (7 x 131,072 + 128 x 8); a token touches 1,199,872.
  Dense twin (BENCHMARKS.md): --config.model.moe.num_experts=0 (t5_1_0_tiny.py: top-1 keeps the active FLOPs).

Command:   python -m lmx.train --config=configs/switch_tiny.py --workdir=/tmp/switch_tiny
Hardware:  two CPU cores, float32; no data download (the corpus ships inside CPython, the vocabulary is trained on
           first use in about a second and cached).
Wall time: 2 min 9 s in all for 200 steps, measured here on two quiet CPU cores with `--config.train.steps=200
           --config.train.eval_every=100` (a 200-step run, 1 device): 0.42 s/step, 12.1k tokens/s; BENCHMARKS.md has the
           step time against the dense twin.
Expected:  span-corruption train loss 8.51 at step 1 -> 5.23 at step 200; eval loss 5.23 (step 100) -> 5.08 (step 200);
           11% of tokens over capacity at step 200; the MoE metrics (train/moe_aux_loss, moe_z_loss, moe_drop_fraction,
           moe_expert_load_max_over_mean, moe_router_entropy, each also per layer as .../encoder_layer_1 and
           .../decoder_layer_1) in metrics.jsonl and TensorBoard (that 200-step run).
Variant:   `configs/switch_tiny.py:debug`: 20 steps of 8 rows, a smoke test.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug"):
        raise ValueError(f"configs/switch_tiny.py takes no argument or 'debug', not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("t5_1_0_tiny.py")))
    moe = config.model.moe
    moe.num_experts, moe.moe_every, moe.router = 8, 2, "top1"
    moe.capacity_factor_train, moe.capacity_factor_eval, moe.group_size = 1.25, 2.0, 0
    moe.jitter_eps, moe.router_init_scale, moe.expert_dropout_rate = 0.01, 0.1, 0.0
    moe.aux_loss_weight, moe.z_loss_weight = 0.01, 0.0
    if arg == "debug":
        config_lib.apply_debug(config)
    return config
