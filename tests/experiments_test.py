"""experiments/: the study harness and the five studies.

- Tables and statistics on synthetic metrics.jsonl files (no training): mean ± std over seeds against numpy, the
  steps and wall time to the dense loss against numpy's interpolation, finished runs skipped.
- Every study's definition: lmx accepts every run's config, equal-compute runs spend equal FLOPs, >= 2 seeds.
- Every study's --smoke end to end through the real CLIs (lmx.train, lmx.bench, the fine-tuning configs), a few runs
  of each: results.md holds the numbers of metrics.jsonl / bench.json, the plots exist, a rerun starts nothing.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from lmx_cli import COMPILATION_CACHE, REPO, xla_flags

from experiments.harness import cli, compute, runner
from experiments.harness.records import Results, first_reach
from experiments.harness.report import write_report
from experiments.harness.study import Run, Study
from experiments.harness.tables import parse_cell

STUDIES = ("switch_vs_dense", "moe_routing", "electra_vs_mlm", "objectives", "architectures")
# Runs whose config lmx refuses today, each with the words of the refusal: the study keeps them (their stage fails
# with that line in results.md, the rest of the study runs) until lmx can do them.
KNOWN_GAPS: dict[tuple[str, str], str] = {}  # (study, run) -> the words of lmx's refusal; none today


def build(name: str) -> Study:
    return importlib.import_module(f"experiments.{name}.study").build()


def markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """'### title' -> its rows as {column: cell} (the tables report.py writes)."""
    tables, title, lines = {}, None, text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("### "):
            title = line[4:].strip()
        elif title and line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            columns = [c.strip() for c in line.strip("|").split(" | ")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(columns, [c.strip() for c in row.strip("|").split(" | ")], strict=True)))
            tables[title] = rows
            title = None
    return tables


def row(table: list[dict[str, str]], first_cell: str) -> dict[str, str]:
    return next(r for r in table if next(iter(r.values())) == first_cell)


def write_run(path: pathlib.Path, records: list[dict]) -> None:
    """A finished run as the runner leaves it: metrics.jsonl and the done marker."""
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / runner.DONE).write_text(json.dumps({"commit": "synthetic", "wall_s": 1.0}))


# Synthetic runs ----------------------------------------------------------------------------------------------------


def test_first_reach_interpolates_between_evaluations():
    points = [(10, 5.0, 100.0), (20, 4.0, 200.0), (30, 3.0, 300.0)]
    assert first_reach(points, 3.5) == (25.0, 250.0)  # halfway between the evaluations at 20 and 30
    assert first_reach(points, 4.0) == (20.0, 200.0)
    assert first_reach(points, 6.0) == (10.0, 100.0)  # already below at the first evaluation
    assert first_reach(points, 2.0) is None


def test_mean_and_std_over_seeds_match_numpy_and_finished_runs_are_skipped(tmp_path, matplotlib):
    study = Study("synthetic", "?", (Run("tiny", "configs/t5_tiny.py", {"train.steps": 40}),), seeds=(0, 1, 2))
    rng = np.random.default_rng(0)
    finals = {"train/loss": [], "eval/loss": [], "train/seconds_per_step": []}
    for seed in study.seeds:
        train = [{"step": s, "elapsed_s": s * 0.2, "train/loss": rng.uniform(3, 5)} for s in (10, 20, 30, 40)]
        for record in train[1:]:  # lmx logs no rate at the first log step
            record["train/seconds_per_step"] = rng.uniform(0.1, 0.3)
        evals = [{"step": s, "elapsed_s": s * 0.2 + 0.05, "eval/loss": rng.uniform(3, 5)} for s in (20, 40)]
        finals["train/loss"].append(train[-1]["train/loss"])
        finals["eval/loss"].append(evals[-1]["eval/loss"])
        finals["train/seconds_per_step"].append(np.median([r["train/seconds_per_step"] for r in train[1:]]))
        records = sorted(train + evals, key=lambda r: (r["step"], "eval/loss" in r))
        write_run(runner.workdir(tmp_path / "runs", study, study.runs[0], seed), records)

    counts = runner.execute(study, tmp_path / "runs", log=lambda line: None)
    assert counts == {"ran": 0, "skipped": 3, "failed": 0, "waiting": 0}

    path = write_report(Results(study, tmp_path / "runs"), tmp_path, "synthetic")
    tiny = row(markdown_tables(path.read_text())["Pretraining runs"], "tiny")
    assert tiny["seeds done"] == "3/3"
    columns = {"final train/loss": "train/loss", "final eval/loss": "eval/loss"}
    columns["s/step (median)"] = "train/seconds_per_step"
    for column, metric in columns.items():
        mean, std = parse_cell(tiny[column])
        assert mean == pytest.approx(np.mean(finals[metric]), abs=5e-4), column
        assert std == pytest.approx(np.std(finals[metric], ddof=1), abs=5e-4), column
    for name in ("loss_vs_steps.png", "loss_vs_time.png", "loss_vs_flops.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_steps_and_wall_time_to_the_dense_loss(tmp_path):
    from experiments.switch_vs_dense import study as switch

    study = switch.build().only(["t5_dense", "t5_switch2"]).with_seeds([0, 1])
    steps = np.arange(25, 301, 25)
    expected_steps, expected_wall = [], []
    for seed in study.seeds:
        dense = 6.0 - 2.0 * steps / 300 + 0.1 * seed  # falls to 4.0 + 0.1 seed
        sparse = 6.0 - 2.6 * np.sqrt(steps / 300) + 0.05 * seed  # falls faster
        elapsed = steps * 0.4 + 20.0 + 3 * seed
        for name, curve in (("t5_dense", dense), ("t5_switch2", sparse)):
            records = [
                {"step": int(s), "elapsed_s": float(e), switch.METRIC: float(v)}
                for s, e, v in zip(steps, elapsed, curve, strict=True)
            ]
            write_run(runner.workdir(tmp_path, study, study.run(name), seed), records)
        # numpy's own interpolation on the falling curve (reversed to rising for np.interp)
        at = float(np.interp(dense[-1], sparse[::-1], steps[::-1]))
        expected_steps.append(at)
        expected_wall.append(float(np.interp(at, steps, elapsed)))
    table = switch.tables(Results(study, tmp_path))[0]
    cells = {r[0]: dict(zip(table.columns, r, strict=True)) for r in table.rows}
    sparse_row = cells["t5_switch2"]
    assert parse_cell(str(sparse_row["steps to dense loss"]))[0] == pytest.approx(np.mean(expected_steps), abs=0.5)
    assert parse_cell(str(sparse_row["wall s to dense loss"]))[0] == pytest.approx(np.mean(expected_wall), abs=0.5)
    speedup = [300 / s for s in expected_steps]
    assert parse_cell(str(sparse_row["x fewer steps"]))[0] == pytest.approx(np.mean(speedup), abs=0.006)
    assert parse_cell(str(cells["t5_dense"]["x fewer steps"])) == (1.0, 0.0)


# Study definitions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STUDIES)
def test_every_run_of_every_study_is_a_config_lmx_accepts(name):
    study = build(name)
    assert study.name == name and len(study.seeds) >= 2
    finetune_configs_exist = (REPO / "configs" / "finetune_sst2.py").exists()
    for run in study.runs:
        info = compute.run_info(study, run)
        if run.stage == "finetune" and not finetune_configs_exist:
            assert "no such file" in info.error  # fails clearly until the fine-tuning configs land
            continue
        if (name, run.name) in KNOWN_GAPS and info.error:
            assert KNOWN_GAPS[(name, run.name)] in info.error
            continue
        assert not info.error, (run.name, info.error)
        if run.stage != "finetune":
            assert info.flops_per_step > 0 and info.params > 0
    smoke = study.as_smoke()
    assert smoke.seeds == study.seeds[:1]
    assert all(compute.run_info(smoke, run).steps == 2 for run in smoke.runs if run.stage == "pretrain")


@pytest.mark.parametrize("name, reference", [("switch_vs_dense", "t5_dense"), ("electra_vs_mlm", "bert")])
def test_equal_compute_runs_spend_the_reference_flops(name, reference):
    study = build(name)
    ref = compute.run_info(study, study.run(reference))
    compared = [r for r in study.runs if r.stage == "pretrain"]
    if name == "switch_vs_dense":  # each family against its own dense run
        compared = [r for r in compared if r.group == study.run(reference).group]
    assert len(compared) >= 2
    for run in compared:
        info = compute.run_info(study, run)
        # rounded to whole steps: within half a step of the reference's FLOPs
        assert abs(info.steps * info.flops_per_step - ref.steps * ref.flops_per_step) <= info.flops_per_step / 2


def test_a_from_scratch_control_gets_the_pretrain_vocabulary_but_not_its_checkpoint(tmp_path):
    study = build("electra_vs_mlm")
    control, pretrained = study.run("scratch_sst2"), study.run("bert_sst2")
    assert control.config == pretrained.config and control.after == pretrained.after == "bert"
    assert study.key(control) != study.key(pretrained)  # the control never reuses the pretrained run's folder
    (tmp_path / "checkpoints" / "407").mkdir(parents=True)
    inputs = runner.finetune_inputs(study, control, tmp_path, 0)
    assert inputs == {"data.vocab_path": runner.finetune_inputs(study, pretrained, tmp_path, 0)["data.vocab_path"]}
    assert runner.finetune_inputs(study, pretrained, tmp_path, 0)["checkpoint.init_from"].endswith("checkpoints/407")
    with pytest.raises(ValueError, match="from_scratch is for finetune runs"):
        Run("x", "configs/bert_tiny.py", from_scratch=True)


def test_training_runs_share_compiled_programs_but_benchmarks_compile():
    assert runner.child_env("pretrain")["JAX_COMPILATION_CACHE_DIR"]
    assert "JAX_COMPILATION_CACHE_DIR" not in runner.child_env("bench")  # lmx.bench reports compile time


def test_a_study_runs_from_the_repository_root():
    done = subprocess.run(
        [sys.executable, "-m", "experiments.switch_vs_dense", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0 and "--smoke" in done.stdout


# --smoke end to end ------------------------------------------------------------------------------------------------

# The runs of each study's smoke in this test (--only), all in one runs folder: identical runs of two studies run
# once (objectives' mlm and mlm_sst2 are electra_vs_mlm's bert and bert_sst2 at smoke size). Two lanes run side by
# side on the two cores; a lane's studies run in order, and no run is shared across lanes. A Switch run of
# switch_vs_dense is left out for time: moe_routing's expert_choice trains a MoE layer, the study's Switch configs
# are checked above, and its steps-to-dense-loss table on synthetic curves.
SMOKE_ONLY = {
    "switch_vs_dense": "decoder_dense",
    "architectures": "scan_dots",
    "moe_routing": "expert_choice",
    "electra_vs_mlm": "bert_sst2",
    "objectives": "mlm_sst2",
}
LANES = (("switch_vs_dense", "architectures", "moe_routing"), ("electra_vs_mlm", "objectives"))


def smoke_args(root: pathlib.Path, name: str) -> list[str]:
    return ["--smoke", f"--out={root / name}", f"--runs={root / 'runs'}", f"--only={SMOKE_ONLY[name]}"]


@pytest.fixture(scope="module")
def smoke(shared_data, matplotlib, tmp_path_factory):
    """Runs the smoke studies; returns (their folder, study name -> exit status)."""
    root = tmp_path_factory.mktemp("experiments")
    statuses = {}

    def lane(names):
        for name in names:
            statuses[name] = cli.main(
                importlib.import_module(f"experiments.{name}.study").build, smoke_args(root, name)
            )

    with pytest.MonkeyPatch.context() as env:
        env.setenv("XLA_FLAGS", xla_flags(1))  # one CPU device per run, the suite's fast-compile flags
        env.setenv("LMX_CACHE_DIR", str(root / "cache"))
        env.setenv("JAX_COMPILATION_CACHE_DIR", COMPILATION_CACHE)
        with concurrent.futures.ThreadPoolExecutor(len(LANES)) as pool:
            for future in [pool.submit(lane, names) for names in LANES]:
                future.result()
    return root, statuses


def finished(root: pathlib.Path, pattern: str) -> pathlib.Path:
    (path,) = [p for p in (root / "runs").glob(pattern) if (p / runner.DONE).exists()]
    return path


def metric_values(workdir: pathlib.Path, metric: str) -> list[float]:
    records = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return [r[metric] for r in records if metric in r]


def last(workdir: pathlib.Path, metric: str) -> float:
    return metric_values(workdir, metric)[-1]


def test_smoke_tables_hold_the_numbers_of_the_runs(smoke):
    root, statuses = smoke
    assert statuses["switch_vs_dense"] == statuses["moe_routing"] == statuses["architectures"] == 0, statuses
    for name in STUDIES:
        assert (root / name / "results.md").exists()
    for name in ("switch_vs_dense", "electra_vs_mlm", "objectives", "moe_routing"):
        for png in ("loss_vs_steps.png", "loss_vs_time.png", "loss_vs_flops.png"):
            assert (root / name / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (name, png)

    tables = markdown_tables((root / "switch_vs_dense" / "results.md").read_text())
    for run in ("decoder_dense",):
        workdir = finished(root, f"{run}-*/seed0")
        cells = row(tables["Pretraining runs"], run)
        assert cells["steps"] == "2" and cells["seeds done"] == "1/1"
        assert parse_cell(cells["final train/loss"])[0] == pytest.approx(last(workdir, "train/loss"), abs=5e-4)
        assert parse_cell(cells["final eval/cross_entropy"])[0] == pytest.approx(
            last(workdir, "eval/cross_entropy"), abs=5e-4
        )
    dense = row(tables["decoder-only: Switch vs dense at equal FLOPs"], "decoder_dense")
    assert dense["steps to dense loss"] == "2" and dense["x fewer steps"] == "1.00"

    routing = row(
        markdown_tables((root / "moe_routing" / "results.md").read_text())["Routing knobs (bert_tiny + Switch-8)"],
        "expert_choice",
    )
    drops = metric_values(finished(root, "expert_choice-*/seed0"), "train/moe_drop_fraction")
    assert parse_cell(routing["dropped tokens"])[0] == pytest.approx(np.mean(drops), abs=5e-4)

    bench = json.loads((finished(root, "scan_dots-*/seed0") / runner.BENCH).read_text())
    speed = markdown_tables((root / "architectures" / "results.md").read_text())
    cells = row(speed["Scanned vs unrolled layers and remat policies (decoder_tiny)"], "scan_dots")
    assert parse_cell(cells["step s"])[0] == pytest.approx(bench["step_time_s"], abs=5e-4)
    assert parse_cell(cells["temp MiB"])[0] == pytest.approx(bench["temp_bytes"] / 2**20, abs=0.5)


def test_smoke_fine_tuning_runs_or_fails_clearly(smoke):
    root, statuses = smoke
    bert = finished(root, "bert-*/seed0")
    assert not list((root / "runs").glob("mlm*"))  # objectives' mlm and mlm_sst2 were electra_vs_mlm's runs, reused
    for name in ("electra_vs_mlm", "objectives"):
        text = (root / name / "results.md").read_text()
        pretrain = row(markdown_tables(text)["Pretraining runs"], "bert" if name == "electra_vs_mlm" else "mlm")
        assert parse_cell(pretrain["final train/loss"])[0] == pytest.approx(last(bert, "train/loss"), abs=5e-4)
        if not (REPO / "configs" / "finetune_sst2.py").exists():  # before the fine-tuning configs land
            assert statuses[name] == 1
            assert "lmx refuses the config" in text and "finetune_sst2.py" in text and "no such file" in text
            continue
        assert statuses[name] == 0, text
        results = json.loads((finished(root, "bert_sst2-*/seed0") / "results.json").read_text())
        finetuned = row(
            markdown_tables(text)["Fine-tuning runs"], "bert_sst2" if name == "electra_vs_mlm" else "mlm_sst2"
        )
        assert parse_cell(finetuned["best (dev)"])[0] == pytest.approx(results["best"][results["metric"]], abs=5e-5)


def test_smoke_rerun_starts_nothing(smoke, capsys):
    root, _ = smoke
    markers = {p: p.stat().st_mtime for p in (root / "runs").glob(f"*/seed0/{runner.DONE}")}
    study = importlib.import_module("experiments.switch_vs_dense.study")
    assert cli.main(study.build, smoke_args(root, "switch_vs_dense")) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 1 and "'ran': 0" in out
    assert markers == {p: p.stat().st_mtime for p in (root / "runs").glob(f"*/seed0/{runner.DONE}")}
    assert os.path.exists(root / "switch_vs_dense" / "results.md")
