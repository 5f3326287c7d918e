"""End to end: the real CLI trains t5_tiny on real text with falling loss, evaluates, checkpoints, and a second
invocation resumes where the first stopped. Bad input stops before compiling, with one line and exit status 2,
leaving the workdir as it was."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from lmx_cli import checkpoint_params, run

from lmx import config_lib, train

REPO = pathlib.Path(__file__).resolve().parent.parent


def _cli(args, cache_dir, devices=1):
    return run(args, cache_dir=cache_dir, devices=devices, timeout=900)


def _snapshot(path: pathlib.Path):
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """Two invocations of the CLI on Gutenberg text: 40 steps, then the same command extended to 60 steps."""
    workdir = tmp_path_factory.mktemp("workdir")
    cache = tmp_path_factory.mktemp("cache")
    common = [
        f"--workdir={workdir}",
        "--config.data.corpus=text_files",
        f"--config.data.text_files={shared_data}/pretrain/gutenberg/c*.txt",
        "--config.data.vocab_pieces=1000",
        "--config.model.vocab_size=1152",
        "--config.train.batch_size=16",
        "--config.train.log_every=10",
        "--config.train.eval_every=20",
        "--config.train.eval_steps=2",
        "--config.train.progress_bar=false",
        "--config.optim.warmup_steps=5",
        "--config.optim.learning_rate=0.005",
        "--config.optim.decay=constant",  # the second invocation extends steps: keep the schedule unchanged
        "--config.checkpoint.every_steps=20",
    ]
    first = _cli([*common, "--config.train.steps=40"], cache)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _cli([*common, "--config.train.steps=60"], cache)
    assert second.returncode == 0, second.stderr[-3000:]
    events = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return workdir, cache, first, second, events, common


def test_loss_falls_and_run_evaluates(trained):
    _, _, first, _, events, _ = trained
    train_losses = [e["train/loss"] for e in events if "train/loss" in e]
    # From ln(vocab) ~ 7 at step 1 to the unigram plateau and below.
    assert train_losses[0] > 6.5 and train_losses[-1] < train_losses[0] - 1.5, train_losses
    evals = [e for e in events if "eval/loss" in e]
    assert [e["step"] for e in evals] == [20, 40, 60]
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    for key in ("eval/accuracy", "eval/perplexity", "train/learning_rate", "train/tokens_per_s", "train/target_tokens"):
        assert any(key in e for e in events), key
    assert "parameters" in first.stdout
    # Every record has its wall-clock time and the run's elapsed seconds, which go on across the two invocations.
    assert all(e["time"] > 1e9 for e in events)
    assert [e["elapsed_s"] for e in events] == sorted(e["elapsed_s"] for e in events)


def test_output_is_quiet_and_says_what_was_done(trained):
    workdir, _, first, second, events, _ = trained
    assert first.stderr == second.stderr == ""  # no start-up chatter of TensorFlow, seqio, absl or orbax
    for step in (20, 40):
        assert f"Checkpoint of step {step}: {workdir}/checkpoints/{step}" in first.stdout
    last_train = [e for e in events if "train/loss" in e][-1]
    last_eval = [e for e in events if "eval/loss" in e][-1]
    assert (
        "Done: steps 40 -> 60 in " in second.stdout
        and f"train loss {last_train['train/loss']:.4g}; eval loss {last_eval['eval/loss']:.4g}; "
        f"checkpoint {workdir}/checkpoints/60"
        in second.stdout
    )


def test_second_invocation_resumes(trained):
    workdir, _, _, second, events, _ = trained
    assert f"Resumed from {workdir}/checkpoints/40" in second.stdout
    steps = [e["step"] for e in events if "train/loss" in e]
    assert steps == [1, 10, 20, 30, 40, 50, 60]  # nothing repeated, nothing skipped
    assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "40", "60"]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["train"]["steps"] == 60


def test_checkpoint_of_another_model_is_refused(trained):
    workdir, cache, _, _, _, common = trained
    before = _snapshot(workdir)
    result = _cli([*common, "--config.train.steps=80", "--config.model.embed_dim=64"], cache)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "different model" in error and "embed_dim" in error and "--workdir" in error
    assert _snapshot(workdir) == before


def _tiny(tmp_path, **overrides):
    config = config_lib.load_config_file(str(REPO / "configs/t5_tiny.py"))
    for path, value in overrides.items():
        node = config
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"mesh.data": 3, "mesh.fsdp": 1}, r"config.mesh=.*has 3 devices but 8 are available"),
        ({"train.batch_size": 12}, r"batch_size=12 is not divisible by the data-parallel size 8"),
        ({"data.corpus": "text_files", "data.text_files": "/nonexistent/*.txt"}, r"/nonexistent/\*.txt"),
        ({"data.vocab_path": "/nonexistent/spm.model"}, r"/nonexistent/spm.model"),
        ({"data.objective": "mlm"}, r"objective='mlm'"),
        ({"data.inputs_length": 8192}, r"max_length"),
        (
            {"model.vocab_size": 1024},
            r"vocabulary has 2100 ids .* config.model.vocab_size=1024; set vocab_size >= 2100",
        ),
        ({"data.corpus": "text_files", "data.text_files": "{tmp}/empty/*.txt"}, r"empty"),
        ({"checkpoint.init_from": "/nonexistent/checkpoints/100"}, r"init_from='/nonexistent/checkpoints/100'"),
        ({"train.microbatches": 3}, r"microbatches=3"),
        ({"optim.decay": "exponential"}, r"decay='exponential' is unknown; choose one of"),
        ({"model.name": "mixture_of_wizards"}, r"mixture_of_wizards"),
    ],
)
def test_bad_input_stops_before_writing(tmp_path, monkeypatch, overrides, match):
    monkeypatch.setenv("LMX_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
    workdir = tmp_path / "w"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train.setup(_tiny(tmp_path, **overrides), str(workdir))
    assert not workdir.exists()


def test_corrupt_checkpoint_is_refused_and_kept(trained, tmp_path):
    workdir, cache, _, _, _, common = trained
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    for path in (copy / "checkpoints" / "60" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":  # OCDBT data files
            path.write_bytes(b"garbage")
    before = _snapshot(copy)
    args = [a.replace(str(workdir), str(copy)) for a in common]
    result = _cli([*args, "--config.train.steps=80"], cache)
    assert result.returncode == 2, result.stderr[-2000:]
    # orbax had started reading the damaged files: the process ends right after the line, before tensorstore's
    # pending reads could print tracebacks.
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("lmx.train: error: ")
    assert "checkpoints/60 is unreadable" in errors[0] and "previous checkpoint (step 40)" in errors[0]
    assert _snapshot(copy) == before


def test_init_from_starts_a_new_run_from_trained_params(trained, tmp_path):
    workdir, cache, _, _, events, common = trained
    args = [a for a in common if not a.startswith("--workdir")]
    result = _cli(
        [
            f"--workdir={tmp_path}",
            *args,
            "--config.train.steps=1",
            f"--config.checkpoint.init_from={workdir}/checkpoints/60",
        ],
        cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][0]
    fresh = [e for e in events if e.get("step") == 1][0]
    assert first["step"] == 1 and first["train/loss"] < fresh["train/loss"] - 1.0  # starts from trained weights


def test_divergence_stops_without_checkpoint_or_skips(tmp_path):
    # A learning rate of 1e30 makes the first update overflow float32: a non-finite parameter norm.
    common = [
        "--config.train.steps=3",
        "--config.train.batch_size=8",
        "--config.data.inputs_length=64",
        "--config.data.targets_length=16",
        "--config.train.log_every=1",
        "--config.train.eval_steps=0",
        "--config.train.progress_bar=false",
        "--config.checkpoint.every_steps=1",
        "--config.optim.warmup_steps=0",
        "--config.optim.decay=constant",
        "--config.optim.learning_rate=1e30",
    ]
    stopped = _cli([f"--workdir={tmp_path / 'stop'}", *common], tmp_path)
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    error = stopped.stderr.strip().splitlines()[-1]
    assert error.startswith("lmx.train: error: step 1: ") and "param_norm=inf" in error
    assert not any((tmp_path / "stop" / "checkpoints").glob("[0-9]*"))

    skipped = _cli([f"--workdir={tmp_path / 'skip'}", *common, "--config.train.on_nonfinite=skip"], tmp_path)
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    events = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [e["train/nonfinite"] for e in events] == [1.0, 1.0, 1.0]
    assert all(np.isfinite(e["train/loss"]) for e in events)  # the state never took the overflowing update
    first, last = checkpoint_params(tmp_path / "skip", 1), checkpoint_params(tmp_path / "skip", 3)
    for name in first:
        np.testing.assert_array_equal(first[name], last[name], err_msg=name)
