"""lmx.flops against counts worked out by hand, and the lmx.bench CLI on a tiny config (no timing thresholds)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest
from lmx_cli import xla_flags

from lmx import bench, flops, step
from lmx.data import tasks
from lmx.models import build_model

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_flops_of_tiny_dense_config_by_hand(tiny_config):
    # vocab V=128, embed D=32, heads N=4, head_dim H=8, mlp F=64 gated (2 input kernels), 2 + 2 layers;
    # batch 2, inputs S=16, targets T=8: 32 encoder tokens and 16 decoder tokens per step.
    config = tiny_config
    config.train.batch_size = 2
    count = flops.train_flops_per_step(config)

    proj = 32 * 4 * 8  # one of q, k, v, o: D x N x H = 1,024
    mlp = 3 * 32 * 64  # wi_0, wi_1, wo: 6,144
    # Encoder: per layer q, k, v, o + MLP = 10,240 weights per encoder token; 2 layers, 32 tokens, 6 FLOPs each.
    encoder = 6 * 2 * (4 * proj + mlp) * 32
    assert encoder == 6 * 2 * 10_240 * 32 == 3_932_160
    # Decoder: self q, k, v, o + cross q, o + MLP = 12,288 per decoder token (16 of them) per layer; cross k, v
    # = 2,048 per encoder token (32 of them) per layer.
    decoder = 6 * 2 * (6 * proj + mlp) * 16 + 6 * 2 * (2 * proj) * 32
    assert decoder == 6 * 2 * 12_288 * 16 + 6 * 2 * 2_048 * 32 == 2_359_296 + 786_432
    logits = 6 * 32 * 128 * 16  # D x V per decoder token
    # Attention per layer and row: QK^T and AV are N x Q x K x H multiply-adds each, 2 FLOPs per multiply-add,
    # times 3 for forward + backward: 12 N H Q K.
    encoder_attention = 12 * 4 * 8 * 16 * 16  # 98,304
    decoder_self = 12 * 4 * 8 * 8 * 8  # 24,576 (the causal half is computed and masked)
    cross = 12 * 4 * 8 * 8 * 16  # 49,152
    attention = 2 * 2 * (encoder_attention + decoder_self + cross)  # 2 layers each, 2 rows
    assert attention == 688_128

    assert count["encoder"] == encoder
    assert count["decoder"] == decoder
    assert count["logits"] == logits
    assert count["attention"] == attention
    assert count["total"] == 8_159_232
    assert count["tokens"] == 2 * (16 + 8)

    # Parameters: embedding V D + output D V + two relative position tables 32 x N + encoder layers (4 projections,
    # MLP, 2 norms) + decoder layers (8 projections, MLP, 3 norms) + 2 final norms.
    params = 4_096 + 4_096 + 2 * 32 * 4 + 2 * (4 * proj + mlp + 2 * 32) + 2 * (8 * proj + mlp + 3 * 32) + 2 * 32
    assert params == 57_984
    assert count["params"] == count["active_params"] == params


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_param_count_matches_the_model(tiny_config, tie_embeddings):
    config = tiny_config
    config.model.tie_embeddings = tie_embeddings
    config.model.mlp_activations = ("relu",) if tie_embeddings else ("gelu", "linear")
    model = build_model(config.model)
    init_batch = step.init_batch(tasks.model_feature_lengths(config.data))
    shapes = jax.eval_shape(lambda key: step.init_params(key, model=model, init_batch=init_batch), jax.random.key(0))
    actual = sum(x.size for x in jax.tree.leaves(shapes))
    assert flops.train_flops_per_step(config)["params"] == actual


def test_flops_of_tiny_moe_config_by_hand(tiny_config):
    # The tiny config above with 4 experts, top-2, in every other layer: layer 1 of each stack (layer 0 stays dense).
    config = tiny_config
    config.train.batch_size = 2
    config.model.moe.num_experts, config.model.moe.router = 4, "top2"
    count = flops.train_flops_per_step(config)

    proj, mlp = 32 * 4 * 8, 3 * 32 * 64  # 1,024 and 6,144 as above
    router = 32 * 4  # [D, E] = 128, applied to every token of a MoE layer
    moe_active = 2 * mlp + router  # two experts per token: 12,416 (capacity slots and dispatch not counted)
    assert count["encoder"] == 6 * (2 * 4 * proj + mlp + moe_active) * 32 == 6 * 26_752 * 32
    assert count["decoder"] == 6 * (2 * 6 * proj + mlp + moe_active) * 16 + 6 * 2 * (2 * proj) * 32
    assert count["logits"] == 6 * 32 * 128 * 16 and count["attention"] == 688_128  # unchanged
    dense_params = 57_984
    # Total: each MoE layer holds 4 experts and a router instead of one MLP; active: 2 experts and the router.
    assert count["params"] == dense_params + 2 * (4 * mlp + router - mlp) == 95_104
    assert count["active_params"] == dense_params + 2 * (2 * mlp + router - mlp) == 70_528


def test_flops_of_expert_choice_by_hand(tiny_config):
    # Expert choice in an encoder-only model (BERT-like: one GELU kernel with biases): each of the E = 4 experts
    # takes C = ceil(1.25 x 16 / 4) = 5 of a row's 16 tokens, so a token passes through E C / S = 1.25 experts.
    config = tiny_config
    m = config.model
    m.name, m.num_encoder_layers, m.num_decoder_layers, m.norm, m.use_bias = "encoder_only", 2, 0, "layer", True
    m.mlp_activations, m.position_embedding, m.max_length, m.type_vocab_size = ("gelu_exact",), "learned", 16, 2
    config.data.objective = "mlm"
    config.train.batch_size = 2
    dense = flops.train_flops_per_step(config)
    m.moe.num_experts, m.moe.router, m.moe.min_capacity = 4, "expert_choice", 1
    count = flops.train_flops_per_step(config)
    mlp = 2 * 32 * 64 + 64 + 32  # wi, wo and their biases: 4,192
    # One MoE layer (layer 1): 1.25 experts and the router per token instead of one MLP, for 2 x 16 tokens.
    assert count["encoder"] - dense["encoder"] == 6 * (1.25 * mlp - mlp + 32 * 4) * 32 == 225_792
    assert count["params"] - dense["params"] == 3 * mlp + 32 * 4


@pytest.mark.parametrize("name", ["encoder_decoder", "decoder_only"])
def test_moe_param_count_matches_the_model(tiny_config, name):
    config = tiny_config
    m = config.model
    m.moe.num_experts, m.moe.moe_every = 8, 2
    if name == "decoder_only":  # experts with biases (GPT-2 style), 4 layers: experts in layers 1 and 3
        m.name, m.num_encoder_layers, m.num_decoder_layers, m.use_bias, m.norm = name, 0, 4, True, "layer"
        m.position_embedding, m.max_length = "learned", 16
        config.data.objective = "lm"
    model = build_model(config.model)
    init_batch = step.init_batch(tasks.model_feature_lengths(config.data))
    shapes = jax.eval_shape(lambda key: step.init_params(key, model=model, init_batch=init_batch), jax.random.key(0))
    assert flops.train_flops_per_step(config)["params"] == sum(x.size for x in jax.tree.leaves(shapes))


def test_unknown_model_is_named(tiny_config):
    config = tiny_config
    config.model.name = "nope"
    with pytest.raises(ValueError, match="encoder_decoder"):
        flops.train_flops_per_step(config)


def _bench(*args, devices=2, cache_dir=None):
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices)
    if cache_dir is not None:
        env["LMX_CACHE_DIR"] = str(cache_dir)
    return subprocess.run(
        [sys.executable, "-m", "lmx.bench", "--config=configs/t5_tiny.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# Small and quick: 1 + 1 layers, 4 rows of 32 + 8 tokens, a 128-wide peak matmul.
TINY = [
    "--steps=2",
    "--warmup=1",
    "--peak_size=128",
    "--config.train.batch_size=4",
    "--config.data.inputs_length=32",
    "--config.data.targets_length=8",
    "--config.model.num_encoder_layers=1",
    "--config.model.num_decoder_layers=1",
]
POSITIVE = [
    "params",
    "active_params",
    "flops_per_step",
    "compile_time_s",
    "step_time_s",
    "tokens_per_s",
    "peak_flops",
    "peak_flops_median",
    "mfu",
    "argument_bytes",
    "output_bytes",
]


def test_cli_input_mode_on_two_devices(shared_data):
    # --mode=input times the seqio pipeline, then the step on synthetic batches: one run covers both paths.
    # The T5 vocabulary from ../shared/data saves training one (the logits grow to 32,128 columns).
    result = _bench(
        *TINY,
        "--mode=input",
        "--input_seconds=1",
        f"--config.data.vocab_path={shared_data}/spm/t5_spiece.model",
        "--config.model.vocab_size=32128",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(line.startswith("mfu ") for line in lines[:-1])  # the table comes first
    for key in (*POSITIVE, "input_tokens_per_s", "input_to_step_ratio"):
        assert report[key] > 0, (key, report[key])
    assert report["temp_bytes"] >= 0 and report["peak_flops"] >= report["peak_flops_median"]
    assert (report["devices"], report["data"], report["mode"]) == (2, "synthetic", "input")
    assert report["tokens_per_step"] == 4 * (32 + 8)
    assert report["flops_per_step"] == sum(report[f"flops_{p}"] for p in ("encoder", "decoder", "logits", "attention"))


def test_bad_step_count_is_refused_before_setup(tiny_config):
    with pytest.raises(ValueError, match="--steps=0"):
        bench.benchmark(tiny_config, mode="step", steps=0, warmup=0, real=False, peak_size=128, input_seconds=0)


def test_cli_contradictory_flags_are_one_line():
    result = _bench("--real", "--synthetic", devices=1)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "contradict" in result.stderr.strip().splitlines()[-1]
