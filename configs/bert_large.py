"""BERT-large (Devlin et al. 2019): configs/bert_base.py with 24 layers, hidden 1024, 16 heads, MLP 4096.

Parameters: 336,226,108 here (= Hugging Face's BertForPreTraining of bert-large-uncased), of which 335,141,888 are
the embeddings, encoder and pooler (= its BertModel) and 1,084,220 the MLM and pair heads. The BERT paper rounds the
model to 340M (1.4% above the released checkpoint); ALBERT (Lan et al. 2020, table 1) lists the same architecture
as 334M.

Command:   python -m lmx.train --config=configs/bert_large.py --workdir=/tmp/bert_large
Hardware:  the paper trained on 16 Cloud TPUs (64 TPU v2 chips) for 4 days; sized here for a TPU v4-128 /
           32xA100 class slice (global batch 256 x 512 tokens, bfloat16).
Wall time: not measured here (CPU-only machine); about 4 days on 64 TPU v2 chips per the paper.
Expected:  not measured here; lower than bert_base's at every step (BERT section 5.2: larger models are better at
           every size tried).
Recipe:    as configs/bert_base.py (BERT appendix A.2 uses the same optimizer settings for both sizes).
Variant:   `configs/bert_large.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("bert_base.py")))
    m = config.model
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 1024, 16, 64, 4096
    m.num_encoder_layers = 24
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/bert_large.py takes no argument or 'debug', not {arg!r}")
    return config
