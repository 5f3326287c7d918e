"""A tiny GPT-2 (same architecture as gpt2_small.py, 1.07M parameters) trained on the embedded corpus: the
decoder-only counterpart of t5_tiny.py.

Command:   python -m lmx.train --config=configs/gpt2_tiny.py --workdir=/tmp/gpt2_tiny
Hardware:  two CPU cores, float32; no data download (the corpus ships inside CPython, a 2,000-token byte-level
           BPE is trained on first use and cached).
Wall time: 2 min 36 s in all for 200 steps, measured here on two quiet CPU cores with `--config.train.steps=200
           --config.train.eval_every=100` (a 200-step run, 1 device): first step incl. compile ~9 s, 0.64 s/step, 6.4k
           tokens/s; the full 600-step run is not timed here.
Expected:  next-token train loss 7.65 at step 1 (ln 2048 = 7.62) -> 4.31 at step 200; eval loss 4.76 (step 100) -> 4.30
           (step 200) (that 200-step run).
Variant:   `configs/gpt2_tiny.py:debug`: 20 steps of 8 x 32 tokens, a smoke test.

Architecture: gpt2_small.py's (pre-LayerNorm with bias, GELU MLP with biases, learned positions, final LayerNorm,
tied output, N(0, 0.02) init with residual projections at 0.02 / sqrt(2 x 4), dropout 0.1) at 4 layers,
d_model 128, 4 heads of 32, MLP 512, a 128-token context.
  Parameters: 1,071,872 = 2048 x 128 (tokens) + 128 x 128 (positions) + 4 x 198,272 (layers) + 256 (final norm).
  vocab_size 2048: the 2,000 pieces padded up to a multiple of 128 (no sentinels for next-token prediction).
Optimiser: GPT-3's recipe (AdamW, betas (0.9, 0.95), weight decay 0.1, clipping at 1.0, linear warmup, cosine to
10%) with a peak learning rate for this size, 3e-3.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.name = "decoder_only"
    m.vocab_size = 2048
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 128, 4, 32, 512
    m.num_encoder_layers, m.num_decoder_layers = 0, 4
    m.mlp_activations = ("gelu",)
    m.use_bias = True
    m.norm, m.norm_epsilon = "layer", 1e-5
    m.position_embedding, m.max_length = "learned", 128
    m.scale_attention_logits = True
    m.init, m.init_stddev, m.scale_residual_init = "normal", 0.02, True
    m.tie_embeddings = True
    m.dropout_rate = 0.1
    m.dtype = "float32"
    # As t5_tiny: a few small layers compile as fast unrolled and step faster on CPU without rematerialisation.
    m.scan_layers, m.remat_policy = False, "none"

    d = config.data
    d.objective = "lm"
    d.corpus = "embedded"
    d.vocab_kind, d.vocab_pieces, d.extra_ids = "byte_bpe", 2000, 0  # GPT-2's kind of vocabulary, small
    d.targets_length = 128
    d.shuffle_buffer = 2000

    t = config.train
    t.steps, t.batch_size = 600, 32
    t.log_every, t.eval_every, t.eval_steps = 25, 200, 4
    t.z_loss = 0.0

    o = config.optim
    o.name, o.learning_rate, o.b1, o.b2 = "adamw", 3e-3, 0.9, 0.95
    o.warmup_steps, o.warmup_shape = 60, "linear"
    o.decay, o.end_learning_rate_fraction = "cosine", 0.1
    o.weight_decay, o.clip_norm = 0.1, 1.0

    config.checkpoint.every_steps = 200
    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/gpt2_tiny.py takes no argument or 'debug', not {arg!r}")
    return config
