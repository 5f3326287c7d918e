"""switch_vs_dense: do Switch layers (top-1 mixture of experts) beat the dense model at equal FLOPs, and how much
sooner do they reach its final loss? (Fedus et al. 2021, Figures 1, 4 and 5; README.md here.)

Two families, each dense and with 2, 4, 8 and 16 experts in every other MLP: T5.1.0-tiny (configs/t5_1_0_tiny.py,
span corruption; with 8 experts it is configs/switch_tiny.py) and the modern decoder (configs/decoder_tiny.py,
next-token prediction). Top-1 routing keeps the FLOPs a token costs: each Switch run gets the steps that spend the
dense run's FLOPs (lmx.flops; the router is the only extra, so 1-2 steps fewer).
"""

from __future__ import annotations

import math

from experiments.harness import compute
from experiments.harness.records import Outcome, Results, first_reach
from experiments.harness.study import GUTENBERG, Run, Study
from experiments.harness.tables import Table, fixed, stat

DENSE_STEPS = 200  # the dense runs' steps (about 2 minutes each on two quiet cores); Switch runs get equal compute
EXPERTS = (2, 4, 8, 16)
FAMILIES = {"encoder-decoder": ("t5", "configs/t5_1_0_tiny.py"), "decoder-only": ("decoder", "configs/decoder_tiny.py")}
# The compared loss: the objective's cross-entropy on held-out text, without the MoE auxiliary loss or the z-loss
# (which differ between dense and Switch runs and are not what the paper plots).
METRIC = "eval/cross_entropy"
# An evaluation every 20 steps (4 batches of 32 rows): the curve that "steps to the dense loss" is read from.
EVALUATION = {"train.eval_every": 20, "train.eval_steps": 4, "train.log_every": 20}


def switch_layers(experts: int) -> dict[str, object]:
    """Switch-Base's MoE settings (configs/switch_base_8.py, configs/switch_tiny.py): every other MLP a Switch layer
    of `experts` experts shaped like the dense MLP, top-1 routing, capacity factor 1.25 in training and 2.0 at
    evaluation, router input jitter 1e-2, router init scale 0.1, load-balancing loss 1e-2 (Switch section 2)."""
    return {
        "model.moe.num_experts": experts,
        "model.moe.moe_every": 2,
        "model.moe.router": "top1",
        "model.moe.capacity_factor_train": 1.25,
        "model.moe.capacity_factor_eval": 2.0,
        "model.moe.jitter_eps": 0.01,
        "model.moe.router_init_scale": 0.1,
        "model.moe.aux_loss_weight": 0.01,
    }


def build() -> Study:
    runs = []
    for family, (prefix, config) in FAMILIES.items():
        dense_flops = compute.cost(config, GUTENBERG)["total"]
        runs.append(Run(f"{prefix}_dense", config, {"train.steps": DENSE_STEPS}, group=family))
        for experts in EXPERTS:
            moe = switch_layers(experts)
            steps = compute.equal_compute_steps(
                dense_flops, DENSE_STEPS, compute.cost(config, {**GUTENBERG, **moe})["total"]
            )
            runs.append(Run(f"{prefix}_switch{experts}", config, {**moe, "train.steps": steps}, group=family))
    return Study(
        name="switch_vs_dense",
        question=(
            "At equal model FLOPs, do Switch Transformers with 2, 4, 8 and 16 experts reach a lower loss than the "
            "dense tiny encoder-decoder and decoder-only models, and in how many steps and how much wall time do they "
            "reach the dense model's final eval loss?"
        ),
        runs=tuple(runs),
        common={"pretrain": {**GUTENBERG, **EVALUATION}},
        tables=tables,
        curve_metric=METRIC,
    )


def reach(outcome: Outcome, dense: Outcome) -> tuple[float, float] | None:
    """(steps, elapsed_s) at which `outcome` first reaches the final eval loss of the dense run of its seed
    (records.first_reach: linear between evaluations); (inf, inf) when it never does; None without a dense loss."""
    target = dense.final(METRIC)
    if target is None or not outcome.series(METRIC):
        return None
    return first_reach(outcome.series(METRIC), target) or (math.inf, math.inf)


def steps_to(outcome: Outcome, dense: Outcome) -> float | None:
    found = reach(outcome, dense)
    return None if found is None else found[0]


def wall_to(outcome: Outcome, dense: Outcome) -> float | None:
    found = reach(outcome, dense)
    return None if found is None else found[1]


def speedup(outcome: Outcome, dense: Outcome, index: int) -> float | None:
    """The dense run's steps (index 0) or elapsed_s (index 2) at its last evaluation over what `outcome` needed to
    reach the dense loss; NaN ("not reached" in the table) when it never did."""
    found = reach(outcome, dense)
    if found is None:
        return None
    needed = found[0 if index == 0 else 1]
    return dense.series(METRIC)[-1][index] / needed if math.isfinite(needed) and needed > 0 else math.nan


def tables(results: Results) -> list[Table]:
    out = []
    for family, (prefix, _) in FAMILIES.items():
        dense = f"{prefix}_dense"
        rows = []
        for run in results.study.runs:
            if run.group != family:
                continue
            info, name = results.info[run.name], run.name
            rows.append(
                [
                    name,
                    run.overrides.get("model.moe.num_experts", 0),
                    f"{(info.params or 0) / 1e6:.2f}M / {(info.active_params or 0) / 1e6:.2f}M",
                    fixed(info.flops_per_step and info.flops_per_step / 1e9, ".2f"),
                    info.steps,
                    stat(results.values(name, lambda o: o.final(METRIC))),
                    stat(results.paired(name, dense, steps_to), ".0f"),
                    stat(results.paired(name, dense, lambda o, d: speedup(o, d, 0)), ".2f"),
                    stat(results.paired(name, dense, wall_to), ".0f"),
                    stat(results.paired(name, dense, lambda o, d: speedup(o, d, 2)), ".2f"),
                    stat(results.values(name, lambda o: o.median("train/seconds_per_step"))),
                    stat(results.values(name, lambda o: o.late_mean("train/moe_drop_fraction")), ".3f"),
                ]
            )
        columns = ["run", "experts", "params total / active", "GFLOP/step", "steps", f"final {METRIC}"]
        columns += ["steps to dense loss", "x fewer steps", "wall s to dense loss", "x less wall", "s/step"]
        columns += ["dropped tokens (train)"]
        note = (
            f"Dense loss: the final {METRIC} of `{dense}` with the same seed. Steps (wall s) to it: where the run's "
            f"{METRIC}, evaluated every {EVALUATION['train.eval_every']} steps on {EVALUATION['train.eval_steps']} "
            "held-out batches, first reaches it, linearly interpolated between the two evaluations around the "
            "crossing (wall: lmx's elapsed_s, compilation and evaluations included). x fewer steps / x less wall: "
            "the dense run's steps / wall at its last evaluation over the run's, per seed. Dropped tokens: mean "
            "over the second half of training of the fraction of routed tokens over capacity (train/moe_drop_fraction)."
        )
        out.append(Table(f"{family}: Switch vs dense at equal FLOPs", columns, rows, note))
    return out
