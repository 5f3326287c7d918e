"""Routing of a mixture-of-experts layer: the router, token-choice and expert-choice assignment, expert capacity,
the auxiliary losses and the routing metrics. Pure functions of arrays (plus the `Router` module), so each step is
tested against a float64 numpy reference on its own; `lmx.models.moe` puts them together.

Shapes: G routing groups of S tokens, E experts, K choices per token (1: Switch, 2: GShard), C slots per expert
(the expert capacity). Everything here is float32 ("selective precision", Switch section 2.4), whatever the
activation dtype.

Slot assignment (`slot_positions`), as in GShard algorithm 1 and Switch section 2.2: the selected assignments
(token, choice) of a group are ranked choice-major (every first choice before any second choice, GShard), within a
choice by token position (left to right) or by the token's top router probability, highest first ("batch-prioritised
routing", V-MoE, Riquelme et al. 2021); an assignment's slot is the number of assignments to the same
expert ranked before it. Slots >= C overflow: the token is dropped by that expert.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class Router(nn.Module):
    """Router logits [G, S, E] = tokens [G, S, D] x kernel [D, E], in float32.

    Training (not deterministic) multiplies the router input by uniform noise in [1 - eps, 1 + eps] (the input
    jitter of Mesh TensorFlow's Switch router, ST-MoE section 3; rng stream "jitter"). The kernel is truncated normal
    with variance init_scale / fan_in: Switch's default scale 1 reduced tenfold (section 2.4) for init_scale = 0.1.
    """

    num_experts: int
    jitter_eps: float
    init_scale: float

    @nn.compact
    def __call__(self, tokens: Array, *, deterministic: bool) -> Array:
        # tokens: [G, S, D] -> logits [G, S, E] float32
        kernel = self.param(
            "kernel",
            # The expert dim of the router is an output dim, not a stack of independent experts: left unnamed, so
            # it stays whole on every device (the softmax over experts needs all of it) and Adafactor factors it.
            nn.with_logical_partitioning(
                nn.initializers.variance_scaling(self.init_scale, "fan_in", "truncated_normal"), ("embed", None)
            ),
            (tokens.shape[-1], self.num_experts),
            jnp.float32,
        )
        x = tokens.astype(jnp.float32)
        if not deterministic and self.jitter_eps > 0:
            eps = self.jitter_eps
            x = x * jax.random.uniform(self.make_rng("jitter"), x.shape, jnp.float32, 1.0 - eps, 1.0 + eps)
        # HIGHEST: a float32 matmul may otherwise run as bfloat16 passes on accelerators, which is what selective
        # precision is meant to avoid (small logit differences decide the routing).
        return jnp.einsum("GSD,DE->GSE", x, kernel, precision=jax.lax.Precision.HIGHEST)


def expert_capacity(tokens_per_group: int, num_experts: int, k: int, capacity_factor: float, min_capacity: int) -> int:
    """Slots per expert and group (Switch eq. 3): ceil(k x capacity_factor x S / E), at least min_capacity, at most S.

    k = choices per token: top-2 doubles the capacity, GShard's 2N/E (section 2.2); expert choice uses k = 1, its
    n x c / e (Zhou et al. 2022, section 3.1). No expert can receive more than S tokens of a group, hence the cap.
    """
    # round() first: 1.1 * 100 / 10 is 11.000000000000002 in binary floating point, which ceil would make 12.
    raw = math.ceil(round(k * capacity_factor * tokens_per_group / num_experts, 6))
    return min(tokens_per_group, max(min_capacity, raw))


def top_k_choices(probs: Array, k: int, *, second_expert_uniform: Array | None = None) -> tuple[Array, Array, Array]:
    """Token choice: each token's k best experts and their gates.

    probs: [G, S, E] router probabilities. Returns expert index [G, S, K] int32, gates [G, S, K] float32 and
    selected [G, S, K] bool (False: the choice is not dispatched at all).
      k = 1 (Switch, section 2.1): the argmax expert; its gate is its router probability (not renormalised).
      k = 2 (GShard, algorithm 1): the two best experts, gates renormalised to g_i / (g_1 + g_2). With
        `second_expert_uniform` u [G, S] (the "random" policy), the second expert is kept only where
        2 g_2 > u, i.e. with probability 2 g_2 (<= 1 since g_2 <= 1/2); without it (the "all" policy) always.
    """
    if k == 1:
        index = jnp.argmax(probs, axis=-1)[..., None]  # [G, S, 1]
        gates = jnp.take_along_axis(probs, index, axis=-1)  # [G, S, 1]
        return index.astype(jnp.int32), gates, jnp.ones(gates.shape, bool)
    if k != 2:
        raise ValueError(f"token-choice routing supports k = 1 (top1) or 2 (top2), got k={k}")
    gates, index = jax.lax.top_k(probs, 2)  # [G, S, 2] each, best first
    gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    selected = jnp.ones(gates.shape, bool)
    if second_expert_uniform is not None:
        selected = selected.at[..., 1].set(2.0 * gates[..., 1] > second_expert_uniform)
    return index.astype(jnp.int32), gates, selected


def slot_positions(index: Array, selected: Array, num_experts: int, *, priority_scores: Array | None = None) -> Array:
    """The slot of each assignment in its expert's buffer (module docstring), counting only selected assignments.

    index, selected: [G, S, K]. priority_scores: [G, S] or None (None: left to right; else highest score first,
    ties left to right). Returns [G, S, K] int32 (meaningless where not selected).
    """
    num_groups, group_size, k = index.shape
    assigned = jax.nn.one_hot(index, num_experts, dtype=jnp.int32) * selected[..., None]  # [G, S, K, E]
    if priority_scores is not None:
        order = jnp.argsort(-priority_scores, axis=-1, stable=True)  # [G, S]: rank -> token
        assigned = jnp.take_along_axis(assigned, order[:, :, None, None], axis=1)  # tokens in priority order
    # Choice-major ranking: [G, K, S, E] -> [G, K * S, E]; a running count per expert gives each one's slot.
    ranked = jnp.transpose(assigned, (0, 2, 1, 3)).reshape(num_groups, k * group_size, num_experts)
    slots = jnp.cumsum(ranked, axis=1) - 1  # [G, K * S, E]
    slots = jnp.transpose(slots.reshape(num_groups, k, group_size, num_experts), (0, 2, 1, 3))  # [G, S, K, E]
    if priority_scores is not None:
        slots = jnp.take_along_axis(slots, jnp.argsort(order, axis=-1)[:, :, None, None], axis=1)  # back in order
    return jnp.sum(slots * jax.nn.one_hot(index, num_experts, dtype=jnp.int32), axis=-1)  # [G, S, K]


def token_choice_dispatch(
    index: Array, gates: Array, selected: Array, slots: Array, num_experts: int, capacity: int
) -> tuple[Array, Array]:
    """One-hot dispatch [G, S, E, C] (token s goes to slot c of expert e) and combine weights [G, S, E, C] (the
    gate of that assignment), GShard style. index, gates, selected, slots: [G, S, K]. Assignments whose slot is
    >= C (over capacity) or that were not selected get an all-zero row: the token is dropped by that expert."""
    fits = selected & (slots < capacity)  # [G, S, K]
    expert = jax.nn.one_hot(index, num_experts, dtype=jnp.float32)  # [G, S, K, E]
    slot = jax.nn.one_hot(jnp.where(fits, slots, capacity), capacity, dtype=jnp.float32)  # [G, S, K, C]; C -> 0s
    dispatch = jnp.einsum("GSKE,GSKC->GSEC", expert, slot)
    combine = jnp.einsum("GSKE,GSKC,GSK->GSEC", expert, slot, gates)
    return dispatch, combine


def expert_choice_dispatch(probs: Array, capacity: int) -> tuple[Array, Array]:
    """Expert choice (Zhou et al. 2022, section 3.1): each expert takes the C tokens of the group with the highest
    router probability for it (probabilities softmaxed over experts); gates are those probabilities.

    probs: [G, S, E]. Returns dispatch and combine [G, S, E, C]; a token may be taken by several experts or none.
    """
    gates, token = jax.lax.top_k(jnp.swapaxes(probs, 1, 2), capacity)  # [G, E, C]: best tokens of each expert
    dispatch = jnp.transpose(jax.nn.one_hot(token, probs.shape[1], dtype=jnp.float32), (0, 3, 1, 2))  # [G, S, E, C]
    return dispatch, dispatch * gates[:, None, :, :]


def load_balancing_loss(probs: Array, first_choice: Array) -> Array:
    """Switch eq. 4 (section 2.2) without alpha: N x sum_i f_i P_i per group, averaged over groups.

    f_i: the fraction of the group's tokens whose first choice is expert i (before capacity; GShard's c_e / S uses
    the first choice too), P_i: the mean router probability of expert i. probs [G, S, E], first_choice [G, S].
    Equals 1 under uniform routing and N when every token goes to one expert with probability 1.
    """
    num_experts = probs.shape[-1]
    fraction = jnp.mean(jax.nn.one_hot(first_choice, num_experts, dtype=jnp.float32), axis=1)  # [G, E]
    mean_prob = jnp.mean(probs, axis=1)  # [G, E]
    return jnp.mean(num_experts * jnp.sum(fraction * mean_prob, axis=-1))


def router_z_loss(logits: Array) -> Array:
    """ST-MoE eq. 5 without its weight: the mean over tokens of (log sum_j exp(logit_j))^2. logits [G, S, E]."""
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))


def routing_metrics(probs: Array, processed: Array, load: Array) -> dict[str, Array]:
    """Float32 scalars describing one routing.

    probs: [G, S, E]; processed: [G, S] bool, whether any expert processes the token (a token no expert takes has
    a zero MoE output and only its residual goes on); load: [E], the assignments each expert was asked to take
    (before capacity).
      moe_drop_fraction: fraction of tokens no expert processes.
      moe_expert_load_max_over_mean: max over experts of the load / its mean (1 = balanced, E = one expert).
      moe_router_entropy: mean over tokens of the router distribution's entropy, in nats (log E = uniform).
    """
    entropy = -jnp.sum(probs * jnp.log(jnp.maximum(probs, jnp.finfo(jnp.float32).tiny)), axis=-1)
    return {
        "moe_drop_fraction": 1.0 - jnp.mean(processed.astype(jnp.float32)),
        "moe_expert_load_max_over_mean": jnp.max(load) / jnp.maximum(jnp.mean(load), 1e-9),
        "moe_router_entropy": jnp.mean(entropy),
    }
