"""The encoder-only objectives train end to end through the real `python -m lmx.train` on Gutenberg text
(../shared/data/pretrain) with falling loss: BERT's MLM + NSP and ELECTRA's replaced-token detection, one short CLI
run each (span corruption has its CLI run in tests/train_test.py; every objective, these two included, also trains
in-process from its pipeline in tests/objectives_test.py, which keeps the suite's CLI runs few). The ELECTRA run's
discriminator is then exported and read by an encoder-only config's init_from."""

import contextlib
import io

import jax
import numpy as np
import pytest
from lmx_cli import REPO, checkpoint_params, events, run, train_losses

from lmx import checkpoint, config_lib, train
from lmx.convert import electra as electra_convert

# The tiny config of each objective (tests/objectives_test.py trains the same objectives in-process).
RUNS = {
    "mlm_nsp": ("configs/bert_tiny.py", ["--config.data.objective=mlm_nsp", "--config.data.pack=false"]),
    "rtd": ("configs/electra_tiny.py", []),
}
STEPS = 30


def _common(shared_data, workdir):
    return [
        f"--workdir={workdir}",
        "--config.data.corpus=text_files",
        f"--config.data.text_files={shared_data}/pretrain/gutenberg/c*.txt",  # Carroll, Chesterton, Chaucer
        "--config.data.vocab_pieces=1000",
        "--config.data.inputs_length=64",
        "--config.data.targets_length=64",
        "--config.data.shuffle_buffer=200",
        "--config.train.batch_size=8",
        f"--config.train.steps={STEPS}",
        "--config.train.log_every=1",
        f"--config.train.eval_every={STEPS}",
        "--config.train.eval_steps=1",
        "--config.train.progress_bar=false",
        "--config.optim.warmup_steps=3",
        f"--config.checkpoint.every_steps={STEPS}",
    ]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one vocabulary per kind for all runs


@pytest.fixture(scope="module")
def runs(shared_data, cache, tmp_path_factory):
    """objective -> its workdir, trained by the CLI (lazily, once per module)."""
    done = {}

    def get(objective):
        if objective not in done:
            config, extra = RUNS[objective]
            workdir = tmp_path_factory.mktemp(objective)
            result = run([*_common(shared_data, workdir), *extra], cache_dir=cache, config=config, timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            assert result.stderr == ""
            done[objective] = workdir
        return done[objective]

    return get


@pytest.mark.parametrize("objective", list(RUNS))
def test_objective_trains_through_the_cli_with_falling_loss(runs, objective):
    workdir = runs(objective)
    losses = train_losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in range(STEPS - 4, STEPS + 1)])
    assert last < first - 0.25, losses  # nats, from ln(vocab) (+ 50 ln 2 for rtd) within a few dozen steps
    (evaluation,) = [e for e in events(workdir) if "eval/loss" in e]
    assert np.isfinite(evaluation["eval/loss"])
    train_metrics = [e for e in events(workdir) if "train/loss" in e][-1]
    expected = {
        "mlm_nsp": ("cross_entropy", "pair_cross_entropy", "pair_accuracy", "rows"),
        "rtd": (
            "generator_cross_entropy",
            "generator_accuracy",
            "discriminator_loss",
            "discriminator_accuracy",
            "discriminator_precision",
            "discriminator_recall",
            "replaced_fraction",
            "tokens",
        ),
    }[objective]
    for name in expected:
        assert f"train/{name}" in train_metrics and f"eval/{name}" in evaluation, name


def test_electra_discriminator_starts_an_encoder_only_run(runs, tmp_path):
    workdir = runs("rtd")
    step_dir = f"{workdir}/checkpoints/{STEPS}"
    out = tmp_path / "discriminator"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert (
            electra_convert.main([f"--checkpoint={step_dir}", "--config=configs/electra_tiny.py", f"--out={out}"]) == 0
        )
    assert "mlm_transform" in stdout.getvalue()  # the heads ELECTRA does not have are initialised and named
    # An encoder-only config of the same sizes checks and reads it as init_from.
    spec = f"{REPO}/configs/electra_tiny.py"
    config = config_lib.check_overrides(
        [
            f"--config={spec}",
            "--config.model.name=encoder_only",
            "--config.data.objective=mlm",
            f"--config.checkpoint.init_from={out}/checkpoints/0",
        ]
    )
    encoder_run = train.setup(config, str(tmp_path / "finetune"), with_data=False)
    params = checkpoint.restore_params(
        config.checkpoint.init_from, encoder_run.abstract_state, encoder_run.state_shardings
    )
    trained = checkpoint_params(workdir, STEPS)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    compared = 0
    for path, value in flat:
        key = jax.tree_util.keystr(path)
        if key.startswith(("['embedder']", "['encoder']")):
            np.testing.assert_array_equal(np.asarray(value), trained[f"['discriminator']{key}"])
            compared += 1
    assert compared > 10
    # Bad input: an ELECTRA checkpoint read with a config that is not the one it was trained with.
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        status = electra_convert.main(
            [
                f"--checkpoint={step_dir}",
                "--config=configs/electra_tiny.py",
                "--config.model.embed_dim=64",
                f"--out={tmp_path / 'x'}",
            ]
        )
    assert status == 2 and len(stderr.getvalue().splitlines()) == 1 and "embed_dim" in stderr.getvalue()
    assert not (tmp_path / "x").exists()
