"""moe_routing: what the routing knobs of a Switch layer do to loss, dropped tokens, expert load and step time
(Fedus et al. 2021, Table 1 and section 2.2; Zhou et al. 2022 for expert choice; README.md here).

One model, bert_tiny (masked-LM, 2 layers) with its second MLP a Switch layer of 8 experts (switch_vs_dense's
settings), and one knob changed per run from that base: the training capacity factor (1.0, 1.25, 2.0, dropless),
the load-balancing loss weight (0, 1e-3, 1e-2, 1e-1) and the router (top-1, top-2, expert choice). An encoder-only
model because expert choice lets a token's output depend on the other tokens of its group, which lmx refuses in any
causal stack (a T5 decoder included). Every run takes the same steps; top-2 and expert choice touch more expert
FLOPs per token, shown in the table.
"""

from __future__ import annotations

from experiments.harness import compute
from experiments.harness.records import Outcome, Results
from experiments.harness.study import GUTENBERG, Run, Study
from experiments.harness.tables import Table, fixed, stat
from experiments.switch_vs_dense.study import switch_layers

STEPS = 200  # about 1.5 minutes per run here (dropless ~2.5x: XLA:CPU runs ragged_dot as a dense masked product)
CONFIG = "configs/bert_tiny.py"
BASE = "top1_cap1.25_aux1e-2"
# run name -> (the knob it changes, its overrides on top of the base)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    BASE: ("base: top-1, capacity 1.25, aux 1e-2", {}),
    "capacity1.0": ("capacity factor 1.0", {"model.moe.capacity_factor_train": 1.0}),
    "capacity2.0": ("capacity factor 2.0", {"model.moe.capacity_factor_train": 2.0}),
    "dropless": ("dropless (no capacity)", {"model.moe.dropless": True}),
    "aux0": ("aux loss weight 0", {"model.moe.aux_loss_weight": 0.0}),
    "aux1e-3": ("aux loss weight 1e-3", {"model.moe.aux_loss_weight": 1e-3}),
    "aux1e-1": ("aux loss weight 1e-1", {"model.moe.aux_loss_weight": 1e-1}),
    "top2": ("top-2 router (GShard)", {"model.moe.router": "top2"}),
    "expert_choice": ("expert-choice router", {"model.moe.router": "expert_choice"}),
}
METRIC = "eval/cross_entropy"  # the masked-LM loss alone: the aux loss (weighted differently per run) left out
EVALUATION = {"train.eval_every": 50, "train.eval_steps": 4, "train.log_every": 10}


def build() -> Study:
    base = switch_layers(8)
    runs = [
        Run(name, CONFIG, {**base, **overrides, "train.steps": STEPS}, group="bert_tiny + Switch-8")
        for name, (_, overrides) in VARIANTS.items()
    ]
    for run in runs:  # fail here, not an hour in, if lmx refuses a variant
        compute.load(run.config, {**GUTENBERG, **run.overrides})
    return Study(
        name="moe_routing",
        question=(
            "How do the training capacity factor (1.0 / 1.25 / 2.0 / dropless), the load-balancing loss weight "
            "(0 / 1e-3 / 1e-2 / 1e-1) and the router (top-1 / top-2 / expert choice) change the final loss, the "
            "fraction of dropped tokens, the expert load and the step time of a Switch layer?"
        ),
        runs=tuple(runs),
        common={"pretrain": {**GUTENBERG, **EVALUATION}},
        tables=tables,
        curve_metric=METRIC,
    )


def loss_change(outcome: Outcome, base: Outcome) -> float | None:
    mine, theirs = outcome.final(METRIC), base.final(METRIC)
    return None if mine is None or theirs is None else mine - theirs


def time_ratio(outcome: Outcome, base: Outcome) -> float | None:
    mine, theirs = outcome.median("train/seconds_per_step"), base.median("train/seconds_per_step")
    return None if mine is None or not theirs else mine / theirs


def tables(results: Results) -> list[Table]:
    rows = []
    for name, (knob, _) in VARIANTS.items():
        if name not in results.info:  # left out by --only
            continue
        info = results.info[name]
        rows.append(
            [
                name,
                knob,
                fixed(info.flops_per_step and info.flops_per_step / 1e9, ".2f"),
                stat(results.values(name, lambda o: o.final(METRIC))),
                stat(results.paired(name, BASE, loss_change)),
                stat(results.values(name, lambda o: o.late_mean("train/moe_drop_fraction"))),
                stat(results.values(name, lambda o: o.late_mean("train/moe_expert_load_max_over_mean")), ".2f"),
                stat(results.values(name, lambda o: o.late_mean("train/moe_router_entropy")), ".2f"),
                stat(results.values(name, lambda o: o.median("train/seconds_per_step"))),
                stat(results.paired(name, BASE, time_ratio), ".2f"),
            ]
        )
    columns = ["run", "changes", "GFLOP/step", f"final {METRIC}", "vs base", "dropped tokens", "expert load max/mean"]
    columns += ["router entropy", "s/step", "step time vs base"]
    note = (
        f"All runs {STEPS} steps of bert_tiny + 8 experts on the same data. vs base: the run's final loss minus the "
        f"base's ({BASE}) of the same seed. Dropped tokens (fraction of routed tokens over capacity), expert load "
        "(tokens of the busiest expert / the mean) and router entropy: means over the logged training steps of the "
        "second half (train/moe_*; lmx averages the MoE layers). s/step: median of train/seconds_per_step; step "
        "time vs base: its ratio to the base's, per seed."
    )
    return [Table("Routing knobs (bert_tiny + Switch-8)", columns, rows, note)]
