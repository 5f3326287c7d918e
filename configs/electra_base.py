"""ELECTRA-Base (Clark et al. 2020): BERT-base's discriminator (12 layers, hidden 768, 12 heads, MLP 3072, 768-wide
embeddings) trained by replaced-token detection with a generator one third of its size (objective "rtd").

Architecture (appendix A, table 6): as configs/electra_small.py at base sizes; embeddings 768 wide (no factorised
projection in the discriminator); generator 1/3 of the hidden size, MLP and heads (256 wide, 4 heads of 64, MLP
1024, 12 layers) with its own projection 768 -> 256, sharing the token and position embeddings.
Parameters: 119,386,427 = the discriminator's 109,483,009 (= Hugging Face's ElectraForPreTraining at these sizes; the
paper's 110M) + the generator's 9,903,418 (ElectraForMaskedLM at 1/3 size less its shared embeddings).

Command:   python -m lmx.train --config=configs/electra_base.py --workdir=/tmp/electra_base
Hardware:  the paper trained it on 16 TPU v3 chips (batch 256 x 512); sized here for a TPU v4-32 / 8xA100 class slice.
Wall time: not measured here (CPU-only machine).
Expected:  not measured here (the paper reports GLUE after fine-tuning: 85.1 dev score for 766K steps, table 8).
Recipe:    table 6: Adam (b1 0.9, b2 0.999, eps 1e-6), lr 2e-4, linear warmup over 10,000 steps then linear decay,
           weight decay 0.01, dropout 0.1, batch 256 of 512 tokens, 766K steps (the compute of BERT-Base's 1M),
           15% of the tokens masked, lambda = 50, gradient clipping at 1.0. No z-loss.
Data:      as configs/electra_small.py (BERT's Wikipedia + BooksCorpus in the paper; C4 by default here).
Variant:   `configs/electra_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg not in (None, "debug"):
        raise ValueError(f"configs/electra_base.py takes no argument or 'debug', not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("electra_small.py")))
    m = config.model
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 768, 12, 64, 3072
    m.embed_proj_dim = 0  # embeddings as wide as the hidden states
    m.generator_size_fraction = 1 / 3

    config.data.inputs_length = config.data.targets_length = 512

    t = config.train
    t.steps, t.batch_size = 766_000, 256

    config.optim.learning_rate = 2e-4
    if arg == "debug":
        config_lib.apply_debug(config)
    return config
