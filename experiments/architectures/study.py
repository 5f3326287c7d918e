"""architectures: T5.1.0 vs T5.1.1, GPT-2 vs the modern decoder at equal parameters, and what scanned layers and
rematerialisation cost in speed and memory (README.md here).

  T5.1.0 vs T5.1.1   configs/t5_1_0_tiny.py (ReLU MLP 512, tied output, dropout 0.1) vs configs/t5_tiny.py (gated-GELU
                     MLP 384, untied output, no dropout): the same steps, data and vocabulary
  GPT-2 vs modern    configs/gpt2_tiny.py (learned positions, LayerNorm, GELU MLP, biases, dropout 0.1) vs
                     configs/decoder_tiny.py (RoPE, RMSNorm, SwiGLU, GQA, no biases, no dropout) with its output
                     tied and its SwiGLU width solved for GPT-2's parameter count, on GPT-2's byte-level BPE
                     vocabulary, so both read the same token stream
  speed / memory     lmx.bench of decoder_tiny: unrolled vs scanned layers, remat none / dots / dots_with_no_batch_dims
                     / full
"""

from __future__ import annotations

from experiments.harness import compute
from experiments.harness.records import Outcome, Results
from experiments.harness.study import GUTENBERG, Run, Study
from experiments.harness.tables import Table, fixed, stat
from experiments.switch_vs_dense import study as switch_vs_dense

# Every training run: 200 steps, evaluated as switch_vs_dense evaluates (the tiny configs' own recipe is 600 steps;
# 200 fits the five studies in one session). T5.1.0 is then switch_vs_dense's dense encoder-decoder run, shared
# through experiments/runs.
STEPS = switch_vs_dense.DENSE_STEPS
METRIC = "eval/cross_entropy"  # pairs share a vocabulary, so their cross-entropies compare
EVALUATION = switch_vs_dense.EVALUATION
T5 = "T5.1.0 vs T5.1.1"
DECODERS = "GPT-2 vs modern decoder"
SPEED = "scan and remat"
# The modern decoder on GPT-2's tokens, its output layer tied (GPT-2's is): the MLP width then sets the count.
MODERN = {"model.tie_embeddings": True, "data.vocab_kind": "byte_bpe"}
# lmx.bench variants of decoder_tiny (4 layers): name -> (scan_layers, remat_policy)
SPEED_VARIANTS = {
    "unrolled_none": (False, "none"),
    "scan_none": (True, "none"),
    "scan_dots": (True, "dots"),
    "scan_dots_no_batch": (True, "dots_with_no_batch_dims"),
    "scan_full": (True, "full"),
}


def build() -> Study:
    gpt2_params = compute.cost("configs/gpt2_tiny.py", GUTENBERG)["params"]
    mlp = compute.match_params(
        "configs/decoder_tiny.py", lambda d: {**GUTENBERG, **MODERN, "model.mlp_dim": d}, gpt2_params, range(256, 513)
    )
    steps = {"train.steps": STEPS}
    runs = [
        Run("t5_1_0", "configs/t5_1_0_tiny.py", steps, group=T5),
        Run("t5_1_1", "configs/t5_tiny.py", steps, group=T5),
        Run("gpt2", "configs/gpt2_tiny.py", steps, group=DECODERS),
        Run("modern", "configs/decoder_tiny.py", {**MODERN, "model.mlp_dim": mlp, **steps}, group=DECODERS),
    ]
    for name, (scan, remat) in SPEED_VARIANTS.items():
        overrides = {"model.scan_layers": scan, "model.remat_policy": remat}
        runs.append(
            Run(
                name,
                "configs/decoder_tiny.py",
                overrides,
                stage="bench",
                group=SPEED,
                bench_args=("--steps=10", "--warmup=2"),
            )
        )
    return Study(
        name="architectures",
        question=(
            "Does T5.1.1 beat T5.1.0, and the modern RoPE/SwiGLU/GQA decoder beat GPT-2 at equal parameters, trained "
            "the same way on the same text? What do scanned layers and each rematerialisation policy cost in compile "
            "time, step time and memory?"
        ),
        runs=tuple(runs),
        common={"pretrain": {**GUTENBERG, **EVALUATION}},
        tables=tables,
        curve_metric=METRIC,
    )


def loss_change(outcome: Outcome, reference: Outcome) -> float | None:
    mine, theirs = outcome.final(METRIC), reference.final(METRIC)
    return None if mine is None or theirs is None else mine - theirs


def bench_ratio(outcome: Outcome, reference: Outcome) -> float | None:
    """Step time over the reference's of the same repeat."""
    mine, theirs = (outcome.bench or {}).get("step_time_s"), (reference.bench or {}).get("step_time_s")
    return None if mine is None or not theirs else mine / theirs


def training_table(results: Results, title: str, names: tuple[str, str]) -> Table:
    reference = names[0]
    rows = []
    for name in names:
        if name not in results.info:
            continue
        info = results.info[name]
        rows.append(
            [
                name,
                f"`{results.study.run(name).config}`",
                f"{(info.params or 0) / 1e6:.3f}M",
                fixed(info.flops_per_step and info.flops_per_step / 1e9, ".2f"),
                stat(results.values(name, lambda o: o.final(METRIC))),
                stat(results.paired(name, reference, loss_change)),
                stat(results.values(name, lambda o: o.median("train/seconds_per_step"))),
                stat(results.values(name, lambda o: o.wall_s()), ".0f"),
            ]
        )
    columns = ["run", "config", "parameters", "GFLOP/step", f"final {METRIC}", f"vs {reference}", "s/step", "wall s"]
    note = f"{STEPS} steps each; vs {reference}: final loss minus {reference}'s of the same seed (negative: better)."
    return Table(title, columns, rows, note)


def speed_table(results: Results) -> Table:
    rows = []
    for name, (scan, remat) in SPEED_VARIANTS.items():
        if name not in results.info:
            continue

        def value(key, scale=1.0):
            return lambda o: None if (o.bench or {}).get(key) is None else o.bench[key] * scale

        rows.append(
            [
                name,
                "scanned" if scan else "unrolled",
                remat,
                stat(results.values(name, value("compile_time_s")), ".1f"),
                stat(results.values(name, value("step_time_s")), ".3f"),
                stat(results.paired(name, "unrolled_none", bench_ratio), ".2f"),
                stat(results.values(name, value("temp_bytes", 1 / 2**20)), ".0f"),
            ]
        )
    columns = ["variant", "layers", "remat", "compile s", "step s", "step vs unrolled/none", "temp MiB"]
    note = (
        "python -m lmx.bench on decoder_tiny (batch 32 x 128, synthetic batches, 10 timed steps after 2); repeats "
        "are the study's seeds. temp: XLA's temporary buffers of the compiled train step."
    )
    return Table("Scanned vs unrolled layers and remat policies (decoder_tiny)", columns, rows, note)


def tables(results: Results) -> list[Table]:
    return [
        training_table(results, T5, ("t5_1_0", "t5_1_1")),
        training_table(results, f"{DECODERS} at equal parameters", ("gpt2", "modern")),
        speed_table(results),
    ]
