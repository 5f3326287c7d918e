"""A modern 1.1B decoder (rotary positions, RMSNorm, SwiGLU, grouped-query attention, no biases, untied output) at
TinyLlama's published shape (Zhang et al. 2024, "TinyLlama: An Open-Source Small Language Model").

Command:   python -m lmx.train --config=configs/decoder_1b.py --workdir=/tmp/decoder_1b
Hardware:  sized for a TPU v4-128 / 16-32xA100 class slice (global batch 1024 x 2048 tokens = 2M tokens, bfloat16).
Wall time: 1,430,511 steps (3T tokens) = 2.3e22 model FLOPs; TinyLlama reports 90 days on 16 A100-40G for it
           (not measured here; CPU-only machine). Scale train.steps down for a study.
Expected:  not measured here.
Variant:   `configs/decoder_1b.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.

Architecture (TinyLlama = Llama 2's design, Touvron et al. 2023, at 1.1B):
  22 layers, d_model 2048, 32 query heads of 64 sharing 4 key/value heads (GQA, Ainslie et al. 2023: 8 query heads
  per key/value head), SwiGLU MLP of 5632 (Shazeer 2020), RMSNorm (eps 1e-5) before each sub-block and at the end,
  rotary positions (Su et al. 2021; theta 10,000) over a 2048-token context, no biases, untied output projection,
  vocabulary 32,000 (a SentencePiece BPE as Llama's, trained on the corpus on first use; no sentinels),
  init N(0, 0.02).
  Parameters: 1,100,048,384 = 2 x 32000 x 2048 (token table, output) + 22 x 44,044,288 (layers: q and out
  2 x 2048 x 2048, k and v 2 x 2048 x 256, MLP 3 x 2048 x 5632, two norms) + 2048 (final norm).
  GQA and tensor parallelism: the 4 key/value heads split over at most 4 tensor-parallel devices.

Optimiser (TinyLlama's paper): AdamW, betas (0.9, 0.95), eps 1e-8, peak 4e-4 with 2000 linear warmup steps,
cosine decay to 4e-5 (10%), weight decay 0.1, gradient clipping at global norm 1.0, batch 2M tokens, 3T tokens.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.name = "decoder_only"
    m.vocab_size = 32000
    m.embed_dim, m.mlp_dim = 2048, 5632
    m.num_heads, m.num_kv_heads, m.head_dim = 32, 4, 64
    m.num_encoder_layers, m.num_decoder_layers = 0, 22
    m.mlp_activations = ("silu", "linear")  # SwiGLU
    m.use_bias = False
    m.norm, m.norm_epsilon = "rms", 1e-5
    m.position_embedding, m.rope_theta, m.max_length = "rotary", 10000.0, 2048
    m.scale_attention_logits = True
    m.init, m.init_stddev, m.scale_residual_init = "normal", 0.02, False
    m.tie_embeddings = False
    m.dropout_rate = 0.0

    d = config.data
    d.objective = "lm"
    d.targets_length = 2048
    d.vocab_kind, d.vocab_pieces, d.extra_ids = "bpe", 32000, 0  # Llama's SentencePiece BPE size

    t = config.train
    t.batch_size = 1024  # 2M tokens
    t.steps = 1_430_511  # 3T tokens / (1024 x 2048)
    t.z_loss = 0.0

    o = config.optim
    o.name, o.learning_rate, o.b1, o.b2, o.eps = "adamw", 4e-4, 0.9, 0.95, 1e-8
    o.warmup_steps, o.warmup_shape = 2000, "linear"
    o.decay, o.end_learning_rate_fraction = "cosine", 0.1
    o.weight_decay, o.clip_norm = 0.1, 1.0

    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/decoder_1b.py takes no argument or 'debug', not {arg!r}")
    return config
