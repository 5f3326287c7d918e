"""Loss curves of a study's pretrain runs against steps, wall time and model FLOPs (PNG, matplotlib's Agg canvas).

One figure per x axis, one panel per run group (runs whose losses are comparable); each line is a run's mean over
its finished seeds at the steps all of them logged, the band its min-max over seeds.
"""

from __future__ import annotations

import pathlib

import numpy as np

from experiments.harness.records import Results

# x axis -> (file name, axis label)
AXES = {
    "steps": ("loss_vs_steps.png", "train steps"),
    "time": ("loss_vs_time.png", "wall time of training (s, lmx's elapsed_s: compilation and evaluations included)"),
    "flops": ("loss_vs_flops.png", "model FLOPs (lmx.flops: steps x FLOPs per step)"),
}


def _curve(results: Results, name: str, metric: str):
    """(steps, mean elapsed_s, mean, min, max) over the finished seeds of `name` at the steps they all logged."""
    series = [{step: (value, elapsed) for step, value, elapsed in o.series(metric)} for o in results.done(name)]
    if not series:
        return None
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if not steps:
        return None
    values = np.array([[s[step][0] for step in steps] for s in series])
    elapsed = np.array([[s[step][1] for step in steps] for s in series])
    return np.array(steps, dtype=float), elapsed.mean(0), values.mean(0), values.min(0), values.max(0)


def write_plots(results: Results, out_dir: pathlib.Path) -> list[str]:
    """Writes the three figures into out_dir; returns their file names ([] when no run has the curve metric)."""
    # Figure objects drawn by the Agg canvas, without pyplot: no display needed and no global figure state, so
    # studies may report from several threads (the tests run two at once).
    from matplotlib.figure import Figure

    study, metric = results.study, results.study.curve_metric
    runs = [run for run in study.runs if run.stage == "pretrain"]
    curves = {run.name: _curve(results, run.name, metric) for run in runs}
    groups = list(dict.fromkeys(run.group for run in runs if curves[run.name] is not None))
    if not groups:
        return []
    written = []
    for axis, (filename, label) in AXES.items():
        fig = Figure(figsize=(6 * len(groups), 4.5))
        panels = fig.subplots(1, len(groups), squeeze=False)
        for panel, group in zip(panels[0], groups, strict=True):
            for run in runs:
                curve = curves[run.name]
                if run.group != group or curve is None:
                    continue
                steps, elapsed, mean, low, high = curve
                flops = results.info[run.name].flops_per_step or np.nan
                x = {"steps": steps, "time": elapsed, "flops": steps * flops}[axis]
                seeds = len(results.done(run.name))
                (line,) = panel.plot(
                    x, mean, marker="o", markersize=3, label=f"{run.name} ({seeds} seed{'s' if seeds > 1 else ''})"
                )
                if seeds > 1:
                    panel.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
            panel.set_title(group or study.name)
            panel.set_xlabel(label, fontsize=8)
            panel.set_ylabel(metric)
            panel.grid(alpha=0.3)
            panel.legend(fontsize=7)
        fig.suptitle(f"{study.name}: {metric} (mean over seeds, band: min-max)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=110)
        written.append(filename)
    return written
