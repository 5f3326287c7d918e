"""A tiny GPT-2 with top-2 experts (gpt2_moe_small.py's MoE settings on gpt2_tiny.py) trained on the embedded corpus.

Architecture: gpt2_tiny.py's (4 layers, d_model 128, 4 heads of 32, GELU MLP 512 with biases, a 128-token context)
with layers 1 and 3 replaced by mixture-of-experts MLPs of 8 experts, each a GELU MLP of 512 with biases; GShard's
top-2 routing (second expert kept with probability 2 g_2 in training), capacity factor 1.25 in training and 2.0 at
evaluation per sequence, load-balancing loss 0.01 and router z-loss 1e-3 (see gpt2_moe_small.py).
  Parameters: 2,917,888 = 1,071,872 of gpt2_tiny.py + 2 x (7 x 131,712 + 128 x 8); a token touches 1,337,344.
  Dense twin at equal active FLOPs (BENCHMARKS.md): --config.model.moe.num_experts=0 --config.model.mlp_dim=768
  (two MLPs of 512 per token in every other layer = 1.5 x 512 in every layer).

Command:   python -m lmx.train --config=configs/gpt2_moe_tiny.py --workdir=/tmp/gpt2_moe_tiny
Hardware:  two CPU cores, float32; no data download (a 2,000-token byte-level BPE is trained on first use).
Wall time: 3 min 33 s in all for 200 steps, measured here on two quiet CPU cores with `--config.train.steps=200
           --config.train.eval_every=100` (a 200-step run, 1 device): 0.85 s/step, 4.8k tokens/s; BENCHMARKS.md has the
           step time against the dense twin.
Expected:  next-token train loss 7.68 at step 1 -> 4.28 at step 200; eval loss 4.77 (step 100) -> 4.28 (step 200); no
           token over capacity at step 200 (that 200-step run).
Variant:   `configs/gpt2_moe_tiny.py:debug`: 20 steps of 8 x 32 tokens, a smoke test.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug"):
        raise ValueError(f"configs/gpt2_moe_tiny.py takes no argument or 'debug', not {arg!r}")
    spec = str(pathlib.Path(__file__).with_name("gpt2_tiny.py")) + (":debug" if arg else "")
    config = config_lib.load_config_file(spec)
    moe = config.model.moe
    moe.num_experts, moe.moe_every, moe.router, moe.second_expert_policy = 8, 2, "top2", "random"
    moe.capacity_factor_train, moe.capacity_factor_eval, moe.group_size = 1.25, 2.0, 0
    moe.jitter_eps, moe.router_init_scale, moe.expert_dropout_rate = 0.0, 0.1, 0.0
    moe.aux_loss_weight, moe.z_loss_weight = 0.01, 1e-3
    return config
