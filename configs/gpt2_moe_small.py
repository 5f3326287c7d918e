"""GPT-2 small with GShard-style top-2 experts in every other MLP: configs/gpt2_small.py plus MoE settings.

Architecture: gpt2_small.py's (12 layers, d_model 768, 12 heads of 64, GELU MLP 3072 with biases, pre-LayerNorm,
learned positions, tied output) with layers 1, 3, ..., 11 replaced by mixture-of-experts MLPs of 8 experts, each
a GELU MLP of 3072 with biases like the dense ones. Routing as in GShard (Lepikhin et al. 2020, algorithm 1): each
token's two best experts, gates renormalised to sum to 1, the second expert kept with probability 2 g_2 in training
(always at evaluation); expert capacity ceil(2 x factor x tokens / 8) per sequence (GShard's 2N/E), factor 1.25 in
training and 2.0 at evaluation; a bias-free float32 router without input jitter (GShard has none), its
initialisation scaled by 0.1; the load-balancing loss of every MoE layer with weight 0.01 and ST-MoE's router
z-loss (Zoph et al. 2022, eq. 5) with 1e-3.
  Parameters: 322,818,816 = 124,439,808 of GPT-2 small + 6 x (7 x 4,722,432 + 768 x 8) (7 more experts and a
  router in each MoE layer); a token touches 152,811,264 of them (two experts and the router per MoE layer).

Command:   python -m lmx.train --config=configs/gpt2_moe_small.py --workdir=/tmp/gpt2_moe_small
Hardware:  sized for a TPU v4-32 / 8xA100 class slice (global batch 512 x 1024 tokens, bfloat16); the experts go
           over the mesh's expert axis with --config.mesh.expert=8 (or a divisor of 8).
Wall time: not measured here (CPU-only machine).
Expected:  not measured here.
Recipe:    gpt2_small.py's (GPT-3's optimiser for this size, 300B tokens).
Variant:   `configs/gpt2_moe_small.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug"):
        raise ValueError(f"configs/gpt2_moe_small.py takes no argument or 'debug', not {arg!r}")
    spec = str(pathlib.Path(__file__).with_name("gpt2_small.py")) + (":debug" if arg else "")
    config = config_lib.load_config_file(spec)
    moe = config.model.moe
    moe.num_experts, moe.moe_every, moe.router, moe.second_expert_policy = 8, 2, "top2", "random"
    moe.capacity_factor_train, moe.capacity_factor_eval, moe.group_size = 1.25, 2.0, 0
    moe.jitter_eps, moe.router_init_scale, moe.expert_dropout_rate = 0.0, 0.1, 0.0
    moe.aux_loss_weight, moe.z_loss_weight = 0.01, 1e-3
    return config
