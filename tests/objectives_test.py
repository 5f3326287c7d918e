"""The objective catalog, one field (config.data.objective) selecting each: the two tables agree, every objective
trains in-process from its real seqio pipeline with falling loss, the sentence-pair head's loss, the prefix LM's
bidirectional prefix reaching the decoder, and bad input refused in one line before anything is written."""

import contextlib
import io
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import config_lib, objectives, sharding, train
from lmx.data import tasks
from lmx.models import MODELS


@pytest.fixture(autouse=True, scope="module")
def cache_dir(tmp_path_factory):
    """One vocabulary cache for the module (the embedded corpus's 1,000-piece vocabulary is trained once)."""
    path = tmp_path_factory.mktemp("lmx_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMX_CACHE_DIR", str(path))
        yield path


def test_the_two_tables_describe_the_same_objectives():
    assert set(objectives.OBJECTIVES) == set(tasks.DATA_OBJECTIVES)
    assert {"span_corruption", "prefix_lm", "lm", "decoder_prefix_lm", "mlm", "mlm_nsp", "mlm_sop", "rtd"} <= set(
        objectives.OBJECTIVES
    )
    for name, objective in objectives.OBJECTIVES.items():
        assert objective.families and set(objective.families) <= set(MODELS), name


@pytest.mark.parametrize(
    "objective, family, fits",
    [
        ("rtd", "encoder_only", "['mlm', 'mlm_nsp', 'mlm_sop']"),
        ("prefix_lm", "decoder_only", "['decoder_prefix_lm', 'lm']"),
        ("decoder_prefix_lm", "encoder_decoder", "['prefix_lm', 'span_corruption']"),
        ("mlm_nsp", "electra", "['rtd']"),
    ],
)
def test_an_objective_of_another_family_is_refused_naming_what_fits(objective, family, fits):
    with pytest.raises(ValueError, match=re.escape(f"objectives for {family!r}: {fits}")):
        objectives.check(objective, family)


# ---------------------------------------------------------------------------------------------------------------
# Every objective trains from its real pipeline


def _config(objective: str) -> config_lib.ml_collections.ConfigDict:
    """A tiny model of the objective's family on the embedded corpus: 1,000 pieces, 32-token rows, batch 8."""
    config = config_lib.base_config()
    family = objectives.OBJECTIVES[objective].families[0]
    m = config.model
    m.update(name=family, vocab_size=1152, embed_dim=32, num_heads=2, head_dim=16, mlp_dim=64, dtype="float32")
    m.scan_layers, m.remat_policy = False, "none"
    if family == "encoder_decoder":
        m.num_encoder_layers = m.num_decoder_layers = 1
    elif family == "decoder_only":
        m.update(num_encoder_layers=0, num_decoder_layers=2, norm="layer", position_embedding="learned")
    else:  # BERT-style encoders
        m.update(num_encoder_layers=2, num_decoder_layers=0, norm="layer", norm_position="post", use_bias=True)
        m.update(position_embedding="learned", type_vocab_size=2, mlp_activations=("gelu",), tie_embeddings=True)
        m.update(init="normal", scale_attention_logits=True)
    m.max_length = 64
    d = config.data
    d.objective, d.corpus, d.vocab_pieces, d.shuffle_buffer = objective, "embedded", 1000, 200
    d.inputs_length = d.targets_length = 32
    d.pack = objective not in ("mlm_nsp", "mlm_sop")
    t = config.train
    t.batch_size, t.steps, t.z_loss, t.eval_steps = 8, 12, 0.0, 0
    o = config.optim
    o.name, o.learning_rate, o.warmup_steps, o.decay = "adamw", 1e-2, 0, "constant"
    config.mesh.data, config.mesh.fsdp = -1, 1
    return config_lib.lock(config)


def _train(config, workdir):
    """The run's first batch and its per-step metrics, trained in this process as lmx.train does."""
    run = train.setup(config, str(workdir))
    history, first = [], None
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
        state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(run.init_key)
        step = train.jit_train_step(run)
        for _ in range(config.train.steps):
            host = next(run.train_iter)
            first = host if first is None else first
            state, metrics = step(state, sharding.global_batch_from_host(host, run.batch_sharding), run.dropout_key)
            history.append(jax.device_get(metrics))
    return run, state, first, history


def _falls(history, key="loss"):
    values = [float(m[key]) for m in history]
    assert all(np.isfinite(values)), values
    return np.mean(values[-3:]) < np.mean(values[:3]), values


@pytest.mark.parametrize("objective", ["span_corruption", "prefix_lm", "lm", "decoder_prefix_lm", "mlm", "mlm_sop"])
def test_objective_trains_from_its_pipeline_with_falling_loss(objective, tmp_path):
    run, state, batch, history = _train(_config(objective), tmp_path)
    falls, losses = _falls(history)
    assert falls, losses
    assert float(history[0]["loss"]) == pytest.approx(np.log(1152), rel=0.25)  # from a uniform guess
    if objective == "decoder_prefix_lm":
        # The prefix is marked, and the decoder reads the mark: without it the logits change.
        prefix = batch["decoder_causal_attention"] > 0
        # Only the last prefix position (input: the prefix's EOS) bears a loss, on the first continuation token.
        loss_on_prefix = prefix & (batch["decoder_loss_weights"] > 0)
        assert prefix.sum() > 0 and loss_on_prefix.any() and not (loss_on_prefix[:, :-1] & prefix[:, 1:]).any()
        apply = jax.jit(lambda p, b: run.model.apply({"params": p}, b)["logits"])
        unmarked = {k: v for k, v in batch.items() if k != "decoder_causal_attention"}
        assert not np.allclose(apply(state.params, batch), apply(state.params, unmarked))
    if objective == "mlm_sop":
        assert set(np.unique(batch["pair_label"])) == {0, 1} and batch["pair_label"].shape == (8, 1)
        assert "pair_cross_entropy" in history[0] and history[0]["rows"] == 8


def test_mlm_nsp_trains_both_heads(tmp_path):
    _, _, batch, history = _train(_config("mlm_nsp"), tmp_path)
    assert _falls(history)[0] and _falls(history, "cross_entropy")[0]
    assert batch["encoder_token_types"].max() == 1  # segment B
    np.testing.assert_allclose(
        [m["loss"] for m in history], [m["cross_entropy"] + m["pair_cross_entropy"] for m in history], rtol=1e-5
    )


def test_rtd_trains_generator_and_discriminator(tmp_path):
    config = _config("rtd")
    _, _, batch, history = _train(config, tmp_path)
    assert _falls(history)[0] and _falls(history, "discriminator_loss")[0]
    first, last = history[0], history[-1]
    # 50 x the discriminator's binary cross-entropy (from ln 2) + the generator's MLM loss (from ln V).
    assert float(first["discriminator_loss"]) == pytest.approx(np.log(2), rel=0.1)
    np.testing.assert_allclose(
        last["loss"], last["generator_cross_entropy"] + 50 * last["discriminator_loss"], rtol=1e-5
    )
    masked = batch["encoder_loss_weights"].sum() / (batch["encoder_input_tokens"] != 0).sum()
    assert float(last["replaced_fraction"]) <= masked + 1e-6  # only masked tokens are ever replaced
    assert last["tokens"] == (batch["encoder_input_tokens"] != 0).sum()


# ---------------------------------------------------------------------------------------------------------------
# The sentence-pair head's loss


def test_pair_terms_are_bert_sum_of_means():
    rng = np.random.default_rng(0)
    rows, length, vocab = 4, 8, 16
    weights = (rng.random((rows, length)) < 0.3).astype(np.float32)
    weights[:, 1] = 1
    batch = {
        "encoder_target_tokens": rng.integers(5, vocab, (rows, length)).astype(np.int32),
        "encoder_loss_weights": weights,
        "pair_label": np.array([[0], [1], [1], [0]], np.int32),
    }
    outputs = {
        "logits": jnp.asarray(rng.normal(size=(rows, length, vocab)), jnp.float32),
        "pair_logits": jnp.asarray(rng.normal(size=(rows, 2)), jnp.float32),
    }
    config = config_lib.base_config()
    config.train.z_loss = 0.0
    objective = objectives.OBJECTIVES["mlm_sop"]
    denominators = objective.denominators(batch)
    means = {n: v / denominators[d] for n, (v, d) in objective.terms(outputs, batch, config.train).items()}
    loss = objectives.training_loss(means, objective.coefficients(config.train))

    def log_softmax(x):
        x = np.asarray(x, np.float64)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    token_xent = -np.take_along_axis(log_softmax(outputs["logits"]), batch["encoder_target_tokens"][..., None], -1)
    mlm = (token_xent[..., 0] * weights).sum() / weights.sum()
    labels = batch["pair_label"][:, 0]
    pair = -log_softmax(outputs["pair_logits"])[np.arange(rows), labels].mean()
    assert denominators["rows"] == rows and denominators["target_tokens"] == weights.sum()
    np.testing.assert_allclose(means["pair_cross_entropy"], pair, rtol=1e-6)
    np.testing.assert_allclose(means["pair_accuracy"], np.mean(np.argmax(outputs["pair_logits"], -1) == labels))
    np.testing.assert_allclose(loss, mlm + pair, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.objective": "rtd"}, r"config.data.objective='rtd' trains \['electra'\], not config.model.name="),
        ({"data.objective": "prefix_lm"}, r"objectives for 'encoder_only': \['mlm', 'mlm_nsp', 'mlm_sop'\]"),
        ({"data.noise_density": 1.0}, r"config.data.noise_density=1.0 is out of range; it must be a float in \(0, 1\)"),
        ({"data.mask_rate": 0.0}, r"config.data.mask_rate=0.0 is out of range"),
        ({"data.mixture": (("embedded", 1.0), ("nowhere", 1.0))}, r"config.data.mixture=.* names unknown 'nowhere'"),
        ({"data.mixture": (("embedded", 0.0),)}, r"gives 'embedded' the rate 0.0; rates must be positive"),
        ({"data.objective": "mlm_nsp", "data.pack": True}, r"never packed.*set data.pack=False"),
        ({"model.generator_size_fraction": 0.5}, r"generator_size_fraction=0.5 is an option of \['electra'\]"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(changes, message, tmp_path, capsys):
    config = _config("mlm")
    for path, value in changes.items():
        section, field = path.split(".")
        config[section][field] = value
    workdir = tmp_path / "run"
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        status = train.run_cli(config, str(workdir))
    lines = stderr.getvalue().splitlines()
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("lmx.train: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not workdir.exists()


def test_a_generator_larger_than_the_discriminator_is_refused(tmp_path):
    config = _config("rtd")
    config.model.generator_size_fraction = 2.0
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        assert train.run_cli(config, str(tmp_path / "run")) == 2
    (line,) = stderr.getvalue().splitlines()
    assert "config.model.generator_size_fraction=2.0 is out of range; it must be a float in (0, 1]" in line
