"""XLNet-Large (Yang et al. 2019, appendix A.3, table 7): 24 layers, hidden 1024, 16 heads of 64, MLP 4096, the base
architecture of configs/xlnet_base.py at the large size. 360,300,800 parameters (= Hugging Face's XLNetLMHeadModel
of xlnet-large-cased).

Command:   python -m lmx.train --config=configs/xlnet_large.py --workdir=/tmp/xlnet_large
Hardware:  the paper trained on 512 TPU v3 chips for 500K steps (batch 8192, about 5.5 days); sized here for a large
           TPU slice (bfloat16).
Wall time: not measured here (CPU-only machine).
Expected:  not measured here. The paper reports e.g. RACE 85.4, SQuAD2.0 F1 90.6 and GLUE dev results above
           RoBERTa-Large after fine-tuning (tables 2-5), on its 32.89B-token corpus.
Recipe:    table 7: batch 8192 x 512, Adam lr 4e-4 with linear warmup over 40,000 steps and linear decay, 500K steps,
           epsilon 1e-6, weight decay 0.01, dropout 0.1 (hidden and attention), K = 6, mem_len 384 (the released
           scripts). Not reproduced: the bidirectional data pipeline and the A/B segment inputs (configs/xlnet_base.py).
Variant:   `configs/xlnet_large.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug"):
        raise ValueError(f"configs/xlnet_large.py takes no argument or 'debug', not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("xlnet_base.py")))
    m = config.model
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 1024, 16, 64, 4096
    m.num_encoder_layers = 24

    t = config.train
    t.steps, t.batch_size = 500_000, 8192

    o = config.optim
    o.learning_rate, o.warmup_steps = 4e-4, 40_000

    if arg == "debug":
        config_lib.apply_debug(config)
    return config
