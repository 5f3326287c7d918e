"""results.md of a study: the study's own tables, a table of every run, the plots, and what did not finish.

Generated, never edited by hand: the study's README.md links it and holds the findings written after a real run.
"""

from __future__ import annotations

import pathlib
import time

from experiments.harness.plots import write_plots
from experiments.harness.records import Results
from experiments.harness.tables import Table, fixed, stat


def _overrides(run) -> str:
    shown = {k: v for k, v in run.overrides.items() if k != "train.steps"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"


def _millions(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.2f}M"


def pretrain_table(results: Results) -> Table | None:
    metric = results.study.curve_metric
    rows = []
    for run in results.study.runs:
        if run.stage != "pretrain":
            continue
        info, done = results.info[run.name], results.done(run.name)
        params = f"{_millions(info.params)} ({_millions(info.active_params)} active)"
        rows.append(
            [
                run.name,
                f"`{run.config}`",
                _overrides(run),
                info.steps,
                params,
                fixed(info.flops_per_step and info.flops_per_step / 1e9, ".2f"),
                f"{len(done)}/{len(results.study.seeds)}",
                stat(results.values(run.name, lambda o: o.final("train/loss"))),
                stat(results.values(run.name, lambda o: o.final(metric))),
                stat(results.values(run.name, lambda o: o.median("train/seconds_per_step"))),
                stat(results.values(run.name, lambda o: o.wall_s()), ".0f"),
            ]
        )
    columns = ["run", "config", "overrides", "steps", "parameters", "GFLOP/step", "seeds done", "final train/loss"]
    columns += [f"final {metric}", "s/step (median)", "training wall s"]
    note = (
        "GFLOP/step: model FLOPs of a train step (lmx.flops). s/step: median of lmx's train/seconds_per_step (measured "
        "between log steps, compilation and evaluation excluded). Training wall s: lmx's elapsed_s at the end "
        "(compilation and evaluations included, process start-up not)."
    )
    return Table("Pretraining runs", columns, rows, note) if rows else None


def _final_metric(outcome) -> float | None:
    results = outcome.results or {}
    return results.get("final", {}).get(results.get("metric"))


def finetune_table(results: Results) -> Table | None:
    rows = []
    for run in results.study.runs:
        if run.stage != "finetune":
            continue
        done = results.done(run.name)
        first = next((o.results for o in done if o.results), {}) or {}
        rows.append(
            [
                run.name,
                f"`{run.config}`",
                f"none (random init, {run.after}'s vocabulary)" if run.from_scratch else run.after,
                first.get("task", "n/a"),
                first.get("metric", "n/a"),
                f"{len(done)}/{len(results.study.seeds)}",
                stat(results.values(run.name, lambda o: o.best()), ".4f"),
                stat(results.values(run.name, _final_metric), ".4f"),
                stat(results.values(run.name, lambda o: (o.results or {}).get("best_step")), ".0f"),
                stat(results.values(run.name, lambda o: (o.results or {}).get("wall_s")), ".0f"),
            ]
        )
    columns = ["run", "config", "pretrained by", "task", "metric", "seeds done", "best (dev)", "final (dev)"]
    columns += ["best step", "wall s"]
    note = "From each fine-tuning run's results.json: the selection metric's best value on the dev split and the last."
    return Table("Fine-tuning runs", columns, rows, note) if rows else None


def bench_table(results: Results) -> Table | None:
    rows = []
    for run in results.study.runs:
        if run.stage != "bench":
            continue

        def bench(key, scale=1.0, name=run.name):
            def value(outcome):
                found = (outcome.bench or {}).get(key)
                return None if found is None else found * scale

            return results.values(name, value)

        rows.append(
            [
                run.name,
                _overrides(run),
                f"{len(results.done(run.name))}/{len(results.study.seeds)}",
                stat(bench("compile_time_s"), ".1f"),
                stat(bench("step_time_s"), ".3f"),
                stat(bench("tokens_per_s"), ".0f"),
                stat(bench("temp_bytes", 1 / 2**20), ".0f"),
                stat(bench("mfu", 100), ".1f"),
            ]
        )
    columns = ["run", "overrides", "repeats", "compile s", "step s (median)", "tokens/s", "temp MiB", "MFU %"]
    note = (
        "lmx.bench on synthetic batches: compile = lower + compile of the train step; step = median of the timed "
        "steps; temp = XLA's temporary buffers of the compiled step (activations kept for the backward pass); MFU "
        "against a matmul peak measured in the same process."
    )
    return Table("Benchmarks", columns, rows, note) if rows else None


def unfinished(results: Results) -> list[str]:
    lines = []
    for (name, seed), outcome in results.outcomes.items():
        if outcome.status == "done":
            continue
        detail = outcome.error.strip().splitlines()
        why = f": {detail[-1]}" if detail else ""
        lines.append(f"- `{name}` seed {seed}: {outcome.status}{why} (`{outcome.workdir}`)")
    return lines


def write_report(results: Results, out_dir: pathlib.Path, command: str) -> pathlib.Path:
    """Writes out_dir/results.md and the plots next to it; returns the path of results.md."""
    study = results.study
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = results.outcomes.values()
    done = [o for o in outcomes if o.status == "done"]
    commits = sorted({o.marker.get("commit", "unknown") for o in done}) or ["none yet"]
    lines = [
        f"# {study.name}: results",
        "",
        "<!-- Generated by experiments/harness/report.py; rerun the study or add --report to refresh. -->",
        "",
        f"**Question.** {study.question}",
        "",
        f"**Runs.** {len(done)} of {len(results.outcomes)} (run, seed) pairs finished; seeds "
        f"{', '.join(map(str, study.seeds))}; commit {', '.join(commits)}; command `{command}`; "
        f"written {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
    ]
    if study.smoke:
        lines += ["**Smoke run**: two steps per run; the numbers only show that every stage works.", ""]
    own = [t for t in (study.tables(results) if study.tables else []) if t.rows]
    if own:
        lines += ["## Results", ""] + [t.markdown() for t in own]
    lines += ["## Every run", ""]
    lines += [t.markdown() for t in (pretrain_table(results), finetune_table(results), bench_table(results)) if t]
    plots = write_plots(results, out_dir)
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})\n" for name in plots]
    missing = unfinished(results)
    if missing:
        lines += ["## Not finished", ""] + missing + [""]
    path = out_dir / "results.md"
    path.write_text("\n".join(lines))
    return path
