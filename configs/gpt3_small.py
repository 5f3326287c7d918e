"""GPT-3 Small (125M parameters; Brown et al. 2020): GPT-2 small with a 2048-token context and GPT-3's
alternating dense and locally banded sparse attention.

Command:   python -m lmx.train --config=configs/gpt3_small.py --workdir=/tmp/gpt3_small
Hardware:  sized for a TPU v4-32 / 8xA100 class slice (global batch 256 x 2048 tokens = 0.5M tokens, bfloat16).
Wall time: 572,205 steps (300B tokens) = 2.6e20 model FLOPs: about 3 days on 8xA100 at 40% MFU (not measured
           here; CPU-only machine).
Expected:  not measured here (GPT-3's paper plots validation loss, Figure 3.1, without a table).
Variant:   `configs/gpt3_small.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run
           (its 32-token rows are shorter than the band, so there its banded layers equal dense causal ones).

Architecture (section 2.1: "the same model and architecture as GPT-2 ... with the exception that we use
alternating dense and locally banded sparse attention patterns in the layers of the transformer, similar to the
Sparse Transformer"; Table 2.1: 12 layers, d_model 768, 12 heads of 64, context 2048):
  gpt2_small.py's model with max_length 2048 and attention_pattern "alternating_banded": layers 0, 2, 4, ... attend
  densely (causal), layers 1, 3, 5, ... see only the `attention_band` = 256 most recent keys of their own
  example (themselves included), computed blockwise (lmx.models.attention.banded_attention).
  The paper specifies neither the band width nor which layers are banded: 256 is the window GPT-Neo used to
  reproduce GPT-3 (the Sparse Transformer, Child et al. 2019, chose its local window near sqrt(n),
  ~45 for n = 2048); banded odd layers follow GPT-Neo's global/local order too.
  Parameters: 125,226,240 = gpt2_small's 124,439,808 + 1024 x 768 more position rows.
Dropout: the paper does not mention it; GPT-2's 0.1 is kept ("the same model").

Optimiser (appendix B and Table 2.1): AdamW, betas (0.9, 0.95), eps 1e-8, peak 6e-4, linear warmup over 375M
tokens (715 steps), cosine decay to 10% of the peak, weight decay 0.1, clipping at global norm 1.0, 300B tokens
(the paper's cosine ends at 260B tokens and holds 10% after; here it spans all steps). Not reproduced: GPT-3's
batch-size ramp (32k tokens up to the full batch over the first 4-12B tokens).
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("gpt2_small.py")))
    m = config.model
    m.max_length = 2048
    m.attention_pattern, m.attention_band = "alternating_banded", 256
    config.data.targets_length = 2048
    config.train.batch_size = 256  # 0.5M tokens
    config.train.steps = 572_205  # 300B tokens / (256 x 2048)
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/gpt3_small.py takes no argument or 'debug', not {arg!r}")
    return config
