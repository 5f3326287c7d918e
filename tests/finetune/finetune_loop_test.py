"""The fine-tuning loop inside lmx.train, in-process on a synthetic SST-2 copy (no ../shared/data needed), with the
real evaluation (checked once against an independent computation) and its selection metric then scripted: epochs
become steps, every evaluation is recorded and checkpointed with its selection metric, the run stops after
`patience` evaluations without improvement, the best step's checkpoint survives garbage collection, results.json
says so, and running the command again after the early stop trains nothing."""

import json

import jax
import numpy as np
import pytest
from finetune_tiny import VOCAB_CACHE, tiny_config, write_sst2

from lmx import config_lib, train
from lmx.finetune import batches, session

SCRIPT = [0.5, 0.7, 0.6, 0.65, 0.9]  # accuracy of the evaluations at steps 2, 4, 6, 8, ...


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch):
    monkeypatch.setenv("LMX_CACHE_DIR", VOCAB_CACHE)


def _config(data_dir):
    config = tiny_config("encoder_only", layers=1)
    config.model.vocab_size = 2176  # bert_tiny's WordPiece vocabulary of the embedded corpus
    config.finetune.data_dir, config.finetune.epochs, config.finetune.patience = str(data_dir), 1.5, 2
    config.train.batch_size, config.train.eval_every, config.train.log_every = 8, 2, 1
    config.train.progress_bar = False
    config.checkpoint.every_steps, config.checkpoint.keep, config.checkpoint.async_save = 3, 1, False
    return config_lib.lock(config)


def _independent_accuracy(run, params, data_dir) -> float:
    """The classifier's dev accuracy computed apart from lmx.finetune.evaluation: every dev row at once, on one
    device, against the labels read from the file."""
    rows = next(
        batches.features(run.config, run.finetune.task, run.finetune.evaluator.vocabulary, "validation")
        .batch(1000)
        .as_numpy_iterator()
    )
    del rows["labels"]
    logits = run.model.apply({"params": jax.device_get(params)}, rows)["logits"]
    labels = [int(line.split("\t")[1]) for line in (data_dir / "glue/sst2/test.tsv").read_text().splitlines()[1:]]
    return float(np.mean(np.argmax(logits, axis=-1) == np.array(labels)))


def test_early_stopping_keeps_the_best_checkpoint_and_writes_results(tmp_path, monkeypatch):
    calls = []
    real_evaluate = session.FineTuning.evaluate

    def scripted(self, params):
        """The real evaluation (8 devices, sharded parameters), its accuracy then replaced by the script's."""
        real = real_evaluate(self, params)
        assert real["examples"] == 24 and real["loss"] > 0
        if not calls:
            assert real["accuracy"] == pytest.approx(_independent_accuracy(run, params, data_dir))
        calls.append(real)
        return {**real, "accuracy": SCRIPT[len(calls) - 1]}

    monkeypatch.setattr(session.FineTuning, "evaluate", scripted)
    data_dir = write_sst2(tmp_path / "data")  # 64 + 8 training rows, 24 validation rows
    workdir = tmp_path / "run"
    run = train.setup(_config(data_dir), str(workdir))
    assert run.config.train.steps == 14  # ceil(1.5 epochs x 72 examples / batch 8)
    train.loop(run)

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/accuracy" in r] == [2, 4, 6, 8]  # stopped after 2 without gain
    assert max(r["step"] for r in records if "train/loss" in r) == 8
    kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [4, 8]  # the best (4) besides the latest (keep=1); 2, 3 and 6 collected
    results = json.loads((workdir / "results.json").read_text())
    assert (results["task"], results["metric"], results["best_step"], results["steps"]) == ("sst2", "accuracy", 4, 8)
    assert results["best"] == {**calls[1], "accuracy": 0.7} and results["final"] == {**calls[3], "accuracy": 0.65}
    assert results["epochs"] == pytest.approx(8 * 8 / 72) and results["seed"] == 0 and results["init_from"] is None
    assert (workdir / "tensorboard").is_dir()

    # The same command again: the run stopped early, so nothing trains and nothing is evaluated.
    train.loop(train.setup(_config(data_dir), str(workdir)))
    assert len(calls) == 4
    again = json.loads((workdir / "results.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_s"} == {k: v for k, v in results.items() if k != "wall_s"}
