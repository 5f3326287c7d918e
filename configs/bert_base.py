"""BERT-base (Devlin et al. 2019): 12 layers, hidden 768, 12 heads, MLP 3072, WordPiece vocabulary of 30,522,
512 learned positions, 2 token types; post-LayerNorm blocks, exact-erf GELU, MLM head tied to the token embedding,
pooler and NSP/SOP classifier. 110M parameters (the paper's rounded figure): 110,106,428 here (= Hugging Face's
BertForPreTraining of bert-base-uncased), of which 109,482,240 are the embeddings, encoder and pooler (= its
BertModel) and 624,188 the MLM and pair heads.

Command:   python -m lmx.train --config=configs/bert_base.py --workdir=/tmp/bert_base
Hardware:  the paper trained on 4 Cloud TPUs in pod configuration (16 TPU v2 chips) for 4 days; sized here for a
           TPU v4-32 / 8xA100 class slice (global batch 256 x 512 tokens, bfloat16).
Wall time: not measured here (CPU-only machine); about 4 days on 16 TPU v2 chips per the paper.
Expected:  not measured here. For scale: RoBERTa (Liu et al. 2019, table 3) reports a held-out MLM perplexity of
           3.99 (1.38 nats) for this size, batch 256 x 1M steps at lr 1e-4, on BookCorpus + Wikipedia.
Recipe:    BERT appendix A.2: Adam, lr 1e-4, b1 0.9, b2 0.999, L2 weight decay 0.01 (decoupled, as the released
           optimizer applies it; not on LayerNorm or biases), linear warmup over 10,000 steps then linear decay to 0,
           gradient clipping at global norm 1.0 (released optimization.py), dropout 0.1 everywhere, 1M steps of 256
           sequences. The paper trains 90% of the steps at length 128 and the rest at 512; this config uses 512 rows
           throughout (RoBERTa's choice), which costs more compute per step but is one run. No z-loss (BERT has none).
Data:      a WordPiece vocabulary: BERT's vocab.txt as config.data.vocab_path, or one of 30,522 trained on the
           corpus on first use; objective mlm_nsp (section 3.1: MLM + next-sentence prediction on [CLS] A [SEP] B
           [SEP] pairs, one per row, unpacked); C4 by default, BERT's corpora as
           --config.data.mixture="(('wikipedia', 2.5), ('books', 0.8))" (2,500M and 800M words).
Variant:   `configs/bert_base.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.name = "encoder_only"
    m.vocab_size = 30522  # bert-base-uncased's WordPiece vocabulary
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 768, 12, 64, 3072
    m.num_encoder_layers, m.num_decoder_layers = 12, 0
    m.mlp_activations = ("gelu_exact",)  # BERT's GELU is the exact erf form (Hugging Face's "gelu")
    m.use_bias, m.norm, m.norm_position, m.norm_epsilon = True, "layer", "post", 1e-12
    m.position_embedding, m.max_length, m.type_vocab_size = "learned", 512, 2
    m.scale_attention_logits, m.tie_embeddings = True, True
    m.init, m.init_stddev = "normal", 0.02  # the released code draws a truncated normal; a plain one here
    m.dropout_rate = 0.1

    d = config.data
    d.objective, d.pack = "mlm_nsp", False  # MLM + next-sentence prediction: one sentence pair per row
    d.inputs_length = d.targets_length = 512  # one MLM row of 512 tokens (encoder-only rows have a single length)
    d.vocab_kind, d.vocab_pieces, d.extra_ids = "wordpiece", 30522, 0  # BERT's WordPiece size; no T5 sentinels

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
        raise ValueError(f"configs/bert_base.py takes no argument or 'debug', not {arg!r}")
    return config
