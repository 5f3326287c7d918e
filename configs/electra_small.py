"""ELECTRA-Small (Clark et al. 2020): replaced-token detection with a discriminator of hidden size 256 and an MLM
generator a quarter of its size, sharing 128-wide embeddings (objective "rtd", model "electra").

Architecture (appendix A, table 6; the released code's BERT-style blocks): discriminator 12 post-LayerNorm layers,
hidden 256, 4 heads of 64, MLP 1024, exact-erf GELU, biases, learned positions (512), 2 token types, BERT's
WordPiece vocabulary of 30,522; token, position and token-type embeddings of width 128 (projected to 256), shared
with the generator (section 3.1 "Weight sharing"). Generator: 1/4 of the hidden size, MLP and heads (64 wide, 1 head,
MLP 256), the same 12 layers, its own projection 128 -> 64, BERT's MLM head into the shared token table.
Parameters: 14,196,219 = the discriminator's 13,549,057 (= Hugging Face's ElectraForPreTraining at these sizes; the
paper's table 1 rounds it to 14M) + the generator's 647,162 (ElectraForMaskedLM less its embeddings, which are shared;
tests/models/electra_test.py checks both).

Command:   python -m lmx.train --config=configs/electra_small.py --workdir=/tmp/electra_small
Hardware:  the paper trained it on one V100 for 4 days (1M steps at batch 128 x 128); fits one accelerator.
Wall time: not measured here (CPU-only machine).
Expected:  not measured here (the paper reports GLUE after fine-tuning: 79.9 dev score, table 1).
Recipe:    table 6: Adam (b1 0.9, b2 0.999, eps 1e-6), lr 5e-4, linear warmup over 10,000 steps then linear decay,
           weight decay 0.01 (not on LayerNorm or biases), dropout 0.1, batch 128 of 128 tokens, 1M steps, 15% of
           the tokens masked, discriminator loss weight lambda = 50 (section 2), gradient clipping at 1.0 (the
           released optimizer). Masked positions all become [MASK] (section 2; the released code keeps 15% of them
           unchanged: --config.data.mask_token_prob=0.85). No z-loss.
Data:      full sentences across documents, masks drawn afresh each time a row is seen (as RoBERTa); C4 by default
           (ELECTRA-Small used Wikipedia + BooksCorpus: --config.data.mixture="(('wikipedia', 2.5), ('books', 0.8))"
           with a WordPiece vocabulary in config.data.vocab_path).
Variant:   `configs/electra_small.py:debug` keeps the architecture but shrinks batch, lengths and steps for a CPU run.
Fine-tuning: `python -m lmx.convert.electra --checkpoint=W/checkpoints/N --config=configs/electra_small.py --out=D`
           writes the discriminator as an encoder-only checkpoint for --config.checkpoint.init_from=D/checkpoints/0.
"""

from lmx import config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config()
    m = config.model
    m.name = "electra"
    m.vocab_size = 30522  # BERT's uncased WordPiece vocabulary
    m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 256, 4, 64, 1024
    m.embed_proj_dim = 128  # the shared embeddings' width (ELECTRA-Small's "embedding size")
    m.generator_size_fraction = 0.25
    m.num_encoder_layers, m.num_decoder_layers = 12, 0
    m.mlp_activations = ("gelu_exact",)
    m.use_bias, m.norm, m.norm_position, m.norm_epsilon = True, "layer", "post", 1e-12
    m.position_embedding, m.max_length, m.type_vocab_size = "learned", 512, 2
    m.scale_attention_logits, m.tie_embeddings = True, True
    m.init, m.init_stddev = "normal", 0.02
    m.dropout_rate = 0.1

    d = config.data
    d.objective = "rtd"
    d.inputs_length = d.targets_length = 128  # ELECTRA-Small trains on 128-token rows
    d.mask_rate, d.mask_token_prob = 0.15, 1.0

    t = config.train
    t.steps, t.batch_size = 1_000_000, 128
    t.z_loss = 0.0
    t.discriminator_weight = 50.0

    o = config.optim
    o.name, o.learning_rate, o.b1, o.b2, o.eps = "adamw", 5e-4, 0.9, 0.999, 1e-6
    o.warmup_steps, o.warmup_shape, o.decay, o.end_learning_rate_fraction = 10_000, "linear", "linear", 0.0
    o.weight_decay, o.clip_norm = 0.01, 1.0

    if arg == "debug":
        config_lib.apply_debug(config)
    elif arg:
        raise ValueError(f"configs/electra_small.py takes no argument or 'debug', not {arg!r}")
    return config
