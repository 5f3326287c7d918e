"""T5.1.1-base (248M parameters) span-corruption pretraining on C4 — the T5 paper's recipe.

Command:   python -m lmx.train --config=configs/t5_base.py --workdir=/tmp/t5_base
Hardware:  sized for a TPU v4-32 / 8xA100 class slice (global batch 128 x 512 tokens, bfloat16).
Wall time: roughly 2-3 days for 524,288 steps on a v4-32 (not measured here; CPU-only machine).
Expected:  span-corruption train loss falling below ~2.0 within the first 10k steps (not measured here).
Data:      TFDS c4/en must be prepared in config.data.tfds_data_dir (`tfds build c4/en`); offline smoke test on CPU:
           --config.data.corpus=embedded --config.data.vocab_path=PATH/t5_spiece.model
           --config.train.steps=2 --config.train.batch_size=8 --config.model.dtype=float32
Recipe:    the T5 paper's (Raffel et al. 2020, section 3.1.2) with T5.1.1's changes (gated GELU, untied output
           layer, no dropout in pre-training): Adafactor (decay 0.8, update clipping 1.0, no momentum, factored by
           logical axes as T5X does), lr = 1/sqrt(max(step, 10^4)) (constant 0.01 for 10k steps, then rsqrt), no
           global-norm gradient clipping, 2^19 steps of 128 sequences of 512 tokens.
Departs:   z-loss 1e-4 on the output logits (T5X's T5.1.1 configs; the paper has none): keeps log Z near 0 so
           bfloat16 logits stay stable. C4 is TFDS c4/en:3.1.0 (T5 used 2.2.0). The vocabulary is T5's only when
           config.data.vocab_path points at its SentencePiece model; by default one is trained on the corpus.
           `:debug` ends the constant phase after 5 steps (config_lib.apply_debug), so the rate decays within it.
Variant:   `configs/t5_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()  # the base config *is* T5.1.1-base on C4
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/t5_base.py takes no argument or 'debug', not {arg!r}")
    return config
