"""electra_vs_mlm: at equal pretraining compute, does ELECTRA's replaced-token detection give a better fine-tuned
model than BERT's masked-LM? (Clark et al. 2020, Table 1 and Figure 1; README.md here.)

bert_tiny (MLM) and electra_tiny (RTD: bert_tiny's model as the discriminator and a generator a quarter of its width)
pretrain on the same text for the same FLOPs (lmx.flops counts ELECTRA's generator and its MLM head): the objectives
study's budget, so bert_tiny's run is shared with it. Each pretrained model of each seed is then fine-tuned on SST-2
and CoLA with the fine-tuning configs (configs/finetune_sst2.py:<model>, configs/finetune_cola.py:<model>) from its
final checkpoint; bert_tiny fine-tuned from random initialisation (same vocabulary) is the control.
"""

from __future__ import annotations

from experiments.harness import compute
from experiments.harness.records import Results
from experiments.harness.study import GUTENBERG, Run, Study
from experiments.harness.tables import Table, fixed, stat
from experiments.objectives import study as objectives

# The compute budget: the objectives study's (400 steps of t5_tiny = 407 steps of bert_tiny), so that bert_tiny's
# pretraining and its SST-2 fine-tuning are one run shared by both studies.
BUDGET = objectives.BUDGET
EVALUATION = {"train.eval_every": 100, "train.eval_steps": 4, "train.log_every": 25}
PRETRAINED = {"bert": ("configs/bert_tiny.py", "MLM"), "electra": ("configs/electra_tiny.py", "RTD")}
TASKS = {"sst2": "configs/finetune_sst2.py", "cola": "configs/finetune_cola.py"}


def build() -> Study:
    budget = compute.cost(BUDGET[0], GUTENBERG)["total"] * BUDGET[1]
    runs = []
    for name, (config, objective) in PRETRAINED.items():
        steps = compute.equal_compute_steps(budget, 1, compute.cost(config, GUTENBERG)["total"])
        runs.append(Run(name, config, {"train.steps": steps}, group=f"{name} ({objective})"))
    for name, (config, _) in PRETRAINED.items():
        model = config.removeprefix("configs/").removesuffix(".py")
        for task, finetune in TASKS.items():
            runs.append(Run(f"{name}_{task}", f"{finetune}:{model}", stage="finetune", after=name))
    for task, finetune in TASKS.items():  # the control: bert_tiny fine-tuned from random initialisation
        runs.append(Run(f"scratch_{task}", f"{finetune}:bert_tiny", stage="finetune", after="bert", from_scratch=True))
    return Study(
        name="electra_vs_mlm",
        question=(
            "Pretrained for the same model FLOPs, does ELECTRA-tiny (replaced-token detection) fine-tune to a better "
            "SST-2 accuracy and CoLA Matthews correlation than BERT-tiny (masked-LM)?"
        ),
        runs=tuple(runs),
        common={"pretrain": {**GUTENBERG, **EVALUATION}},
        tables=tables,
        curve_metric="eval/loss",
    )


def best_by_seed(results: Results, name: str) -> dict[int, float]:
    """seed -> the best dev value of a fine-tuning run's selection metric (results.json)."""
    return {o.seed: o.best() for o in results.done(name) if o.best() is not None}


def tables(results: Results) -> list[Table]:
    rows = []
    for name, (config, objective) in PRETRAINED.items():
        if name not in results.info:
            continue
        info = results.info[name]
        total = info.flops_per_step and info.steps and info.flops_per_step * info.steps / 1e15
        scores = {task: best_by_seed(results, f"{name}_{task}") for task in TASKS}
        both = [(scores["sst2"][s] + scores["cola"][s]) / 2 for s in scores["sst2"] if s in scores["cola"]]
        rows.append(
            [
                f"{name} ({objective})",
                f"`{config}`",
                info.steps,
                fixed(info.flops_per_step and info.flops_per_step / 1e9, ".2f"),
                fixed(total, ".3f"),
                stat(results.values(name, lambda o: o.wall_s()), ".0f"),
                stat(list(scores["sst2"].values()), ".4f"),
                stat(list(scores["cola"].values()), ".4f"),
                stat(both, ".4f"),
            ]
        )
    scores = {task: best_by_seed(results, f"scratch_{task}") for task in TASKS}
    if any(scores.values()):
        both = [(scores["sst2"][s] + scores["cola"][s]) / 2 for s in scores["sst2"] if s in scores["cola"]]
        control = ["none: bert_tiny from random initialisation", "`configs/bert_tiny.py`", 0, "", "0", ""]
        rows.append(control + [stat(list(scores[t].values()), ".4f") for t in TASKS] + [stat(both, ".4f")])
    columns = ["pretraining", "config", "steps", "GFLOP/step", "PFLOP", "pretraining wall s", "SST-2 accuracy"]
    columns += ["CoLA MCC", "mean of the two"]
    note = (
        "Equal compute: each run's steps spend the budget of the objectives study (t5_tiny's 400 steps) at its own "
        "FLOPs per step (lmx.flops, ELECTRA's generator included). SST-2 accuracy and CoLA Matthews correlation: "
        "the best dev value of each fine-tuning run (its results.json), mean ± std over the pretraining seeds (each "
        "fine-tuned with its own seed). The "
        "paper reports the GLUE dev score of ELECTRA-Small 79.9 vs BERT-Small 75.1 (Table 1)."
    )
    return [Table("Pretraining at equal compute, then fine-tuning", columns, rows, note)]
