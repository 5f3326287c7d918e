"""Switch Transformers through the converter: Hugging Face's SwitchTransformersForConditionalGeneration (transformers
5.24, which zeroes the tokens over an expert's capacity) on a small random config whose capacity forces drops,
imported by the CLI's code path, gives the same logits (1e-5) and drops the same tokens in every MoE layer; export
writes the same tensors back; the released checkpoints' config.json fits configs/switch_base_{8,128}.py."""

import pathlib

import hf_tiny
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx import config_lib
from lmx.convert import ConversionError, families, hf, hf_config, lmx_files, tensors
from lmx.models import build_model

REPO = pathlib.Path(__file__).resolve().parents[2]
VOCAB, EMBED, HEADS, HEAD_DIM, MLP, EXPERTS = 128, 32, 4, 8, 64, 4
ENCODER_LAYERS, DECODER_LAYERS = 4, 2  # experts in encoder layers 1, 3 and decoder layer 1
ENCODER_LENGTH, DECODER_LENGTH = 10, 8
# HF's expert_capacity is slots per expert and sequence; lmx's ceil(factor x length / experts) gives the same 2 slots
# for both lengths with factor 0.75 (ceil(1.875) = ceil(1.5) = 2). 4 experts x 2 slots < 10 encoder tokens: drops.
CAPACITY, FACTOR = 2, 0.75


def lmx_config(*, scan_layers: bool):
    flags = dict(
        vocab_size=VOCAB,
        embed_dim=EMBED,
        num_heads=HEADS,
        head_dim=HEAD_DIM,
        mlp_dim=MLP,
        num_encoder_layers=ENCODER_LAYERS,
        num_decoder_layers=DECODER_LAYERS,
        dropout_rate=0.0,
        dtype="float32",
        scan_layers=scan_layers,
        remat_policy="none",
    )
    moe = dict(num_experts=EXPERTS, capacity_factor_eval=FACTOR, min_capacity=1)
    return config_lib.check_overrides(
        [
            f"--config={REPO / 'configs' / 'switch_tiny.py'}",
            *(f"--config.model.{k}={v}" for k, v in flags.items()),
            *(f"--config.model.moe.{k}={v}" for k, v in moe.items()),
        ]
    )


def hf_model(transformers, torch):
    torch.manual_seed(0)
    config = transformers.SwitchTransformersConfig(
        vocab_size=VOCAB,
        d_model=EMBED,
        d_kv=HEAD_DIM,
        d_ff=MLP,
        num_layers=ENCODER_LAYERS,
        num_decoder_layers=DECODER_LAYERS,
        num_heads=HEADS,
        num_experts=EXPERTS,
        num_sparse_encoder_layers=ENCODER_LAYERS // 2,
        num_sparse_decoder_layers=DECODER_LAYERS // 2,
        expert_capacity=CAPACITY,
        router_bias=False,
        router_jitter_noise=0.0,
        dense_act_fn="relu",
        dropout_rate=0.0,
        tie_word_embeddings=True,  # as the released checkpoints (config.json leaves it at its default)
    )
    model = transformers.SwitchTransformersForConditionalGeneration(config)
    with torch.no_grad():
        for parameter in model.parameters():  # noise on HF's init: unit norm scales would hide a swapped tensor
            parameter.add_(0.1 * torch.randn_like(parameter))
        for name, parameter in model.named_parameters():
            if "router" in name:  # decisive routers, so that experts fill up unevenly
                parameter.mul_(30.0)
    return model.eval()


@pytest.fixture(scope="module")
def imported(tmp_path_factory, torch, transformers):
    directory = tmp_path_factory.mktemp("switch")
    model = hf_model(transformers, torch)
    model.save_pretrained(directory / "hf")
    config = lmx_config(scan_layers=False)
    done = hf.import_checkpoint(str(directory / "hf"), config, str(directory / "lmx"))
    assert done.family == "switch_transformers" and done.initialised == []
    return model, config, lmx_files.read_params(done.step_dir, config.model), directory


def batch():
    encoder = hf_tiny.padded_rows([10, 7], ENCODER_LENGTH)  # padding last: it never takes a real token's slot
    decoder = hf_tiny.padded_rows([8, 6], DECODER_LENGTH, seed=2)
    return encoder, np.concatenate([np.zeros((2, 1), int), decoder[:, :-1]], 1)


def hf_forward(model, torch):
    """HF's logits and, per MoE layer (lmx's name), the tokens its router left without an expert."""
    from transformers.models.switch_transformers import modeling_switch_transformers as hf_switch

    dropped, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, hf_switch.SwitchTransformersTop1Router):
            stack, _, layer = name.split(".")[:3]  # encoder.block.<i>.layer.<j>.mlp.router

            def hook(module, inputs, outputs, key=f"{stack}/layers_{layer}"):
                dropped[key] = (outputs[0].sum(-1) == 0).numpy()  # the capacity-masked one-hot dispatch

            hooks.append(module.register_forward_hook(hook))
    encoder, decoder = (torch.from_numpy(a) for a in batch())
    with torch.no_grad():
        logits = model(input_ids=encoder, attention_mask=(encoder != 0).long(), decoder_input_ids=decoder).logits
    for h in hooks:
        h.remove()
    return logits.numpy(), dropped


def lmx_forward(config, params):
    encoder, decoder = batch()
    features = {"encoder_input_tokens": jnp.asarray(encoder), "decoder_input_tokens": jnp.asarray(decoder)}
    outputs, state = build_model(config.model).apply({"params": params}, features, mutable=["intermediates"])
    dropped = {
        f"{stack}/{layer}": np.asarray(module["mlp"]["dropped"][0])
        for stack in ("encoder", "decoder")
        for layer, module in state["intermediates"][stack].items()
        if "mlp" in module
    }
    return np.asarray(outputs["logits"]), dropped


def test_logits_and_dropped_tokens_match_hugging_face(imported, torch):
    model, config, params, _ = imported
    theirs, their_dropped = hf_forward(model, torch)
    ours, our_dropped = lmx_forward(config, params)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-5
    assert set(our_dropped) == set(their_dropped) == {"encoder/layers_1", "encoder/layers_3", "decoder/layers_1"}
    # Encoder padding queries attend differently in the two models (never seen by real tokens), so their routing
    # may differ; being last in every row they cannot take a real token's slot. Decoder padding is causal-only in both.
    real = batch()[0] != 0
    for layer, dropped in their_dropped.items():
        where = real if layer.startswith("encoder") else np.ones(dropped.shape, bool)
        np.testing.assert_array_equal(our_dropped[layer][where], dropped[where], err_msg=layer)
    assert their_dropped["encoder/layers_1"][0].sum() >= 2  # 10 tokens, 4 experts x 2 slots
    # The drops matter: with room for every token the logits change.
    roomy = lmx_config(scan_layers=False)
    roomy.model.moe.capacity_factor_eval = 4.0
    assert np.abs(lmx_forward(roomy, params)[0] - theirs).max() / np.abs(theirs).max() > 1e-3


def test_scanned_import_and_export_round_trip(imported, torch):
    model, config, unrolled, directory = imported
    scanned_config = lmx_config(scan_layers=True)
    done = hf.import_checkpoint(str(directory / "hf"), scanned_config, str(directory / "scanned"))
    scanned = lmx_files.read_params(done.step_dir, scanned_config.model)
    assert "sub_1" in scanned["encoder"]["layers"]  # dense and sparse blocks scanned as one period
    family = families.FAMILIES["switch_transformers"]
    assert families.of_lmx_config(scanned_config.model) is family  # an lmx MoE config exports as Switch, not T5
    state = tensors.to_hf(scanned, scanned_config.model, family)
    theirs = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(state) == set(theirs) - set(family.tensors.tied)  # save_pretrained's tensors (tied twins left out)
    for name, value in state.items():
        np.testing.assert_array_equal(value, theirs[name], err_msg=name)
    written = hf_config.to_hf(family.config, scanned_config.model)
    assert (written["num_sparse_encoder_layers"], written["num_sparse_decoder_layers"]) == (2, 1)


# google/switch-base-8's config.json as published (the architecture keys; num_experts 128 for switch-base-128).
RELEASED = {
    "architectures": ["SwitchTransformersForConditionalGeneration"],
    "model_type": "switch_transformers",
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 3072,
    "num_heads": 12,
    "num_layers": 12,
    "num_decoder_layers": 12,
    "num_sparse_encoder_layers": 6,
    "num_sparse_decoder_layers": 6,
    "encoder_sparse_step": 2,
    "decoder_sparse_step": 2,
    "num_experts": 8,
    "num_selected_experts": 1,
    "expert_capacity": 64,
    "dense_act_fn": "relu",
    "feed_forward_proj": "relu",
    "is_gated_act": False,
    "router_bias": False,
    "router_dtype": "float32",
    "router_jitter_noise": 0.01,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.1,
    "is_encoder_decoder": True,
}


@pytest.mark.parametrize("experts", [8, 128])
def test_released_config_json_fits_the_switch_base_configs(experts):
    config = config_lib.load_config_file(str(REPO / "configs" / f"switch_base_{experts}.py"))
    released = {**RELEASED, "num_experts": experts}
    family, architecture = families.of_hf_config(released)
    assert (family.model_type, architecture) == ("switch_transformers", "SwitchTransformersForConditionalGeneration")
    hf_config.check(family.config, released, config.model)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"num_sparse_encoder_layers": 3}, r"num_sparse_encoder_layers=3 of 12 layers"),  # HF: experts in 1, 5, 9
        ({"router_bias": True}, "router_bias"),
        ({"num_experts": 16}, r"config.model.moe.num_experts=8"),
        ({"tie_word_embeddings": False}, "tie_embeddings"),
    ],
)
def test_switch_config_json_that_does_not_fit_is_refused(change, match):
    config = config_lib.load_config_file(str(REPO / "configs" / "switch_base_8.py"))
    with pytest.raises(ConversionError, match=match):
        hf_config.check(families.FAMILIES["switch_transformers"].config, {**RELEASED, **change}, config.model)


def test_missing_expert_is_named():
    config = lmx_config(scan_layers=False)
    family = families.FAMILIES["switch_transformers"]
    abstract = tensors.init_params(config.model, jax.random.key(0), abstract=True)
    state = tensors.to_hf(jax.tree.map(lambda s: np.zeros(s.shape, np.float32), abstract), config.model, family)
    del state["encoder.block.3.layer.1.mlp.experts.expert_2.wo.weight"]
    with pytest.raises(ConversionError, match=r"no tensor encoder\.block\.3\.layer\.1\.mlp\.experts\.expert_2\.wo"):
        tensors.to_lmx(state, config.model, family, family.export_architecture, jax.random.key(0))
