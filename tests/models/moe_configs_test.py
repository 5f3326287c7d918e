"""The MoE configs' sizes: configs/switch_base_{8,128}.py against the released checkpoints (Switch-Base-8 ~0.62B,
Switch-Base-128 ~7.4B parameters) by an independent count and by Hugging Face's model of the released config (on
torch's meta device: shapes only); the CPU configs' experts and their dense twins."""

import pathlib

import jax
import pytest

from lmx import config_lib, flops, step
from lmx.data import tasks
from lmx.models import build_model

REPO = pathlib.Path(__file__).resolve().parents[2]
RELEASED = {8: 0.62e9, 16: 1e9, 128: 7.4e9}  # the Switch paper / model cards' sizes


def load(name: str):
    return config_lib.load_config_file(str(REPO / "configs" / f"{name}.py"))


def lmx_count(config) -> int:
    model = build_model(config.model)
    inputs = step.init_batch(tasks.model_feature_lengths(config.data))
    shapes = jax.eval_shape(lambda key: step.init_params(key, model=model, init_batch=inputs), jax.random.key(0))
    return sum(x.size for x in jax.tree.leaves(shapes))


def switch_base_count(experts: int) -> int:
    """Switch-Base from its published dimensions: T5.1.0-Base (d_model 768, 12 + 12 layers, 12 heads of 64, ReLU MLP
    3072, vocabulary 32,128 tied to the output) with `experts` MLPs and a router in layers 1, 3, ..., 11."""
    d, inner, ff, vocab, buckets, heads = 768, 12 * 64, 3072, 32128, 32, 12
    attention, mlp = 4 * d * inner, 2 * d * ff
    sparse_mlp = experts * mlp + d * experts
    encoder = 6 * (attention + mlp + 2 * d) + 6 * (attention + sparse_mlp + 2 * d)
    decoder = 6 * (2 * attention + mlp + 3 * d) + 6 * (2 * attention + sparse_mlp + 3 * d)
    return vocab * d + encoder + decoder + 2 * buckets * heads + 2 * d


@pytest.mark.parametrize("experts", [8, 128])
def test_switch_base_has_the_released_size(experts):
    config = load(f"switch_base_{experts}")
    count = lmx_count(config)
    assert count == switch_base_count(experts) == flops.train_flops_per_step(config)["params"]
    assert abs(count - RELEASED[experts]) / RELEASED[experts] < 0.01, count
    # A token touches one expert: the active size is T5.1.0-Base's (222,903,552) plus the 12 routers.
    assert flops.train_flops_per_step(config)["active_params"] == 222_903_552 + 12 * 768 * experts


@pytest.mark.parametrize("experts", [8, 128])
def test_switch_base_matches_hugging_face_of_the_released_config(experts, torch, transformers):
    released = transformers.SwitchTransformersConfig(
        vocab_size=32128,
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_decoder_layers=12,
        num_heads=12,
        num_experts=experts,
        num_sparse_encoder_layers=6,
        num_sparse_decoder_layers=6,
        dense_act_fn="relu",
        router_bias=False,
    )
    with torch.device("meta"):  # shapes only: 7.4B parameters allocate nothing
        model = transformers.SwitchTransformersForConditionalGeneration(released)
    theirs = sum(p.numel() for p in model.parameters())  # tied weights counted once
    assert lmx_count(load(f"switch_base_{experts}")) == theirs


@pytest.mark.parametrize(
    "name, dense, twin_flags",
    [
        ("switch_tiny", "t5_1_0_tiny", {}),  # top-1: the same active FLOPs as its dense model
        ("gpt2_moe_tiny", "gpt2_tiny", {"mlp_dim": 768}),  # top-2 every other layer = 1.5 x the MLP everywhere
    ],
)
def test_cpu_moe_configs_and_their_dense_twins(name, dense, twin_flags):
    config = load(name)
    assert config.model.moe.num_experts == 8 and config.data.corpus == "embedded"
    base = load(dense)
    config.model.moe.num_experts = 0

    def without_moe(model):
        return {k: v for k, v in model.to_dict().items() if k != "moe"}

    assert without_moe(config.model) == without_moe(base.model)  # the dense model plus MoE settings, nothing else
    config.model.update(twin_flags)
    moe_flops = flops.train_flops_per_step(load(name))["total"]
    twin_flops = flops.train_flops_per_step(config)["total"]
    assert abs(moe_flops - twin_flops) / twin_flops < 0.01, (moe_flops, twin_flops)
