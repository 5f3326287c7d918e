"""ELECTRA (Clark et al. 2020): a small masked-LM generator fills the masked positions with samples, and a
discriminator learns which tokens of the result were replaced (replaced-token detection, objective "rtd").

One module holds both, so one TrainState and one optimizer train them together (section 2: "we train the generator
and discriminator jointly", minimising L_MLM + lambda L_Disc). The forward pass, for the masked inputs x^masked that
`lmx.data.masking.electra_mask` makes (15% of the tokens [MASK]ed, their originals in encoder_target_tokens):
  1. Shared embeddings: token + position (+ token-type) tables and their LayerNorm, of the discriminator's embedding
     width E (section 3.1 "Weight sharing": with a smaller generator only the embeddings are shared, "the size of
     the discriminator's hidden states"; E < D factorises them as ALBERT does, ELECTRA-Small's E = 128).
  2. Generator: the shared embeddings of x^masked, projected E -> its width, its blocks (the discriminator's depth,
     width, heads and MLP scaled by `generator_size_fraction`: appendix A, table 6), BERT's MLM head (dense to E,
     GELU, LayerNorm) read out through the shared token table plus its own bias: logits [B, L, V].
  3. Sampling: at each masked position a token drawn from the generator's softmax (categorical, i.e. Gumbel-max,
     rng stream "sample"); integers carry no gradient, so the discriminator's loss never reaches the generator
     through the samples (section 2: "we do not back-propagate the discriminator loss through the generator").
  4. x^corrupt = the samples at the masked positions, the input elsewhere. Labels: replaced = (x^corrupt != the
     original), so a sample equal to the original counts as real (section 2).
  5. Discriminator: EncoderOnly's embedder and encoder on x^corrupt, then the released code's head (dense, GELU,
     dense to one logit per token; the paper writes a single sigmoid(w^T h)): logits [B, L].
The losses (generator cross-entropy over masked tokens + lambda x binary cross-entropy over all non-pad tokens) are
`lmx.objectives.OBJECTIVES["rtd"]`.

Parameter tree (scan_layers=True). The discriminator subtree has EncoderOnly's layout for what they share (embedder,
encoder), so `discriminator_params` + `encoder_only_config` give an encoder-only checkpoint for fine-tuning
(`lmx.convert.electra`):
  discriminator/embedder/{token_embedder, position_embedder, token_type_embedder}/embedding [*, E],
  discriminator/embedder/embedding_norm, discriminator/embedder/embedding_projection [E, D]   (when E < D)
  discriminator/encoder/layers/...                                     D-wide blocks
  discriminator/rtd_transform/{kernel [D, D], bias}, discriminator/rtd_output/{kernel [D, 1], bias}
  generator/embedding_projection/{kernel [E, G], bias}                 (when E != G, the generator width)
  generator/encoder/layers/...                                         G-wide blocks
  generator/mlm_transform/{kernel [G, E], bias}, generator/mlm_norm, generator/mlm_bias [vocab]

Outputs: logits [B, L, V] (the generator's, float32), discriminator_logits [B, L] float32, replaced [B, L] int32,
corrupted [B, L] int32 (the discriminator's input), aux (both stacks' layers).
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx import config_lib
from lmx.config_lib import ConfigError
from lmx.models.attention import mask_to_bias, self_attention_mask
from lmx.models.embeddings import Embedder, stream_inputs
from lmx.models.encoder_only import EncoderStack
from lmx.models.init import Inits
from lmx.models.layers import DenseGeneral, Norm, activation, dtype_of
from lmx.models.transformer import check_remat_policy

Array = jax.Array

# Evaluation calls the model without a "sample" stream: its samples then come from this fixed key, so every
# evaluation replaces the same tokens of the same batches and evaluations compare.
EVAL_SAMPLE_SEED = 0


def generator_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The generator's model config: the discriminator's (`config`, the config.model section) with its width, heads
    and MLP size multiplied by `generator_size_fraction` (ELECTRA appendix A, table 6: "multiplier for hidden-size,
    FFN-size, and num-attention-heads"; 1/4 for Small and Large, 1/3 for Base), the same depth, and heads of
    width / heads features, as in BERT-style configs. Raises ConfigError for a generator it cannot build."""
    f = config.generator_size_fraction
    if not 0 < f <= 1:
        raise ConfigError(
            f"config.model.generator_size_fraction={f} would make the generator larger than the discriminator (or "
            "empty); ELECTRA's is 1/4 to 1/2 of its size (section 3.2): choose a fraction in (0, 1]"
        )
    width, mlp = round(config.embed_dim * f), round(config.mlp_dim * f)
    heads = max(1, round(config.num_heads * f))
    kv_heads = max(1, round(config.num_kv_heads * f)) if config.num_kv_heads else 0
    if width < 1 or mlp < 1 or width % heads or (kv_heads and heads % kv_heads):
        raise ConfigError(
            f"config.model.generator_size_fraction={f} gives the generator width {width}, {heads} heads"
            f"{f' ({kv_heads} key/value heads)' if kv_heads else ''} and MLP {mlp}; choose a fraction whose width is "
            "at least 1 and divisible by its heads (e.g. 0.25 of a discriminator with a multiple of 4 heads)"
        )
    generator = ml_collections.ConfigDict(config.to_dict())
    generator.embed_dim, generator.mlp_dim = width, mlp
    generator.num_heads, generator.head_dim, generator.num_kv_heads = heads, width // heads, kv_heads
    generator.embed_proj_dim = 0  # the shared embeddings' projection to the generator's width is its own
    return generator


class Generator(nn.Module):
    """The small MLM encoder: shared embeddings [B, L, E] -> its width G -> its blocks -> BERT's MLM head, whose
    output is read out through the shared token table by the caller."""

    config: ml_collections.ConfigDict  # generator_config(the model config)
    embed_width: int  # E, the width of the shared embeddings

    @nn.compact
    def __call__(self, embedded: Array, context: dict, *, deterministic: bool) -> tuple[Array, Array, dict]:
        """-> (hidden [B, L, E] to multiply with the token table, output bias [V], aux)."""
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        inits = Inits.of(cfg)
        x = embedded
        if cfg.embed_dim != self.embed_width:  # the released code's "embeddings_project" of the generator
            x = DenseGeneral(
                cfg.embed_dim,
                (None, "embed"),
                kernel_init=inits.kernel((self.embed_width,), (cfg.embed_dim,)),
                use_bias=cfg.use_bias,
                dtype=dtype,
                name="embedding_projection",
            )(x)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))  # [B, L, G]
        x, aux = EncoderStack(cfg, name="encoder")(x, context, deterministic=deterministic)
        h = DenseGeneral(
            self.embed_width,
            ("embed", None),
            kernel_init=inits.kernel((cfg.embed_dim,), (self.embed_width,)),
            use_bias=True,
            dtype=dtype,
            name="mlm_transform",
        )(x)
        h = Norm(cfg.norm_epsilon, cfg.norm, dtype, name="mlm_norm")(activation(cfg.mlp_activations[0])(h))
        bias = self.param(
            "mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)), (cfg.vocab_size,)
        )
        return h, bias, aux


class Discriminator(nn.Module):
    """EncoderOnly's embedder and encoder (same names, so its checkpoint layout) and the replaced-token head."""

    config: ml_collections.ConfigDict  # the model config

    def setup(self):
        cfg = self.config
        dtype, inits = dtype_of(cfg.dtype), Inits.of(cfg)
        self.embedder = Embedder(cfg)
        self.encoder = EncoderStack(cfg)
        self.rtd_transform = DenseGeneral(
            cfg.embed_dim,
            ("embed", None),
            kernel_init=inits.kernel((cfg.embed_dim,), (cfg.embed_dim,)),
            use_bias=True,
            dtype=dtype,
        )
        self.rtd_output = DenseGeneral(
            1, ("embed", None), kernel_init=inits.kernel((cfg.embed_dim,), (1,)), use_bias=True, dtype=dtype
        )

    def __call__(
        self, tokens: Array, positions: Array, token_types: Array | None, context: dict, *, deterministic: bool
    ) -> tuple[Array, dict]:
        """tokens [B, L] -> (one "replaced" logit per token [B, L] float32, aux)."""
        x = self.embedder(tokens, positions, token_types, deterministic=deterministic)  # [B, L, D]
        x, aux = self.encoder(x, context, deterministic=deterministic)
        h = activation(self.config.mlp_activations[0])(self.rtd_transform(x))  # [B, L, D]
        return self.rtd_output(h)[..., 0].astype(jnp.float32), aux


class Electra(nn.Module):
    """The model contract: `__call__(batch) -> {"logits", "discriminator_logits", "replaced", "corrupted", "aux"}`.

    Reads encoder_input_tokens (masked), encoder_target_tokens (the originals), encoder_loss_weights (the masked
    positions), and when present encoder_segment_ids, encoder_positions, encoder_token_types.
    """

    config: ml_collections.ConfigDict  # the config.model section (the discriminator's dimensions)

    def setup(self):
        cfg = self.config
        check_remat_policy(cfg.remat_policy)
        self.discriminator = Discriminator(cfg)
        self.generator = Generator(generator_config(cfg), cfg.embed_proj_dim or cfg.embed_dim)

    def __call__(self, batch: Mapping[str, Array], *, enable_dropout: bool = False) -> dict:
        cfg, deterministic = self.config, not enable_dropout
        tokens, segments, positions = stream_inputs(batch, "encoder")  # [B, L] each
        if tokens.shape[1] > cfg.max_length:
            raise ValueError(
                f"encoder_input_tokens has length {tokens.shape[1]} > config.model.max_length={cfg.max_length}"
            )
        token_types = batch.get("encoder_token_types")
        selected = batch["encoder_loss_weights"] > 0  # [B, L] the masked positions the generator fills
        context = {
            "self_bias": mask_to_bias(self_attention_mask(segments, causal=False)),  # [B, 1, L, L]
            "positions": positions,
            "segment_ids": segments,
        }
        # 1-2. The generator reads the masked input through the shared embeddings.
        embedder = self.discriminator.embedder
        embedded = embedder.embed(tokens, positions, token_types, deterministic=deterministic)  # [B, L, E]
        hidden, bias, generator_aux = self.generator(embedded, context, deterministic=deterministic)
        logits = nn.with_logical_constraint(embedder.attend(hidden) + bias, ("batch", "length", "vocab"))
        logits = logits.astype(jnp.float32)  # [B, L, V]
        # 3-4. Samples replace the masked tokens; no gradient flows through them.
        key = self.make_rng("sample") if self.has_rng("sample") else jax.random.key(EVAL_SAMPLE_SEED)
        samples = jax.random.categorical(key, jax.lax.stop_gradient(logits), axis=-1).astype(tokens.dtype)  # [B, L]
        corrupted = jnp.where(selected, samples, tokens)
        replaced = (corrupted != batch["encoder_target_tokens"]).astype(jnp.int32)
        # 5. The discriminator labels every token.
        discriminator_logits, aux = self.discriminator(
            corrupted, positions, token_types, context, deterministic=deterministic
        )
        for name, values in generator_aux.items():  # auxiliary losses of both stacks, layer by layer
            aux = {**aux, name: jnp.concatenate([values, aux[name]]) if name in aux else values}
        return {
            "logits": logits,
            "discriminator_logits": discriminator_logits,
            "replaced": replaced,
            "corrupted": corrupted,
            "aux": aux,
        }


def discriminator_params(params: Mapping) -> dict:
    """The discriminator's parameters that EncoderOnly also has ({"embedder", "encoder"}, the same layout): what
    fine-tuning an encoder-only model from an ELECTRA run reads (ELECTRA fine-tunes the discriminator alone)."""
    discriminator = params["discriminator"]
    return {"embedder": discriminator["embedder"], "encoder": discriminator["encoder"]}


def encoder_only_config(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The encoder-only model config of the discriminator of `model_config` (an "electra" config.model)."""
    config = ml_collections.ConfigDict(model_config.to_dict())
    config.name = "encoder_only"
    # ELECTRA's own field back at the base value, which options.FAMILY_OPTIONS requires of other families
    config.generator_size_fraction = config_lib.base_config().model.generator_size_fraction
    return config
