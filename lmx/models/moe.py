"""The mixture-of-experts MLP (Switch Transformer, GShard, ST-MoE, expert choice): `MoeMlp`.

Routing, step by step (the steps live in `lmx.models.routing`, each tested on its own):
  1. Groups (GShard section 2.2, "local group dispatching"): the B x L tokens are cut into G groups of S tokens
     (S = config.moe.group_size, or one group per sequence when it is 0). Capacity, priorities and the load-balancing
     loss are per group, so no step needs a global view of the batch.
  2. Router (Switch section 2.4): logits [G, S, E] = tokens x W_r in float32 ("selective precision"), W_r truncated
     normal with variance 0.1 / D; in training the input is multiplied by uniform noise in [1 - eps, 1 + eps]
     (Mesh TensorFlow's Switch router; the "input jitter" of ST-MoE section 3).
     probs = softmax(logits) over the experts.
  3. Choice. top1 (Switch): each token's argmax expert, gate = its probability. top2 (GShard algorithm 1): the two
     best experts, gates renormalised to sum to 1; the second is kept with probability 2 g_2 ("random" policy;
     always at evaluation) or always ("all"). expert_choice (Zhou et al. 2022): each expert takes its C best tokens
     (not in causal stacks: a token's output would depend on later tokens).
  4. Capacity (Switch eq. 3): C = ceil(k x capacity_factor x S / E) slots per expert and group (k = 2 for top2,
     GShard's 2N/E; separate train and eval factors), at least min_capacity, at most S.
  5. Slots (token choice): every first choice before any second choice; within a choice left to right or by the
     token's top probability ("batch-prioritised routing", V-MoE). An assignment past slot C is dropped; a token no
     expert processes has a zero output, so only the residual carries it on.
  6. Dispatch [G, S, E, C] one-hot and combine [G, S, E, C] = dispatch x gate (GShard); expert inputs
     [E, G, C, D] = einsum(dispatch, tokens); the experts run as one vmapped `Mlp`; the output is
     einsum(combine, expert outputs). Gradients reach the router only through the gates.
  7. Losses, returned unweighted: Switch's load-balancing loss N sum_i f_i P_i (eq. 4, per group, averaged; zero for
     expert choice, balanced by construction) and ST-MoE's router z-loss (eq. 5); and the metrics of
     `routing.routing_metrics`.
Dropless (config.moe.dropless, top1/top2): no capacity; the T x k assignments are sorted by expert and the experts
run as two (three, gated) `jax.lax.ragged_dot`s over the sorted rows (MegaBlocks' idea, Gale et al. 2022). Every
assignment is computed, unselected top2 second choices with weight 0. GSPMD has no expert-parallel partitioning of
ragged_dot (it gathers the expert weights instead of moving tokens), so dropless is for meshes with expert = 1; and
XLA:CPU lowers ragged_dot to a masked dense product over all E experts (8 experts: ~8x a dense matmul of the same
useful FLOPs, measured), so on CPU dropless is a correctness reference more than a fast path.

Expert parallelism: expert weights carry the `expert` logical axis on their leading dim; activations before dispatch
are [groups -> "batch", ...], after it [E -> "expert", G -> "batch", C -> "capacity", D -> "embed"]. When the rules
map `batch` to the data axes *and* the expert axis (with a fallback without it for tensors whose expert dim already
took that axis) the expert mesh axis splits the groups before dispatch and the experts after it, so GSPMD turns each
einsum's resharding into an all-to-all over that axis, as in GShard's implementation (section 3).

Why dropless does not call `Mlp`: ragged_dot contracts each row with the kernel of its own expert, which a vmapped
dense `Mlp` cannot express. `RaggedExperts` therefore declares exactly the parameters of the vmapped `Mlp` (names
wi / wi_i / wo, kernels [E, in, out], biases [E, out], logical axes, per-expert initialisers), so a checkpoint moves
between the two modes unchanged; its forward pass is `Mlp`'s with ragged_dot for the matmuls.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lmx.config_lib import ConfigError
from lmx.models import routing
from lmx.models.init import Initializer, Inits
from lmx.models.layers import Mlp, activation, dtype_of
from lmx.sharding import mesh_axes_of

Array = jax.Array

# Router name -> choices per token (the k of the capacity formula; expert choice has no fixed k, its capacity uses 1).
ROUTERS = {"top1": 1, "top2": 2, "expert_choice": 1}
SECOND_EXPERT_POLICIES = ("random", "all")
PRIORITIES = ("position", "probability")


def check_moe_config(moe: ml_collections.ConfigDict, *, causal: bool) -> None:
    """Raises ConfigError naming the value and the fix for a `config.model.moe` section that cannot work here.

    Ranges of single fields are config_lib.FIELDS' job; this checks the names (so the module fails clearly on a
    config that skipped FIELDS) and what depends on several fields or on the stack (`causal`).
    """

    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"config.model.moe.{field}={moe[field]!r} {why}")

    for field, valid in (
        ("router", ROUTERS),
        ("second_expert_policy", SECOND_EXPERT_POLICIES),
        ("priority", PRIORITIES),
    ):
        if moe[field] not in valid:
            raise bad(field, f"is unknown; choose one of {list(valid)}")
    if moe.num_experts < max(ROUTERS[moe.router], 1):
        raise bad("num_experts", f"is too few for router={moe.router!r}; use at least {max(ROUTERS[moe.router], 1)}")
    if moe.dropless and moe.router == "expert_choice":
        raise bad("dropless", "needs a router with a fixed number of experts per token (top1, top2), not expert_choice")
    if causal and moe.router == "expert_choice":
        raise bad(
            "router",
            "is not allowed in a causal (decoder) stack: each expert picks among all tokens of a group, so a "
            "token's output would depend on later tokens; use top1 or top2 there",
        )


# Family -> its stacks in the order the model returns their aux values (lmx.models: encoder layers before decoder
# layers; ELECTRA's generator before its discriminator), with the config field of each stack's depth and whether it is
# causal.
AUX_STACKS = {
    "encoder_decoder": (("encoder", "num_encoder_layers", False), ("decoder", "num_decoder_layers", True)),
    "decoder_only": (("decoder", "num_decoder_layers", True),),
    "encoder_only": (("encoder", "num_encoder_layers", False),),
    "electra": (("generator", "num_encoder_layers", False), ("discriminator", "num_encoder_layers", False)),
}


def moe_layer_names(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The MoE layers of a model, in the order of its aux values: "<stack>_layer_<index in the stack>", e.g.
    ("encoder_layer_1", "encoder_layer_3", "decoder_layer_1", ...) for Switch's experts in every other layer."""
    from lmx.models.transformer import layer_pattern  # transformer imports this module when it builds a MoE block

    if model_config.moe.num_experts == 0:
        return ()
    if model_config.name not in AUX_STACKS:
        raise ValueError(f"lmx.models.moe.AUX_STACKS has no entry for config.model.name={model_config.name!r}")
    names = []
    for stack, depth_field, causal in AUX_STACKS[model_config.name]:
        depth = model_config[depth_field]
        kinds = layer_pattern(model_config, depth, causal=causal)
        names += [f"{stack}_layer_{i}" for i in range(depth) if kinds[i % len(kinds)].moe]
    return tuple(names)


def _per_expert(init: Initializer) -> Initializer:
    """An initialiser of [E, *shape] that draws each expert's slice with `init` and its own key, as nn.vmap does."""

    def stacked(key, shape, dtype=jnp.float32):
        return jax.vmap(lambda k: init(k, shape[1:], dtype))(jax.random.split(key, shape[0]))

    return stacked


class StackedDense(nn.Module):
    """The parameters of a DenseGeneral vmapped over experts (kernel [E, in, out], bias [E, out]), applied to rows
    sorted by expert with one ragged_dot: rows group_sizes[0] first use expert 0's kernel, and so on."""

    num_experts: int
    features: int
    kernel_axes: tuple[str, str, str]
    kernel_init: Initializer
    use_bias: bool
    dtype: jnp.dtype
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, group_sizes: Array, expert_of_row: Array) -> Array:
        # x: [N, in] sorted by expert; group_sizes: [E]; expert_of_row: [N] -> [N, out]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(_per_expert(self.kernel_init), self.kernel_axes),
            (self.num_experts, x.shape[-1], self.features),
            self.param_dtype,
        )
        y = jax.lax.ragged_dot(x.astype(self.dtype), kernel.astype(self.dtype), group_sizes)
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.kernel_axes[0], self.kernel_axes[-1])),
                (self.num_experts, self.features),
                self.param_dtype,
            )
            y = y + jnp.take(bias.astype(self.dtype), expert_of_row, axis=0)
        return y


class RaggedExperts(nn.Module):
    """`Mlp` of every expert over rows sorted by expert (dropless mode); parameters as the vmapped `Mlp`'s."""

    num_experts: int
    mlp_dim: int
    activations: tuple[str, ...]
    dropout_rate: float
    use_bias: bool
    inits: Inits
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: Array, group_sizes: Array, expert_of_row: Array, *, deterministic: bool) -> Array:
        # x: [N, D] -> [N, D]
        embed_dim = x.shape[-1]
        gated = len(self.activations) > 1
        h = None
        for i, name in enumerate(self.activations):
            wi = StackedDense(
                self.num_experts,
                self.mlp_dim,
                ("expert", "embed", "mlp"),
                self.inits.kernel((embed_dim,), (self.mlp_dim,)),
                self.use_bias,
                self.dtype,
                name=f"wi_{i}" if gated else "wi",
            )
            branch = activation(name)(wi(x, group_sizes, expert_of_row))  # [N, F]
            h = branch if h is None else h * branch
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        wo = StackedDense(
            self.num_experts,
            embed_dim,
            ("expert", "mlp", "embed"),
            self.inits.kernel((self.mlp_dim,), (embed_dim,), residual=True),
            self.use_bias,
            self.dtype,
            name="wo",
        )
        return wo(h, group_sizes, expert_of_row)


def _rules_without(mesh_axes: tuple[str, ...]) -> tuple:
    """The active logical-axis rules with `mesh_axes` removed from every rule (None where nothing is left)."""

    def strip(axes):
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        kept = tuple(a for a in axes if a not in mesh_axes)
        return kept or None

    return tuple((name, strip(axes)) for name, axes in nn.get_logical_axis_rules())


def _run_capacity_experts(
    experts: Mlp, tokens: Array, dispatch: Array, combine: Array, *, deterministic: bool
) -> Array:
    """Step 6: dispatch, the vmapped experts, combine. tokens [G, S, D]; dispatch, combine [G, S, E, C]."""
    dtype = experts.dtype
    # The routing tensors stay with their groups (computed there, never communicated).
    dispatch, combine = (
        nn.with_logical_constraint(t.astype(dtype), ("batch", "length", None, "capacity")) for t in (dispatch, combine)
    )
    expert_in = jnp.einsum("GSEC,GSD->EGCD", dispatch, tokens.astype(dtype))
    # Computed where the groups are, then moved: groups -> experts. With the expert mesh axis on the groups before
    # and on the experts after, the move is an all-to-all over that axis.
    expert_in = nn.with_logical_constraint(expert_in, (None, "batch", "capacity", "embed"))
    expert_in = nn.with_logical_constraint(expert_in, ("expert", "batch", "capacity", "embed"))
    # Inside the vmap the expert dim is invisible to the Mlp's own constraints: spmd_axis_name puts it on the expert
    # mesh axes, and the Mlp sees rules without those axes, so its `batch` (the groups) cannot claim them twice.
    expert_axes = mesh_axes_of("expert", nn.get_logical_axis_rules())
    spmd_axis_name = (expert_axes[0] if len(expert_axes) == 1 else expert_axes) if expert_axes else None
    run = nn.vmap(
        lambda mlp, h: mlp(h, deterministic=deterministic),  # nn.vmap passes no keyword arguments
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=0,
        out_axes=0,
        spmd_axis_name=spmd_axis_name,
        metadata_params={nn.PARTITION_NAME: "expert"},
    )
    with nn.logical_axis_rules(_rules_without(expert_axes)):
        expert_out = run(experts, expert_in)  # [E, G, C, D]
    expert_out = nn.with_logical_constraint(expert_out, ("expert", "batch", "capacity", "embed"))
    # Experts -> groups (the all-to-all back), so the combine einsum is local to each group.
    expert_out = nn.with_logical_constraint(expert_out, (None, "batch", "capacity", "embed"))
    return jnp.einsum("GSEC,EGCD->GSD", combine, expert_out)


def _run_dropless_experts(
    experts: RaggedExperts, tokens: Array, index: Array, weights: Array, *, deterministic: bool
) -> Array:
    """Dropless: tokens [G, S, D], index and weights [G, S, K] -> [G, S, D], every assignment computed."""
    num_groups, group_size, embed_dim = tokens.shape
    k = index.shape[-1]
    flat_tokens = tokens.reshape(num_groups * group_size, embed_dim)  # [T, D]
    flat_expert = index.reshape(-1)  # [T * K]: row r is choice r % K of token r // K
    order = jnp.argsort(flat_expert, stable=True)  # rows grouped by expert
    group_sizes = jnp.bincount(flat_expert, length=experts.num_experts).astype(jnp.int32)  # [E]
    y = experts(flat_tokens[order // k], group_sizes, flat_expert[order], deterministic=deterministic)  # [T * K, D]
    y = y[jnp.argsort(order)].reshape(num_groups, group_size, k, embed_dim)  # back to (token, choice) order
    return jnp.einsum("GSKD,GSK->GSD", y, weights.astype(y.dtype))


class MoeMlp(nn.Module):
    """The sparse MLP (module docstring). `config` is the model section (moe.*, mlp_dim, mlp_activations, use_bias,
    dtype and the init fields); `causal`: whether the stack is a causal decoder (refuses expert choice).

    __call__(x [B, L, D], deterministic) -> (y [B, L, D], aux), aux: float32 scalars moe_aux_loss, moe_z_loss
    (unweighted), moe_drop_fraction, moe_expert_load_max_over_mean, moe_router_entropy.
    Random streams: "jitter" (router noise, the top2 random policy), "dropout" (expert dropout).
    """

    config: ml_collections.ConfigDict
    causal: bool

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> tuple[Array, dict[str, Array]]:
        cfg, moe = self.config, self.config.moe
        check_moe_config(moe, causal=self.causal)
        dtype = dtype_of(cfg.dtype)
        batch, length, embed_dim = x.shape
        num_experts, k = moe.num_experts, ROUTERS[moe.router]

        # 1. Groups.
        group_size = moe.group_size or length
        if (batch * length) % group_size:
            raise ConfigError(
                f"config.model.moe.group_size={moe.group_size} does not divide the {batch * length} tokens of a "
                f"[{batch}, {length}] batch; use a divisor of batch x length, or 0 for one group per sequence"
            )
        tokens = x.reshape(-1, group_size, embed_dim)  # [G, S, D]
        tokens = nn.with_logical_constraint(tokens, ("batch", "length", "embed"))

        # 2. Router.
        router = routing.Router(num_experts, moe.jitter_eps, moe.router_init_scale, name="router")
        logits = router(tokens, deterministic=deterministic)  # [G, S, E] float32
        probs = jax.nn.softmax(logits, axis=-1)
        factor = moe.capacity_factor_eval if deterministic else moe.capacity_factor_train
        capacity = routing.expert_capacity(group_size, num_experts, k, factor, moe.min_capacity)

        def experts():
            return Mlp(
                cfg.mlp_dim,
                tuple(cfg.mlp_activations),
                moe.expert_dropout_rate,
                use_bias=cfg.use_bias,
                inits=Inits.of(cfg),
                dtype=dtype,
                name="experts",
            )

        # 3-6. Choice, capacity, slots, experts.
        if moe.router == "expert_choice":
            dispatch, combine = routing.expert_choice_dispatch(probs, capacity)
            balance_loss = jnp.zeros((), jnp.float32)  # every expert takes exactly C tokens
            load = jnp.sum(dispatch, axis=(0, 1, 3))  # [E]
            processed = jnp.sum(dispatch, axis=(2, 3)) > 0  # [G, S]
            y = _run_capacity_experts(experts(), tokens, dispatch, combine, deterministic=deterministic)
        else:
            uniform = None
            if k == 2 and moe.second_expert_policy == "random" and not deterministic:
                uniform = jax.random.uniform(self.make_rng("jitter"), probs.shape[:2], jnp.float32)  # [G, S]
                self.sow("intermediates", "second_expert_uniform", uniform)  # kept only when asked for (tests)
            index, gates, selected = routing.top_k_choices(probs, k, second_expert_uniform=uniform)  # [G, S, K]
            balance_loss = routing.load_balancing_loss(probs, index[..., 0])
            load = jnp.einsum("GSKE,GSK->E", jax.nn.one_hot(index, num_experts), selected.astype(jnp.float32))
            if moe.dropless:
                ragged = RaggedExperts(
                    num_experts,
                    cfg.mlp_dim,
                    tuple(cfg.mlp_activations),
                    moe.expert_dropout_rate,
                    cfg.use_bias,
                    Inits.of(cfg),
                    dtype,
                    name="experts",
                )
                processed = jnp.ones(probs.shape[:2], bool)
                y = _run_dropless_experts(ragged, tokens, index, gates * selected, deterministic=deterministic)
            else:
                scores = jnp.max(probs, axis=-1) if moe.priority == "probability" else None
                slots = routing.slot_positions(index, selected, num_experts, priority_scores=scores)
                dispatch, combine = routing.token_choice_dispatch(index, gates, selected, slots, num_experts, capacity)
                processed = jnp.sum(dispatch, axis=(2, 3)) > 0  # [G, S]
                y = _run_capacity_experts(experts(), tokens, dispatch, combine, deterministic=deterministic)

        # 7. Losses and metrics.
        self.sow("intermediates", "dropped", ~processed)  # [G, S]: tokens no expert took (kept only when asked for)
        aux = {"moe_aux_loss": balance_loss, "moe_z_loss": routing.router_z_loss(logits)}
        aux.update(routing.routing_metrics(probs, processed, load))
        y = y.reshape(batch, length, embed_dim).astype(dtype)
        return nn.with_logical_constraint(y, ("batch", "length", "embed")), aux
