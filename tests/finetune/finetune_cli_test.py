"""The real CLIs on real data: `python -m lmx.train` fine-tunes a tiny BERT-shaped model from scratch on SST-2
(../shared/data/glue/sst2) and beats the majority class of the GLUE dev set by 10 points; `python -m lmx.evaluate`
scores its best checkpoint to the same figure. Bad input (an unknown task, a label outside the task's classes in a
local file, a checkpoint of another family or without a head) is one line and exit 2, checked in-process through
the functions those CLIs run, before anything compiles."""

import contextlib
import io
import json
import pathlib
import subprocess
import sys

import pytest
from finetune_tiny import VOCAB_CACHE, pretraining_params, tiny_config, write_checkpoint, write_sst2
from lmx_cli import env_for, events

from lmx import config_lib, evaluate, train

REPO = pathlib.Path(__file__).resolve().parents[2]
SST2 = f"{REPO}/configs/finetune_sst2.py"
# bert_tiny's architecture at a quarter of its width and one layer: 150 steps of 32 rows of 48 tokens, a learning
# rate for training from scratch; evaluated on the 872 dev sentences every 50 steps.
TINY = [
    "--config.model.embed_dim=32",
    "--config.model.head_dim=16",
    "--config.model.mlp_dim=128",
    "--config.model.num_encoder_layers=1",
    "--config.data.inputs_length=48",
    "--config.train.steps=150",
    "--config.train.eval_every=50",
    "--config.train.progress_bar=false",
    "--config.optim.learning_rate=3e-3",
    "--config.optim.warmup_steps=15",
]


@pytest.fixture(scope="module")
def cache():
    return pathlib.Path(VOCAB_CACHE)


@pytest.fixture(scope="module")
def finetuned(cache, shared_data, tmp_path_factory):
    """(workdir, the finished lmx.train process) of the SST-2 fine-tune."""
    workdir = tmp_path_factory.mktemp("sst2")
    args = [f"--config={SST2}:bert_tiny", f"--workdir={workdir}", *TINY, f"--config.finetune.data_dir={shared_data}"]
    done = subprocess.run(
        [sys.executable, "-m", "lmx.train", *args],
        cwd=REPO,
        env=env_for(cache, 1),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done


def _majority(shared_data) -> float:
    labels = [line.split("\t")[1] for line in (shared_data / "glue/sst2/test.tsv").read_text().splitlines()[1:]]
    return max(labels.count("0"), labels.count("1")) / len(labels)


def test_a_tiny_model_beats_the_majority_class_on_sst2(finetuned, shared_data):
    workdir, done = finetuned
    results = json.loads((workdir / "results.json").read_text())
    assert list(results) == [
        "task",
        "metric",
        "best",
        "best_step",
        "final",
        "steps",
        "epochs",
        "wall_s",
        "seed",
        "init_from",
    ]
    assert (results["task"], results["metric"], results["steps"], results["seed"]) == ("sst2", "accuracy", 150, 0)
    assert results["init_from"] is None and results["epochs"] == pytest.approx(150 * 32 / 67349)
    majority = _majority(shared_data)  # 444 of 872 positive
    assert results["best"]["accuracy"] >= majority + 0.10, (results, majority)
    evals = [e for e in events(workdir) if "eval/accuracy" in e]
    assert [e["step"] for e in evals] == [50, 100, 150]
    assert all(e["eval/examples"] == 872 and 0 < e["eval/loss"] < 1 for e in evals)
    best = max(evals, key=lambda e: e["eval/accuracy"])
    assert results["best_step"] == best["step"] and results["best"]["accuracy"] == best["eval/accuracy"]
    assert results["final"]["accuracy"] == evals[-1]["eval/accuracy"]
    assert (workdir / "checkpoints" / str(results["best_step"])).is_dir()
    assert f"Results: {workdir}/results.json (best accuracy" in done.stdout
    assert done.stderr == ""


def test_lmx_evaluate_scores_the_best_checkpoint_again(finetuned, cache, shared_data, tmp_path):
    workdir, _ = finetuned
    results = json.loads((workdir / "results.json").read_text())
    step_dir = f"{workdir}/checkpoints/{results['best_step']}"
    output = tmp_path / "scores.json"
    args = [f"--config={SST2}:bert_tiny", f"--checkpoint={step_dir}", f"--output={output}", *TINY]
    done = subprocess.run(
        [sys.executable, "-m", "lmx.evaluate", *args, f"--config.finetune.data_dir={shared_data}"],
        cwd=REPO,
        env=env_for(cache, 1),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(output.read_text())
    assert (scores["task"], scores["split"], scores["checkpoint"]) == ("sst2", "validation", step_dir)
    assert scores["metrics"]["accuracy"] == pytest.approx(results["best"]["accuracy"], abs=1e-9)
    assert scores["metrics"]["loss"] == pytest.approx(results["best"]["loss"], rel=1e-5)
    lines = done.stdout.splitlines()
    assert lines[0] == f"sst2 validation, checkpoint {step_dir}"
    assert lines[1].split() == ["metric", "value"]
    assert lines[3].split() == ["accuracy", f"{results['best']['accuracy']:.4f}"]


def _config(*args):
    return config_lib.lock(config_lib.check_overrides([f"--config={SST2}:bert_tiny", *TINY, *args]))


def _one_line(config, workdir) -> list[str]:
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        assert train.run_cli(config, str(workdir)) == 2
    assert not pathlib.Path(workdir).exists()  # nothing written
    return stderr.getvalue().splitlines()


def test_bad_input_is_one_line_and_exit_2(finetuned, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("LMX_CACHE_DIR", str(cache))  # the vocabulary the CLI run trained
    assert _one_line(_config("--config.finetune.task=sst3"), tmp_path / "w") == [
        "lmx.train: error: config.finetune.task='sst3' is unknown; choose one of ['agnews', 'cola', 'mnli', "
        "'mrpc', 'multi30k', 'qnli', 'qqp', 'rte', 'sst2', 'stsb', 'wnli']"
    ]
    assert _one_line(_config("--config.finetune.task=multi30k"), tmp_path / "w") == [
        "lmx.train: error: config.finetune.task='multi30k' is a translation task; set "
        "config.finetune.format='text_to_text'"
    ]
    data = write_sst2(tmp_path / "data", bad_label="7")
    assert _one_line(_config(f"--config.finetune.data_dir={data}"), tmp_path / "w") == [
        f"lmx.train: error: {data}/glue/sst2/train.tsv:4: label '7' is not one of the task's classes ['0', '1']; "
        "fix the file or point config.finetune.data_dir at a correct copy"
    ]
    workdir, _ = finetuned  # an encoder-only run, given to an ELECTRA fine-tune
    electra = config_lib.lock(
        config_lib.check_overrides([f"--config={SST2}:electra_tiny", f"--config.checkpoint.init_from={workdir}"])
    )
    assert _one_line(electra, tmp_path / "w") == [
        f"lmx.train: error: config.checkpoint.init_from={workdir} is a checkpoint of a 'encoder_only' model but "
        "config.model.name='electra'; use the fine-tuning config of the model it was trained as "
        "(configs/finetune_<task>.py:<that config>), or a checkpoint of this model"
    ]


def test_lmx_evaluate_refuses_a_checkpoint_without_a_head(tmp_path, capsys):
    config = tiny_config("encoder_only")
    step_dir = write_checkpoint(tmp_path / "pretrain", config, pretraining_params(config))
    assert evaluate.run_cli(config_lib.lock(config), step_dir, "validation", None) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"lmx.evaluate: error: --checkpoint={step_dir} has no classifier_head: it is not a fine-tuned classifier (a "
        "pretraining checkpoint?); evaluate WORKDIR/checkpoints/<step> of `lmx.train` with this fine-tuning config"
    ]
