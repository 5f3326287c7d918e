"""XLNet-Base (Yang et al. 2019): BERT-Base's size (12 layers, hidden 768, 12 heads, MLP 3072) as a Transformer-XL
encoder trained by permutation language modelling: two-stream relative attention, a 384-state memory of each row's
previous segment, post-LayerNorm, exact-erf GELU (Hugging Face's "gelu"; the released TensorFlow code used the tanh
form), output layer tied to the 32,000-piece SentencePiece embedding plus a bias. 116,750,336 parameters (= Hugging
Face's XLNetLMHeadModel of xlnet-base-cased: its XLNetModel's 116,718,336 and the output bias).

Command:   python -m lmx.train --config=configs/xlnet_base.py --workdir=/tmp/xlnet_base
Hardware:  sized for a TPU v4-32 / 8xA100 class slice (global batch 256 x 512 tokens, bfloat16).
Wall time: not measured here (CPU-only machine).
Expected:  not measured here. The paper's base-size ablation (section 3.4, table 6) pretrains on BooksCorpus and
           Wikipedia with BERT-Base's hyperparameters and reports e.g. RACE 66.7 / SQuAD2.0 F1 81.3 after fine-tuning.
Recipe:    the paper's base ablation reuses BERT-Base's (1M steps of 256 x 512, Adam lr 1e-4, linear warmup over 10k
           steps and linear decay, weight decay 0.01, dropout 0.1); XLNet's own settings: K = 6 (85 of 512 tokens
           predicted per row, num_predict=85 in the released scripts), mem_len 384, Adam epsilon 1e-6, gradient
           clipping at 1.0 (appendix A.3, the released train scripts). Not reproduced: the bidirectional data
           pipeline of XLNet-Large (half the batch read backwards), the released code's two-segment A/B inputs with
           50% random B (lmx reads one contiguous stream per row, which the memory needs; the relative segment
           encoding is then only trained by fine-tuning on pairs), and its reuse_len=256 overlap of consecutive
           examples (here each row's segments follow each other without overlap).
Data:      objective plm: chunks of 512 tokens of the document stream, each row continuing its own stretch of the
           stream (lmx.data.streams) so the memory holds the text just before; C4 by default, the paper's
           BooksCorpus + Wikipedia as --config.data.mixture="(('wikipedia', 2.5), ('books', 0.8))".
Variant:   `configs/xlnet_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.name = "xlnet"
    m.vocab_size = 32000  # XLNet's SentencePiece vocabulary
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 768, 12, 64, 3072
    m.num_encoder_layers, m.num_decoder_layers = 12, 0
    m.mem_len = 384  # the released pretraining scripts' mem_len
    m.mlp_activations = ("gelu_exact",)
    m.use_bias, m.norm, m.norm_position, m.norm_epsilon = True, "layer", "post", 1e-12
    m.position_embedding, m.max_length = "relative_sinusoidal", 512  # no position table: max_length only checks
    m.scale_attention_logits, m.tie_embeddings = True, True
    m.init, m.init_stddev = "normal", 0.02  # XLNet's initializer_range
    m.dropout_rate = 0.1

    d = config.data
    d.objective, d.pack = "plm", False  # every row is a full chunk of its own stream: nothing to pack
    d.inputs_length = d.targets_length = 512
    d.plm_k, d.plm_targets = 6, "tokens"
    d.vocab_kind, d.vocab_pieces, d.extra_ids = "unigram", 32000, 0  # no T5 sentinels

    t = config.train
    t.steps, t.batch_size = 1_000_000, 256
    t.z_loss = 0.0

    o = config.optim
    o.name, o.learning_rate, o.b1, o.b2, o.eps = "adamw", 1e-4, 0.9, 0.999, 1e-6
    o.warmup_steps, o.warmup_shape, o.decay, o.end_learning_rate_fraction = 10_000, "linear", "linear", 0.0
    o.weight_decay, o.clip_norm = 0.01, 1.0

    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/xlnet_base.py takes no argument or 'debug', not {arg!r}")
    return config
