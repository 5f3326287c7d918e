"""Which model options each family has, checked before anything is built (one line naming the field and the fix).

A family option is off at its "off" value; setting it in a family that lacks it is refused rather than ignored, so a
config never silently trains a different model than it describes.
"""

from __future__ import annotations

import ml_collections

from lmx.models.init import INIT_SCHEMES
from lmx.models.layers import ACTIVATIONS, NORMS

# field -> (its "off" value, the families that have the option)
FAMILY_OPTIONS = {
    "num_encoder_layers": (0, ("encoder_decoder", "encoder_only", "electra", "xlnet")),
    "num_decoder_layers": (0, ("encoder_decoder", "decoder_only")),
    "embed_proj_dim": (0, ("encoder_only", "electra")),  # ALBERT's factorised embedding (its MLM head maps back to E)
    "share_layers": (False, ("encoder_only",)),  # ALBERT's cross-layer sharing
    "type_vocab_size": (0, ("encoder_only", "electra")),  # BERT's segment A/B embeddings
    "generator_size_fraction": (0.25, ("electra",)),  # the ELECTRA generator's size
    "attention_pattern": ("dense", ("decoder_only",)),  # GPT-3's banded layers are causal
    "mem_len": (0, ("xlnet",)),  # Transformer-XL memory carried across steps
}
# field -> {family: the values it supports}
FAMILY_CHOICES = {
    "position_embedding": {
        "encoder_decoder": ("relative",),
        "decoder_only": ("learned", "rotary"),
        "encoder_only": ("learned", "rotary"),
        "electra": ("learned", "rotary"),
        "xlnet": ("relative_sinusoidal",),
    },
    "norm_position": {
        "encoder_decoder": ("pre",),
        "decoder_only": ("pre",),
        "encoder_only": ("pre", "post"),
        "electra": ("pre", "post"),
        "xlnet": ("post",),
    },
    # BERT's MLM head always reads out through the token embedding (the encoder-only model has no untied output)
    "tie_embeddings": {
        "encoder_decoder": (True, False),
        "decoder_only": (True, False),
        "encoder_only": (True,),
        "electra": (True,),
        "xlnet": (True,),  # its output layer is the token table (+ a bias)
    },
}
ATTENTION_PATTERNS = ("dense", "alternating_banded")


def check_model_config(m: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming `config.model.<field>`, its value and the fix for options that cannot go together."""
    family = m.name
    for field, (off, families) in FAMILY_OPTIONS.items():
        if family not in families and m[field] != off:
            raise ValueError(
                f"config.model.{field}={m[field]!r} is an option of {list(families)}, not of config.model.name="
                f"{family!r}; set it to {off!r}"
            )
    for field, by_family in FAMILY_CHOICES.items():
        allowed = by_family.get(family, ())
        if m[field] not in allowed:
            raise ValueError(
                f"config.model.{field}={m[field]!r} is not available for {family!r}; choose one of {list(allowed)}"
            )
    for field, families in (
        ("num_encoder_layers", ("encoder_decoder", "encoder_only", "electra", "xlnet")),
        ("num_decoder_layers", ("encoder_decoder", "decoder_only")),
    ):
        if family in families and m[field] < 1:
            raise ValueError(f"config.model.{field}={m[field]} must be at least 1 for {family!r}")
    if m.num_kv_heads and (m.num_kv_heads < 0 or m.num_heads % m.num_kv_heads):
        raise ValueError(
            f"config.model.num_kv_heads={m.num_kv_heads} must divide config.model.num_heads={m.num_heads} "
            "(0 = one key/value head per query head)"
        )
    if m.attention_pattern not in ATTENTION_PATTERNS:
        raise ValueError(
            f"config.model.attention_pattern={m.attention_pattern!r} is unknown; "
            f"choose one of {list(ATTENTION_PATTERNS)}"
        )
    if m.attention_pattern == "alternating_banded" and m.attention_band < 1:
        raise ValueError(
            f"config.model.attention_band={m.attention_band} must be at least 1 with attention_pattern="
            "'alternating_banded' (GPT-3 used 256)"
        )
    if m.position_embedding == "rotary" and m.head_dim % 2:
        raise ValueError(f"config.model.head_dim={m.head_dim} must be even for rotary positions (they rotate pairs)")
    if m.norm not in NORMS:
        raise ValueError(f"config.model.norm={m.norm!r} is unknown; choose one of {list(NORMS)}")
    if m.init not in INIT_SCHEMES:
        raise ValueError(f"config.model.init={m.init!r} is unknown; choose one of {list(INIT_SCHEMES)}")
    if m.moe.num_experts:
        from lmx.models.moe import check_moe_config  # expert choice would let a causal stack see later tokens

        check_moe_config(m.moe, causal=m.num_decoder_layers > 0)
    if family == "electra":
        from lmx.models.electra import generator_config  # refuses a generator it cannot build

        generator_config(m)
    if family == "xlnet":
        from lmx.models.xlnet import check_xlnet_config

        check_xlnet_config(m)
    unknown = [a for a in m.mlp_activations if a not in ACTIVATIONS]
    if unknown or not m.mlp_activations:
        raise ValueError(
            f"config.model.mlp_activations={tuple(m.mlp_activations)!r} must name one or more of {sorted(ACTIVATIONS)}"
        )
