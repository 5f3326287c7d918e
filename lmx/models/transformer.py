"""The Transformer block of every family and the stack that repeats it (scanned or unrolled, rematerialised,
shared across layers), with auxiliary outputs (MoE losses) that survive `nn.scan`.

One `Block` covers all families: pre-norm (T5, GPT-2, the modern decoder) or post-norm (BERT, ALBERT); self-attention
that is bidirectional, causal or locally banded; optional cross-attention (T5's decoder); a dense MLP or a
mixture-of-experts layer. Its children keep T5's names, so T5 checkpoints and mappings do not depend on the family:
  {pre,post}_self_attention_layer_norm, self_attention, {pre,post}_cross_attention_layer_norm,
  encoder_decoder_attention, {pre,post}_mlp_layer_norm, mlp
A block returns (x, aux): aux maps names to float32 scalars (empty for a dense block); the stack returns each name's
values of every layer that produced it, in layer order ([num_layers_with_it]).

Layer patterns: a stack may repeat a *period* of different layers (GPT-3 alternates dense and banded attention;
Switch puts experts in every other MLP). Scanned, the period is one `Period` module of `period` blocks (children
sub_0, sub_1, ...) scanned num_layers / period times, so the compiled program holds each kind of block once.
Unrolled, the blocks are layers_0, layers_1, ... whatever the period.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.models.attention import MultiHeadAttention, add_position_bias
from lmx.models.init import Inits
from lmx.models.layers import Mlp, Norm, dtype_of

Array = jax.Array
Aux = dict[str, Array]

# remat_policy -> what the backward pass may keep from the forward pass (everything else is recomputed).
# "none" = no rematerialisation at all; "full" = keep only the block inputs.
REMAT_POLICIES = {
    "none": None,
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}

# Random streams split per layer (each layer draws its own dropout mask and router jitter).
LAYER_RNGS = ("params", "dropout", "jitter")


def check_remat_policy(name: str) -> None:
    if name not in REMAT_POLICIES:
        raise ValueError(f"config.model.remat_policy={name!r} is unknown; choose one of {sorted(REMAT_POLICIES)}")


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """What varies between the layers of one stack."""

    banded: bool = False  # locally banded causal self-attention (GPT-3) instead of dense
    moe: bool = False  # a mixture-of-experts MLP instead of the dense one


def layer_pattern(config: ml_collections.ConfigDict, num_layers: int, *, causal: bool) -> tuple[LayerKind, ...]:
    """The period of layer kinds a stack repeats (length 1 for a uniform stack); it divides num_layers."""
    banded_period = 2 if causal and config.attention_pattern == "alternating_banded" else 1
    moe_every = config.moe.moe_every if config.moe.num_experts > 0 else 0
    period = math.lcm(banded_period, max(moe_every, 1))
    if num_layers % period:
        raise ValueError(
            f"a stack of {num_layers} layers cannot repeat a pattern of {period} layers (banded attention every "
            f"{banded_period}, experts every {moe_every or '-'}); make the number of layers a multiple of {period}"
        )
    # Layer 0 is dense in both patterns: banded attention on odd layers; experts on layers moe_every - 1,
    # 2 moe_every - 1, ... (Switch's "every other FFN" puts them at 1, 3, 5, ... as the released checkpoints do).
    return tuple(
        LayerKind(banded=banded_period == 2 and i % 2 == 1, moe=moe_every > 0 and i % moe_every == moe_every - 1)
        for i in range(period)
    )


class Block(nn.Module):
    """One Transformer layer. context: the inputs every layer shares (broadcast through scan): self_bias
    [B, 1, L, L] (the mask as an additive bias), position_bias [1, N, L, L] (T5 only), positions [B, L],
    segment_ids [B, L], and for cross-attention encoded [B, S, D] and cross_bias [B, 1, L, S]."""

    config: ml_collections.ConfigDict
    deterministic: bool
    causal: bool
    cross_attention: bool = False
    kind: LayerKind = LayerKind()
    decode: bool = False  # keys and values in the "cache" collection (MultiHeadAttention, lmx.inference.decode)

    @nn.compact
    def __call__(self, x: Array, context: dict[str, Array]) -> tuple[Array, Aux]:
        # x: [B, L, D] -> ([B, L, D], aux)
        cfg, dtype = self.config, dtype_of(self.config.dtype)
        inits = Inits.of(cfg)
        pre = cfg.norm_position == "pre"

        def norm(name):
            return Norm(cfg.norm_epsilon, cfg.norm, dtype, name=f"{'pre' if pre else 'post'}_{name}_layer_norm")

        def attention(name, rotary):
            return MultiHeadAttention(
                cfg.num_heads,
                cfg.head_dim,
                cfg.dropout_rate,
                num_kv_heads=cfg.num_kv_heads,
                use_bias=cfg.use_bias,
                scale_logits=cfg.scale_attention_logits,
                rotary_theta=cfg.rope_theta if rotary else 0.0,
                inits=inits,
                dtype=dtype,
                name=name,
            )

        def dropout(h):
            return nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)

        def residual(x, name, sublayer):
            # Pre-norm: x + f(norm(x)), the stack ends with a norm. Post-norm (BERT): norm(x + f(x)).
            if pre:
                out, aux = sublayer(norm(name)(x))
                return x + dropout(out), aux
            out, aux = sublayer(x)
            return norm(name)(x + dropout(out)), aux

        rotary = cfg.position_embedding == "rotary"
        band = cfg.attention_band if self.kind.banded else 0

        def self_attention(h):
            bias = None
            if not band or self.decode:  # banded layers build their block masks from the segment ids, except decoding
                bias = context["self_bias"]
                if "position_bias" in context:  # T5: added per layer, whose gradient is a cheap dot (attention.py)
                    bias = add_position_bias(bias, context["position_bias"])
            out = attention("self_attention", rotary)(
                h,
                h,
                bias,
                deterministic=self.deterministic,
                positions=context["positions"],
                band=band,
                segment_ids=context["segment_ids"],
                decode=self.decode,
                cache_index=context.get("cache_index"),
            )
            return out, {}

        def cross_attention(h):
            # Decoding passes `encoded` on the first call only; later calls read its cached keys and values.
            return attention("encoder_decoder_attention", False)(
                h, context.get("encoded"), context["cross_bias"], deterministic=self.deterministic, decode=self.decode
            ), {}

        def mlp(h):
            if self.kind.moe:
                from lmx.models.moe import MoeMlp  # the sparse MLP; imported here: only MoE configs need it

                return MoeMlp(cfg, causal=self.causal, name="mlp")(h, deterministic=self.deterministic)
            out = Mlp(
                cfg.mlp_dim,
                tuple(cfg.mlp_activations),
                cfg.dropout_rate,
                use_bias=cfg.use_bias,
                inits=inits,
                dtype=dtype,
                name="mlp",
            )(h, deterministic=self.deterministic)
            return out, {}

        x, _ = residual(x, "self_attention", self_attention)
        if self.cross_attention:
            x, _ = residual(x, "cross_attention", cross_attention)
        x, aux = residual(x, "mlp", mlp)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), aux


class Period(nn.Module):
    """The blocks of one period of a patterned stack, sub_0 .. sub_{p-1}; aux values stacked per name."""

    config: ml_collections.ConfigDict
    deterministic: bool
    causal: bool
    cross_attention: bool
    kinds: tuple[LayerKind, ...]
    decode: bool = False

    @nn.compact
    def __call__(self, x: Array, context: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        collected: dict[str, list[Array]] = {}
        for i, kind in enumerate(self.kinds):
            block = Block(
                self.config, self.deterministic, self.causal, self.cross_attention, kind, self.decode, name=f"sub_{i}"
            )
            x, aux = block(x, context)
            for name, value in aux.items():
                collected.setdefault(name, []).append(value)
        return x, {name: jnp.stack(values) for name, values in collected.items()}


def run_stack(
    config: ml_collections.ConfigDict,
    num_layers: int,
    x: Array,
    context: dict[str, Array],
    *,
    deterministic: bool,
    causal: bool,
    cross_attention: bool = False,
    decode: bool = False,
) -> tuple[Array, dict[str, Array]]:
    """Applies `num_layers` blocks to x; call it inside a compact method (the blocks become that module's children).

    scan_layers: one block (or one period of blocks) traced once and scanned, parameters stacked on a leading
    `layers` axis: compile time does not grow with depth. share_layers (ALBERT): one block's parameters applied
    num_layers times (broadcast through the scan, not stacked). Otherwise unrolled as layers_0, layers_1, ...
    decode: the blocks keep keys and values in the "cache" collection (stacked on the `layers` axis like the
    parameters when scanned); no rematerialisation (decoding has no backward pass).
    Returns (x, aux) with aux[name] = [layers that produced name] float32.
    """
    check_remat_policy(config.remat_policy)
    kinds = layer_pattern(config, num_layers, causal=causal)
    period = len(kinds)
    repeats = num_layers // period

    def remat(module_cls):
        if config.remat_policy == "none" or decode:
            return module_cls
        # prevent_cse is only needed outside scan (scan already stops XLA from merging the recomputation away).
        return nn.remat(module_cls, policy=REMAT_POLICIES[config.remat_policy], prevent_cse=not config.scan_layers)

    # The unit a scan (or ALBERT's sharing) repeats: one block, or one period of blocks.
    unit = remat(Block if period == 1 else Period)
    unit_args = (config, deterministic, causal, cross_attention, kinds[0] if period == 1 else kinds, decode)

    if config.share_layers:  # ALBERT: one set of parameters applied `repeats` times
        if decode:
            raise ValueError("config.model.share_layers=True stacks cannot decode: their layers share one KV cache")
        if config.scan_layers:
            shared = nn.scan(
                unit,
                variable_broadcast="params",
                split_rngs={"params": False, "dropout": True, "jitter": True},
                in_axes=(nn.broadcast,),
                length=repeats,
            )(*unit_args, name="shared_layer")
            x, aux = shared(x, context)  # aux[name]: [repeats] or [repeats, per period]
            return x, {name: value.reshape(-1) for name, value in aux.items()}
        shared = unit(*unit_args, name="shared_layer")
        auxes = []
        for _ in range(repeats):
            x, aux = shared(x, context)
            auxes.append(aux)
        return x, _concatenate(auxes, per_period=period > 1)

    if config.scan_layers:
        stack = nn.scan(
            unit,
            variable_axes={"params": 0, "cache": 0},
            split_rngs={rng: True for rng in LAYER_RNGS},
            in_axes=(nn.broadcast,),
            length=repeats,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(*unit_args, name="layers")
        x, aux = stack(x, context)  # aux[name]: [repeats] or [repeats, per period]; row-major = layer order
        return x, {name: value.reshape(-1) for name, value in aux.items()}
    auxes = []
    for i in range(num_layers):
        block = remat(Block)(
            config, deterministic, causal, cross_attention, kinds[i % period], decode, name=f"layers_{i}"
        )
        x, aux = block(x, context)
        auxes.append(aux)
    return x, _concatenate(auxes, per_period=False)


def _concatenate(auxes: list[Aux], *, per_period: bool) -> dict[str, Array]:
    """Per-call aux dicts (scalars, or [per period] arrays) -> name: values of every layer, in layer order."""
    names = sorted({name for aux in auxes for name in aux})
    join = jnp.concatenate if per_period else jnp.stack
    return {name: join([aux[name] for aux in auxes if name in aux]) for name in names}


def unstack_scanned_params(params: Any) -> Any:
    """Converts a scan_layers=True param tree to the scan_layers=False layout: `layers` [R, ...] -> layers_0..;
    a scanned period (`layers/sub_j` [R, ...]) -> layers_{r * period + j}.

    Accepts boxed (nn.Partitioned) or plain trees and returns a plain tree. Used by tests and checkpoint conversion.
    """
    params = nn.unbox(params)

    def convert(tree):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for key, value in tree.items():
            if key == "layers" and isinstance(value, dict):
                subs = sorted((k for k in value if k.startswith("sub_")), key=lambda k: int(k.split("_")[1]))
                periods = [value[k] for k in subs] if subs and len(subs) == len(value) else [value]
                repeats = jax.tree.leaves(periods[0])[0].shape[0]
                for r in range(repeats):
                    for j, sub in enumerate(periods):
                        out[f"layers_{r * len(periods) + j}"] = jax.tree.map(lambda a, r=r: a[r], sub)
            else:
                out[key] = convert(value)
        return out

    return convert(dict(params))


def stack_unrolled_params(params: Any, period: int = 1) -> Any:
    """Inverse of unstack_scanned_params: layers_0..L-1 -> `layers` (period 1) or `layers/sub_j` (plain tree)."""
    params = nn.unbox(params)

    def convert(tree):
        if not isinstance(tree, dict):
            return tree
        layer_keys = sorted((k for k in tree if k.startswith("layers_")), key=lambda k: int(k.split("_")[1]))
        out = {k: convert(v) for k, v in tree.items() if not k.startswith("layers_")}
        if layer_keys:

            def stacked(keys):
                return jax.tree.map(lambda *a: jnp.stack(a), *(tree[k] for k in keys))

            if period == 1:
                out["layers"] = stacked(layer_keys)
            else:
                out["layers"] = {f"sub_{j}": stacked(layer_keys[j::period]) for j in range(period)}
        return out

    return convert(dict(params))
