"""GPT-2 small (124M parameters; Radford et al. 2019) next-token pretraining — the model as published, the
optimiser of GPT-3's same-sized model.

Command:   python -m lmx.train --config=configs/gpt2_small.py --workdir=/tmp/gpt2_small
Hardware:  sized for a TPU v4-32 / 8xA100 class slice (global batch 512 x 1024 tokens = 0.5M tokens, bfloat16).
Wall time: 572,205 steps (300B tokens) = 2.6e20 model FLOPs: about 3 days on 8xA100 at 40% MFU (not measured
           here; CPU-only machine).
Expected:  not measured here. For scale: reproductions of this model on OpenWebText reach a validation loss of
           about 2.85 nats at this budget; C4 gives different numbers.
Variant:   `configs/gpt2_small.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.

Architecture (Radford et al. 2019, section 2.3 and Table 2; the corrected counts of the released checkpoints):
  12 layers, d_model 768, 12 heads of 64, MLP 3072 (GELU, tanh form), biases everywhere, LayerNorm (eps 1e-5)
  before each sub-block and after the last one, learned positions for a 1024-token context, output tied to the
  token embedding, init N(0, 0.02) with the residual output projections scaled by 1/sqrt(2 x 12).
  Parameters: 124,439,808 = 50257 x 768 (tokens) + 1024 x 768 (positions) + 12 x 7,087,872 (layers) + 1536
  (final norm). The vocabulary is a byte-level BPE of GPT-2's size, 50,257 ids, trained on the corpus on first
  use; --config.data.vocab_path=DIR with GPT-2's own vocab.json and merges.txt in DIR uses GPT-2's.
  vocab_size stays 50,257 so converted GPT-2 checkpoints keep their softmax; a mesh with tensor > 1 must split the
  vocabulary evenly: then set --config.model.vocab_size=50304 (a multiple of 128: +47 x 768 = +36,096 parameters,
  124,475,904; the extra rows are never targets).
Dropout 0.1 on embeddings, attention probabilities and residual branches: GPT-1's value (Radford et al. 2018,
section 4.1), which GPT-2's paper does not restate.

Optimiser: GPT-2's paper gives only the batch (512) and context (1024) and says the learning rate was tuned by hand
without publishing it, so the rest is GPT-3's recipe for the same 125M shape (Brown et al. 2020, Table 2.1 and
appendix B): AdamW, betas (0.9, 0.95), eps 1e-8, peak learning rate 6e-4, linear warmup over 375M tokens
(715 steps of 0.5M), cosine decay to 10% of the peak, weight decay 0.1, gradient clipping at global norm 1.0, and
GPT-3's 300B-token budget (572,205 steps; GPT-3 reaches the 10% floor at 260B tokens and holds it, here the cosine
spans all steps). No z-loss (GPT never used one).
Data:      GPT-2 trained on WebText, which is not public; C4 (TFDS c4/en) stands in.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.name = "decoder_only"
    m.vocab_size = 50257
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 768, 12, 64, 3072
    m.num_encoder_layers, m.num_decoder_layers = 0, 12
    m.mlp_activations = ("gelu",)  # tanh approximation, as in GPT-2's code
    m.use_bias = True
    m.norm, m.norm_epsilon = "layer", 1e-5
    m.position_embedding, m.max_length = "learned", 1024
    m.scale_attention_logits = True
    m.init, m.init_stddev, m.scale_residual_init = "normal", 0.02, True
    m.tie_embeddings = True
    m.dropout_rate = 0.1

    d = config.data
    d.objective = "lm"
    d.targets_length = 1024  # the context: the lm objective cuts the token stream into rows of this length
    d.vocab_kind, d.vocab_pieces = "byte_bpe", 50257  # GPT-2's kind and size, trained on the corpus on first use
    d.extra_ids = 0  # no sentinels: next-token prediction needs none

    t = config.train
    t.batch_size = 512
    t.steps = 572_205  # 300B tokens / (512 x 1024)
    t.z_loss = 0.0

    o = config.optim
    o.name, o.learning_rate, o.b1, o.b2, o.eps = "adamw", 6e-4, 0.9, 0.95, 1e-8
    o.warmup_steps, o.warmup_shape = 715, "linear"  # 375M tokens
    o.decay, o.end_learning_rate_fraction = "cosine", 0.1
    o.weight_decay, o.clip_norm = 0.1, 1.0

    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/gpt2_small.py takes no argument or 'debug', not {arg!r}")
    return config
