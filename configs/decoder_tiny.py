"""A tiny modern decoder (same architecture as decoder_1b.py, 1.31M parameters) trained on the embedded corpus.

Command:   python -m lmx.train --config=configs/decoder_tiny.py --workdir=/tmp/decoder_tiny
Hardware:  two CPU cores, float32; no data download (the corpus ships inside CPython, a 2,000-piece
           SentencePiece BPE is trained on first use and cached).
Wall time: 1 min 49 s in all for 200 steps, measured here on two quiet CPU cores with `--config.train.steps=200
           --config.train.eval_every=100` (a 200-step run, 1 device): 0.42 s/step, 9.8k tokens/s; the full 600-step run
           is not timed here.
Expected:  next-token train loss 7.65 at step 1 -> 3.46 at step 200; eval loss 4.45 (step 100) -> 3.71 (step 200) (that
           200-step run).
Variant:   `configs/decoder_tiny.py:debug`: 20 steps of 8 x 32 tokens, a smoke test.

Architecture: decoder_1b.py's (rotary positions, RMSNorm, SwiGLU, no biases, untied output, N(0, 0.02) init) at
4 layers, d_model 128, 4 query heads of 32 sharing 2 key/value heads (GQA), SwiGLU MLP 384 (~8/3 x 128, rounded up
to a multiple of 128), a 128-token context.
  Parameters: 1,311,872 = 2 x 2048 x 128 (token table, output) + 4 x 196,864 (layers) + 128 (final norm).
Optimiser: decoder_1b.py's (AdamW, betas (0.9, 0.95), weight decay 0.1, clipping at 1.0, linear warmup, cosine to
10%) with a peak learning rate for this size, 3e-3.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.name = "decoder_only"
    m.vocab_size = 2048
    m.embed_dim, m.mlp_dim = 128, 384
    m.num_heads, m.num_kv_heads, m.head_dim = 4, 2, 32
    m.num_encoder_layers, m.num_decoder_layers = 0, 4
    m.mlp_activations = ("silu", "linear")
    m.use_bias = False
    m.norm, m.norm_epsilon = "rms", 1e-5
    m.position_embedding, m.rope_theta, m.max_length = "rotary", 10000.0, 128
    m.scale_attention_logits = True
    m.init, m.init_stddev, m.scale_residual_init = "normal", 0.02, False
    m.tie_embeddings = False
    m.dropout_rate = 0.0
    m.dtype = "float32"
    m.scan_layers, m.remat_policy = False, "none"

    d = config.data
    d.objective = "lm"
    d.corpus = "embedded"
    d.vocab_kind, d.vocab_pieces, d.extra_ids = "bpe", 2000, 0  # Llama's kind of vocabulary, small
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
        raise ValueError(f"configs/decoder_tiny.py takes no argument or 'debug', not {arg!r}")
    return config
