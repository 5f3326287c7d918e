"""A tiny ELECTRA for CPU: configs/bert_tiny.py's model as the discriminator (2 layers, hidden 128, 2 heads of 64,
MLP 512, 128-wide embeddings) with a generator a quarter of its size (hidden 32, 1 head of 32, MLP 128, 2 layers),
trained by replaced-token detection on the embedded corpus with bert_tiny's data, batch and optimiser, for the same
pretraining compute as bert_tiny's 600 MLM steps (ELECTRA section 3.3 compares models at equal compute).

Compute: lmx.flops counts 18.58 GFLOPs per bert_tiny step and 19.80 GFLOPs per electra_tiny step (the generator
and its MLM head over the shared token table included): 600 x 18.58 / 19.80 = 563 steps.
Parameters: 744,801 = the discriminator's 708,609 (bert_tiny's embeddings and encoder, 691,968, and the
replaced-token head) + the generator's 36,192 (its projection 128 -> 32, blocks and MLM head).
Command:   python -m lmx.train --config=configs/electra_tiny.py --workdir=/tmp/electra_tiny
Hardware:  two CPU cores, float32; no data download.
Wall time: 2 min 51 s in all for 200 steps, measured here on two quiet CPU cores with `--config.train.steps=200
           --config.train.eval_every=100` (a 200-step run, 1 device): 0.62 s/step, 6.7k tokens/s.
Expected:  loss (generator MLM + 50 x discriminator BCE) 42.4 at step 1 (ln 2176 + 50 ln 2 = 42.3) -> 25.1 at step 200;
           eval loss 25.30 (step 100), 25.85 (step 200); at step 200 generator accuracy 0.16, replaced fraction 0.142,
           discriminator accuracy 0.858 = the all-original base rate: 200 steps are too few for the discriminator to
           beat it (that 200-step run).
Fine-tune: python -m lmx.convert.electra --checkpoint=/tmp/electra_tiny/checkpoints/563
           --config=configs/electra_tiny.py --out=/tmp/electra_tiny_disc, then any encoder-only config of bert_tiny's
           sizes with --config.checkpoint.init_from=/tmp/electra_tiny_disc/checkpoints/0.
"""

import pathlib

from lmx import config_lib


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"configs/electra_tiny.py takes no argument, not {arg!r}")
    config = config_lib.load_config_file(str(pathlib.Path(__file__).with_name("bert_tiny.py")))
    m = config.model
    m.name = "electra"
    m.generator_size_fraction = 0.25
    m.type_vocab_size = 2  # as bert_tiny (full-sentence rows use type 0 only)

    d = config.data
    d.objective, d.pack = "rtd", True
    d.mask_rate, d.mask_token_prob = 0.15, 1.0  # ELECTRA: 15% of the tokens, all [MASK]ed

    t = config.train
    t.steps = 563  # bert_tiny's 600 steps of compute (see the docstring)
    t.discriminator_weight = 50.0
    return config
