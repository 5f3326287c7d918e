"""objectives: at equal pretraining compute, which pretraining objective fine-tunes best on SST-2? (Raffel et al.
2020, Table 4 for objectives, Table 2 for objectives x architectures; README.md here.)

Four objectives, each on the architecture it is usually paired with and lmx's tiny config of it:
  span corruption  T5.1.1-tiny encoder-decoder (configs/t5_tiny.py)           the budget: 400 steps
  prefix LM        the same model, prefix -> continuation (configs/t5_prefix_lm.py:tiny), as T5's Table 4 runs it
  causal LM        the modern decoder (configs/decoder_tiny.py)
  MLM              bert_tiny (configs/bert_tiny.py)
Each run gets the steps that spend span corruption's FLOPs (lmx.flops), then each pretrained model of each seed is
fine-tuned on SST-2 (configs/finetune_sst2.py:<architecture>) from its final checkpoint.
"""

from __future__ import annotations

from experiments.harness import compute
from experiments.harness.records import Results
from experiments.harness.study import GUTENBERG, Run, Study
from experiments.harness.tables import Table, fixed, stat

BUDGET = ("configs/t5_tiny.py", 400)  # span corruption's config and steps set every run's FLOPs (the config: 600)
EVALUATION = {"train.eval_every": 100, "train.eval_steps": 4, "train.log_every": 25}
# objective -> (pretraining config, architecture, the fine-tuning config's argument: the model the checkpoint holds;
# t5_prefix_lm.py:tiny trains t5_tiny's model, so it fine-tunes as t5_tiny)
OBJECTIVES = {
    "span_corruption": ("configs/t5_tiny.py", "encoder-decoder", "t5_tiny"),
    "prefix_lm": ("configs/t5_prefix_lm.py:tiny", "encoder-decoder", "t5_tiny"),
    "causal_lm": ("configs/decoder_tiny.py", "decoder-only", "decoder_tiny"),
    "mlm": ("configs/bert_tiny.py", "encoder-only", "bert_tiny"),
}
FINETUNE = "configs/finetune_sst2.py"


def build() -> Study:
    budget = compute.cost(BUDGET[0], GUTENBERG)["total"] * BUDGET[1]
    runs = []
    for objective, (config, architecture, model) in OBJECTIVES.items():
        steps = compute.equal_compute_steps(budget, 1, compute.cost(config, GUTENBERG)["total"])
        runs.append(Run(objective, config, {"train.steps": steps}, group=f"{objective} ({architecture})"))
        runs.append(Run(f"{objective}_sst2", f"{FINETUNE}:{model}", stage="finetune", after=objective))
    return Study(
        name="objectives",
        question=(
            "Pretrained for the same model FLOPs on the same text, how do span corruption (encoder-decoder), prefix "
            "LM, causal LM (decoder-only) and MLM (encoder-only) compare after fine-tuning on SST-2?"
        ),
        runs=tuple(runs),
        common={"pretrain": {**GUTENBERG, **EVALUATION}},
        tables=tables,
        curve_metric="eval/loss",
    )


def tables(results: Results) -> list[Table]:
    rows = []
    for objective, (config, architecture, _) in OBJECTIVES.items():
        if objective not in results.info:
            continue
        info = results.info[objective]
        total = info.flops_per_step and info.steps and info.flops_per_step * info.steps / 1e15
        rows.append(
            [
                objective,
                architecture,
                f"`{config}`",
                f"{(info.params or 0) / 1e6:.2f}M",
                info.steps,
                fixed(info.flops_per_step and info.flops_per_step / 1e9, ".2f"),
                fixed(total, ".3f"),
                stat(results.values(objective, lambda o: o.final("eval/loss"))),
                stat(results.values(f"{objective}_sst2", lambda o: o.best()), ".4f"),
            ]
        )
    columns = ["objective", "architecture", "config", "parameters", "steps", "GFLOP/step", "PFLOP"]
    columns += ["final eval/loss (own objective)", "SST-2 accuracy"]
    note = (
        f"Equal compute: steps = {BUDGET[1]} x {BUDGET[0]}'s FLOPs per step / the config's (lmx.flops). The eval "
        "losses are each objective's own (different targets and vocabularies): compare them only within a row's "
        "run. SST-2 accuracy: the best dev value of each fine-tuning run (results.json), mean ± std over "
        "pretraining seeds."
    )
    return [Table("Objectives at equal pretraining compute, fine-tuned on SST-2", columns, rows, note)]
