"""T5.1.1-small (77M parameters) span-corruption pretraining on C4.

Command:   python -m lmx.train --config=configs/t5_small.py --workdir=/tmp/t5_small
Hardware:  sized for a TPU v3-8 / single A100 (global batch 128 x 512 tokens, bfloat16).
Wall time: roughly 1 day for 524,288 steps on a v3-8 (not measured here; CPU-only machine).
Expected:  span-corruption train loss below ~2.5 within the first 10k steps (not measured here).
Data:      TFDS c4/en prepared in config.data.tfds_data_dir; see configs/t5_base.py for an offline smoke test.
Recipe:    the T5 paper's (Raffel et al. 2020, section 3.1.2) with T5.1.1's changes (gated GELU, untied output
           layer, no dropout in pre-training): Adafactor (decay 0.8, update clipping 1.0, no momentum, factored by
           logical axes as T5X does), lr = 1/sqrt(max(step, 10^4)) (constant 0.01 for 10k steps, then rsqrt), no
           global-norm gradient clipping, 2^19 steps of 128 sequences of 512 tokens.
Departs:   z-loss 1e-4 on the output logits (T5X's T5.1.1 configs; the paper has none): keeps log Z near 0 so
           bfloat16 logits stay stable. C4 is TFDS c4/en:3.1.0 (T5 used 2.2.0). The vocabulary is T5's only when
           config.data.vocab_path points at its SentencePiece model; by default one is trained on the corpus.
           `:debug` ends the constant phase after 5 steps (config_lib.apply_debug), so the rate decays within it.
Variant:   `configs/t5_small.py:debug` shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 512, 6, 64, 1024
    m.num_encoder_layers = m.num_decoder_layers = 8
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/t5_small.py takes no argument or 'debug', not {arg!r}")
    return config
